//! `courier errors list | show | replay | purge` on the embedded broker: the real binary, run
//! against a `courier run` process whose error queue lives in its own memory, through its
//! admin API. (The same commands on RabbitMQ: `errors_cli.rs`.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use courier_tests::*;

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `courier errors …` against the host at `admin` until `done` holds for its output.
fn errors_until(admin: &str, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut all = vec!["errors"];
        all.extend(args);
        all.extend(["--admin", admin]);
        let output = courier(&all);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() && done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "`courier errors {}` never gave what was expected: {text}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write_sidecar(dir: &Path, max_message_bytes: u64) {
    let staged = dir.join(".probe.toml.tmp");
    std::fs::write(
        &staged,
        format!("max_message_bytes = {max_message_bytes}\n"),
    )
    .unwrap();
    std::fs::rename(&staged, dir.join("probe.toml")).unwrap();
}

#[test]
fn the_embedded_brokers_error_queue_is_listed_shown_purged_and_replayed_after_a_fix() {
    let dir = plugins_dir("errors-embedded", &["probe"]);
    write_sidecar(&dir, 64);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("http://127.0.0.1:{port}");
    let summary = dir.join("summary.json");
    let mut host = Command::new(courier_bin())
        .args(["run", "--admin-listen", &format!("127.0.0.1:{port}")])
        .arg("--plugins")
        .arg(&dir)
        .arg("--summary")
        .arg(&summary)
        .env("COURIER_LOG", "warn")
        .env("COURIER_CACHE_DIR", test_cache_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Three pings over probe's 64-byte limit land in probe_error.
    let ping = test_type("Ping");
    let pad = "x".repeat(100);
    for n in 1..=3 {
        let body = format!(r#"{{"n": {n}, "pad": "{pad}"}}"#);
        let deadline = Instant::now() + PATIENCE;
        while !courier(&["publish", "--admin", &admin, &ping, &body])
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "the host never took a message");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let table = errors_until(&admin, &["list", "--queue", "probe"], |text| {
        text.contains("probe_error: 3 message(s), 3 listed")
    });
    assert_eq!(table.matches("too-large").count(), 3, "{table}");

    let lines = errors_until(&admin, &["list", "--queue", "probe", "--json"], |_| true);
    let listed: Vec<serde_json::Value> = lines
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{lines}");
    let ids: Vec<String> = listed
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();

    let shown = stdout(&courier(&[
        "errors", "show", "--queue", "probe", &ids[0], "--admin", &admin,
    ]));
    assert!(shown.contains("too-large"), "{shown}");
    assert!(shown.contains("over the limit of 64 bytes"), "{shown}");

    // A queue the host does not have is named, not shown as empty.
    let mistyped = courier(&["errors", "list", "--queue", "prob", "--admin", &admin]);
    assert!(!mistyped.status.success());
    let said = String::from_utf8_lossy(&mistyped.stderr);
    assert!(
        said.contains("404") && said.contains("no queue named `prob_error`"),
        "{said}"
    );

    let purged = stdout(&courier(&[
        "errors", "purge", "--queue", "probe", &ids[0], "--yes", "--admin", &admin,
    ]));
    assert!(
        purged.contains("purged 1 of 1 message(s) from probe_error"),
        "{purged}"
    );

    // The fix: a larger limit, swapped in by the sidecar's change. Then the replay.
    let loaded_at = || {
        let listed = stdout(&courier(&["plugins", "--json", "--admin", &admin]));
        let plugins: serde_json::Value = serde_json::from_str(&listed).unwrap();
        plugins[0]["loaded_at_ms"].as_u64().unwrap()
    };
    let before = loaded_at();
    write_sidecar(&dir, 4096);
    let deadline = Instant::now() + PATIENCE;
    while loaded_at() == before {
        assert!(
            Instant::now() < deadline,
            "the sidecar change was not swapped in"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let replayed = stdout(&courier(&[
        "errors", "replay", "--queue", "probe", "--admin", &admin,
    ]));
    assert!(
        replayed.contains("replayed 2 of 2 message(s) from probe_error"),
        "{replayed}"
    );
    errors_until(&admin, &["list", "--queue", "probe"], |text| {
        text.contains("probe_error is empty")
    });

    let status = Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(host.wait().unwrap().success());
    let counts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let pings = &counts["by_type"][&ping];
    assert_eq!(pings["dead_lettered"], 3, "{counts}");
    assert_eq!(
        pings["handled"], 2,
        "the two replayed, on their first attempt: {counts}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
