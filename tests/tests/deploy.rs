//! The deployment files in `deploy/` agree with the host: the configuration the Kubernetes
//! ConfigMap ships is one `courier run` accepts, and every `COURIER_*` variable the image and
//! the Deployment set is one the `run` command reads. (`deploy/validate.sh`, run by CI, checks
//! the manifests against the Kubernetes schemas.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use courier_host::HostConfig;
use courier_tests::courier_bin;

fn deploy_file(path: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

/// The block under `courier.toml: |` in the ConfigMap, unindented.
fn configmap_toml(text: &str) -> String {
    let mut lines = text.lines().skip_while(|l| l.trim() != "courier.toml: |");
    lines.next().expect("the ConfigMap has a courier.toml");
    let block: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    block
        .iter()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_configmap_holds_a_configuration_the_host_accepts() {
    let (path, text) = deploy_file("kubernetes/configmap.yaml");
    let toml = configmap_toml(&text);
    assert!(toml.contains("[amqp]"), "{toml}");
    let config = HostConfig::from_toml(&toml)
        .unwrap_or_else(|e| panic!("{}: courier.toml: {e:#}", path.display()));
    assert_eq!(config.log.format, courier_host::config::LogFormat::Json);
}

#[test]
fn every_variable_the_image_and_the_deployment_set_is_read_by_courier_run() {
    let help = Command::new(courier_bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let mut checked = 0;
    for file in ["Dockerfile", "kubernetes/deployment.yaml"] {
        let (_, text) = deploy_file(file);
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("COURIER_") || word == "OTEL_EXPORTER_OTLP_ENDPOINT" {
                assert!(
                    help.contains(&format!("env: {word}")),
                    "{file} sets {word}, which `courier run` does not read"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "found only {checked} variables");
}
