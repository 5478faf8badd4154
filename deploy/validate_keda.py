"""Checks the KEDA objects in the given manifests against the fields KEDA documents for them.

kubernetes-validate knows the schemas of Kubernetes' own kinds only, so `ScaledObject` and
`TriggerAuthentication` (custom resources) are checked here: the fields Courier's manifests
may use, their types, the required ones, and nothing else (a misspelt key is an error).
"""

import sys

import jsonschema
import yaml

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    "additionalProperties": False,
}
RABBITMQ_METADATA = {
    "type": "object",
    "required": ["queueName", "mode", "value"],
    "properties": {
        "queueName": {"type": "string", "minLength": 1},
        "mode": {"enum": ["QueueLength", "MessageRate"]},
        "value": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
        "activationValue": {"type": "string"},
        "protocol": {"enum": ["auto", "amqp", "http"]},
        "hostFromEnv": {"type": "string"},
        "vhostName": {"type": "string"},
        "useRegex": {"type": "string"},
        "excludeUnacknowledged": {"type": "string"},
    },
    "additionalProperties": False,
}
TRIGGER = {
    "type": "object",
    "required": ["type", "metadata"],
    "properties": {
        "type": {"type": "string"},
        "name": {"type": "string"},
        "metadata": {"type": "object"},
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "useCachedMetrics": {"type": "boolean"},
        "authenticationRef": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
    "if": {"properties": {"type": {"const": "rabbitmq"}}},
    "then": {"properties": {"metadata": RABBITMQ_METADATA}},
}
COUNT = {"type": "integer", "minimum": 0}
SCHEMAS = {
    "ScaledObject": {
        "type": "object",
        "required": ["scaleTargetRef", "triggers"],
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "envSourceContainerName": {"type": "string"},
                },
                "additionalProperties": False,
            },
            "pollingInterval": COUNT,
            "cooldownPeriod": COUNT,
            "initialCooldownPeriod": COUNT,
            "idleReplicaCount": COUNT,
            "minReplicaCount": COUNT,
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "advanced": {"type": "object"},
            "fallback": {"type": "object"},
            "triggers": {"type": "array", "minItems": 1, "items": TRIGGER},
        },
        "additionalProperties": False,
    },
    "TriggerAuthentication": {
        "type": "object",
        "properties": {
            "secretTargetRef": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["parameter", "name", "key"],
                    "properties": {
                        "parameter": {"type": "string"},
                        "name": {"type": "string"},
                        "key": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
            },
            "env": {"type": "array"},
            "podIdentity": {"type": "object"},
        },
        "additionalProperties": False,
    },
}


def check(path):
    failures = 0
    with open(path, encoding="utf-8") as file:
        documents = [d for d in yaml.safe_load_all(file) if d is not None]
    for document in documents:
        kind = document.get("kind")
        if document.get("apiVersion") != "keda.sh/v1alpha1" or kind not in SCHEMAS:
            continue
        schema = {
            "type": "object",
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {
                "apiVersion": {"const": "keda.sh/v1alpha1"},
                "kind": {"const": kind},
                "metadata": METADATA,
                "spec": SCHEMAS[kind],
            },
            "additionalProperties": False,
        }
        name = document.get("metadata", {}).get("name", "?")
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(document))
        for error in errors:
            where = "/".join(str(p) for p in error.absolute_path) or "(top)"
            print(f"ERROR {path} {kind}/{name} at {where}: {error.message}")
        if errors:
            failures += 1
        else:
            print(f"INFO {path} passed for resource {kind}/{name} (KEDA fields)")
    return failures


if __name__ == "__main__":
    sys.exit(1 if sum(check(path) for path in sys.argv[1:]) else 0)
