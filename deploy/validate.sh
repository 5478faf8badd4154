#!/usr/bin/env bash
# Validates deploy/kubernetes/*.yaml: Kubernetes' own kinds against the schemas of the
# Kubernetes version below (kubernetes-validate, strict: unknown fields are errors), and the
# KEDA objects against the fields KEDA documents (validate_keda.py). Non-zero on any error,
# including a kind neither knows. Usage: deploy/validate.sh [manifest…]
set -euo pipefail
deploy="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$deploy")"
kubernetes_version=1.37.0
venv="$root/target/deploy-venv"

if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "kubernetes-validate==1.37.0"
fi

if [ "$#" -eq 0 ]; then
  set -- "$deploy"/kubernetes/*.yaml
fi
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
status=0
"$venv/bin/kubernetes-validate" --strict --kubernetes-version "$kubernetes_version" "$@" \
  2>&1 | tee "$report" || status=1
"$venv/bin/python" "$deploy/validate_keda.py" "$@" || status=1
# kubernetes-validate only warns about a kind it has no schema for: accept that for the KEDA
# kinds checked above, and nothing else.
if grep "Couldn't find schema" "$report" | grep -v -E "kind (ScaledObject|TriggerAuthentication) with api version keda.sh/" ; then
  echo "ERROR: a manifest has a kind no schema covers" >&2
  status=1
fi
exit "$status"
