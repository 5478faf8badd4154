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

/// The value under `key:` in the example Secret's `stringData`.
fn secret_value(key: &str) -> String {
    let (path, text) = deploy_file("kubernetes/secret.yaml");
    let prefix = format!("  {key}: ");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{} has no {key}", path.display()));
    line.trim().trim_matches('"').to_owned()
}

#[test]
fn the_configmap_holds_a_configuration_the_host_accepts_once_the_secret_completes_it() {
    let (path, text) = deploy_file("kubernetes/configmap.yaml");
    let toml = configmap_toml(&text);
    assert!(toml.contains("[amqp]"), "{toml}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("courier.toml");
    std::fs::write(&file, &toml).unwrap();

    // The file alone leaves the shared inbox's URL, which holds a password, to the Secret...
    let error = HostConfig::from_file(&file).unwrap_err();
    assert!(
        format!("{error:#}").contains("inbox.postgres_url must be set"),
        "{error:#}"
    );
    // ...and with the Secret's value, as the Deployment passes it, the host accepts it.
    let mut config = HostConfig::parse_file(&file).unwrap();
    config.inbox.postgres_url = Some(secret_value("inbox-postgres-url"));
    config
        .validate()
        .unwrap_or_else(|e| panic!("{}: courier.toml: {e:#}", path.display()));
    assert_eq!(config.log.format, courier_host::config::LogFormat::Json);
    assert_eq!(
        config.inbox.store,
        courier_host::inbox::InboxStore::Postgres
    );
}

#[test]
fn the_inbox_url_from_the_environment_completes_a_configuration_that_lacks_it() {
    let dir = tempfile::tempdir().unwrap();
    let postgres = dir.path().join("postgres.toml");
    std::fs::write(&postgres, "[inbox]\nstore = \"postgres\"\n").unwrap();
    let file = dir.path().join("file.toml");
    std::fs::write(&file, "[inbox]\nstore = \"file\"\n").unwrap();
    // `courier errors` loads the host's configuration the way `courier run` does. Against a
    // port where no broker listens, a configuration it accepts gets as far as connecting.
    let run = |config: &Path, url: Option<&str>| {
        let mut command = Command::new(courier_bin());
        command
            .args(["errors", "list", "--queue", "probe"])
            .args(["--broker", "amqp://guest:guest@127.0.0.1:1/%2f"])
            .arg("--config")
            .arg(config)
            .env_remove("COURIER_INBOX_POSTGRES_URL");
        if let Some(url) = url {
            command.env("COURIER_INBOX_POSTGRES_URL", url);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let connecting = |stderr: &str| stderr.contains("127.0.0.1:1");
    let url = "postgres://courier:secret@db:5432/courier";

    let without = run(&postgres, None);
    assert!(
        without.contains("inbox.postgres_url must be set") && without.contains("postgres.toml"),
        "{without}"
    );
    assert!(!connecting(&without), "{without}");
    let with = run(&postgres, Some(url));
    assert!(connecting(&with) && !with.contains("inbox"), "{with}");
    // A host whose inbox is a file does not take the variable (set for the fleet, say).
    let ignored = run(&file, Some(url));
    assert!(
        connecting(&ignored) && !ignored.contains("inbox"),
        "{ignored}"
    );
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
