//! The `courier` command as a user runs it: a host process on the embedded broker, fed with
//! `courier publish` and `courier send` through its admin API, stopped with SIGTERM; plugins
//! deployed, rolled back and removed with `courier deploy|rollback|remove` on a host whose API
//! listens beyond loopback; and `courier inspect`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use courier_tests::*;

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
        .env("COURIER_CACHE_DIR", test_cache_dir())
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

/// A free TCP port on this machine.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn plugins_are_deployed_rolled_back_and_removed_through_the_cli_with_a_token() {
    let dir = plugins_dir("cli-deploy", &["probe"]);
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let admin = format!("http://127.0.0.1:{port}");

    // Beyond loopback, the API needs a token: without one the host does not start.
    let refused = courier(&[
        "run",
        "--admin-listen",
        &listen,
        "--plugins",
        dir.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("admin.token must be set"),
        "{}",
        text(&refused)
    );

    let mut host = Command::new(courier_bin())
        .args([
            "run",
            "--admin-listen",
            &listen,
            "--admin-token",
            "sesame",
            "--plugins",
        ])
        .arg(&dir)
        .env("COURIER_LOG", "warn")
        .env("COURIER_CACHE_DIR", test_cache_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let with_token = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--admin", &admin, "--token", "sesame"]);
        courier(&all)
    };
    let deadline = Instant::now() + PATIENCE;
    while !with_token(&["plugins"]).status.success() {
        assert!(Instant::now() < deadline, "the host's API never answered");
        std::thread::sleep(Duration::from_millis(200));
    }

    let anonymous = courier(&["plugins", "--admin", &admin]);
    assert!(!anonymous.status.success());
    assert!(text(&anonymous).contains("401"), "{}", text(&anonymous));
    let anonymous = courier(&[
        "deploy",
        "--admin",
        &admin,
        plugin_file("stamp-v1").to_str().unwrap(),
    ]);
    assert!(!anonymous.status.success());
    assert!(!dir.join("stamp.wasm").exists());

    let added = with_token(&["deploy", plugin_file("stamp-v1").to_str().unwrap()]);
    assert!(added.status.success(), "{}", text(&added));
    assert!(
        text(&added).contains("stamp 1.0.0 added"),
        "{}",
        text(&added)
    );
    assert!(dir.join("stamp.wasm").is_file());
    let swapped = with_token(&[
        "deploy",
        "--name",
        "stamp",
        plugin_file("stamp-v2").to_str().unwrap(),
    ]);
    assert!(swapped.status.success(), "{}", text(&swapped));
    assert!(
        text(&swapped).contains("stamp 1.0.0 -> 2.0.0"),
        "{}",
        text(&swapped)
    );
    let wrong = with_token(&[
        "deploy",
        "--name",
        "probe",
        plugin_file("stamp-v1").to_str().unwrap(),
    ]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("describes itself as `stamp`, not `probe`"),
        "{}",
        text(&wrong)
    );

    let listed = with_token(&["plugins"]);
    let listed = text(&listed);
    let stamp = listed
        .lines()
        .find(|l| l.starts_with("stamp "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(stamp.contains("2.0.0"), "{listed}");
    assert!(
        stamp.split_whitespace().any(|column| column == "any"),
        "an unordered plugin: {listed}"
    );
    assert!(listed.lines().any(|l| l.starts_with("probe ")), "{listed}");

    let rolled = with_token(&["rollback", "stamp"]);
    assert!(rolled.status.success(), "{}", text(&rolled));
    assert!(
        text(&rolled).contains("stamp 2.0.0 -> 1.0.0"),
        "{}",
        text(&rolled)
    );
    let json = with_token(&["plugins", "--json"]);
    let plugins: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let stamp = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "stamp")
        .unwrap();
    assert_eq!(stamp["version"], "1.0.0");
    assert_eq!(stamp["previous_version"], "2.0.0");

    let removed = with_token(&["remove", "stamp"]);
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(!dir.join("stamp.wasm").exists());
    let missing = with_token(&["rollback", "stamp"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("no plugin named `stamp`"),
        "{}",
        text(&missing)
    );

    Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status()
        .unwrap();
    assert!(host.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}
