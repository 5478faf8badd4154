//! The `courier` command as a user runs it: a host process on the embedded broker, fed with
//! `courier publish` and `courier send` through its admin API, stopped with SIGTERM; and
//! `courier inspect`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use courier_tests::*;

fn courier(args: &[&str]) -> Output {
    Command::new(courier_bin()).args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn publish_and_send_reach_a_running_host_and_sigterm_stops_it_cleanly() {
    let dir = plugins_dir("cli", &["probe"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("http://127.0.0.1:{port}");
    let summary = dir.join("summary.json");
    let mut host = Command::new(courier_bin())
        .args([
            "run",
            "--admin-listen",
            &format!("127.0.0.1:{port}"),
            "--plugins",
        ])
        .arg(&dir)
        .arg("--summary")
        .arg(&summary)
        .env("COURIER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The admin API answers once the plugins are loaded.
    let deadline = Instant::now() + PATIENCE;
    let published = loop {
        let output = courier(&[
            "publish",
            "--admin",
            &admin,
            &test_type("Ping"),
            r#"{"n": 1}"#,
        ]);
        if output.status.success() {
            break output;
        }
        assert!(
            Instant::now() < deadline,
            "the host never accepted a message: {}",
            text(&output)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text(&published).contains("\"id\""), "{}", text(&published));
    let sent = courier(&[
        "send",
        "--admin",
        &admin,
        "probe",
        &test_type("DoWork"),
        r#"{"n": 2}"#,
    ]);
    assert!(sent.status.success(), "{}", text(&sent));
    let refused = courier(&["publish", "--admin", &admin, "OrderPlaced", "{}"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("urn:message:"),
        "{}",
        text(&refused)
    );
    std::thread::sleep(Duration::from_millis(500));

    let status = Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = host.wait().unwrap();
    assert!(exit.success(), "the host exited with {exit}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(host.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains("Summary"), "{stdout}");
    let counts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(counts["by_type"][test_type("Ping")]["handled"], 1);
    assert_eq!(counts["by_type"][test_type("DoWork")]["handled"], 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_describes_a_plugin_and_explains_a_refusal() {
    let payment = plugin_file("payment");
    let shown = courier(&["inspect", payment.to_str().unwrap()]);
    assert!(shown.status.success(), "{}", text(&shown));
    let shown = text(&shown);
    assert!(shown.contains("courier:bus/plugin@0.1.0"), "{shown}");
    assert!(shown.contains("urn:message:Orders:OrderPlaced"), "{shown}");

    let json = courier(&[
        "inspect",
        "--json",
        plugin_file("no-exports").to_str().unwrap(),
    ]);
    assert!(json.status.success(), "{}", text(&json));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        json["refusal"]
            .as_str()
            .unwrap()
            .contains("does not export")
    );

    let missing = courier(&["inspect", "/nonexistent/plugin.wasm"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("/nonexistent/plugin.wasm"),
        "{}",
        text(&missing)
    );
}

#[test]
fn a_bad_config_file_fails_start_up_naming_the_key() {
    let dir = plugins_dir("cli-config", &["probe"]);
    let config = dir.join("courier.toml");
    std::fs::write(&config, "[defaults]\nconcurency = 3\n").unwrap();
    let output = courier(&[
        "run",
        "--no-admin",
        "--config",
        config.to_str().unwrap(),
        "--plugins",
        dir.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let error = text(&output);
    assert!(
        error.contains("courier.toml") && error.contains("unknown field `concurency`"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
