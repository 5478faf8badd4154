//! `courier new`: a project in each language is created by the `courier` binary, built with
//! that language's toolchain as its README says, its own unit test run, and the component it
//! builds loaded into a host, where it answers `SayHello` with `Greeted`.
//!
//! The toolchains are the ones `cargo xtask test` installs for the repository's own plugins:
//! the Python build reuses `target/polyglot/venv` (componentize-py) and the JavaScript one the
//! packages of `guest-sdk/js/node_modules`, where a user's project would install its own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use courier_tests::*;
use serde_json::json;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `courier new hello-<language> --lang <language>` in a fresh directory; the project's path.
fn new_project(language: &str) -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let name = format!("hello-{language}");
    let output = Command::new(courier_bin())
        .args(["new", &name, "--lang", language, "--dir"])
        .arg(parent.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "courier new failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = parent.path().join(&name);
    assert!(dir.join("README.md").is_file());
    assert!(dir.join("sdk/wit/courier.wit").is_file());
    (parent, dir)
}

/// Runs a build or test step in the project; fails the test with its output if it fails.
fn step(dir: &Path, command: &mut Command) -> String {
    let output = command.current_dir(dir).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

/// Loads `component` (with its sidecar, if one is beside it) into a host, sends it `SayHello`
/// and expects `Greeted` back.
async fn greets(component: &Path, language: &str) {
    assert!(component.is_file(), "{} was not built", component.display());
    let host = host_with("", &[]).await;
    let plugin = host.load_plugin(component).await.unwrap();
    let name = format!("hello-{language}");
    assert_eq!(plugin.name(), name);
    let namespace = format!("Hello{}", capitalized(language));
    let greeted = format!("urn:message:{namespace}:Greeted");
    let mut tap = Tap::new(&host, "tap", &[&greeted]).await;
    send(
        &host,
        &name,
        &format!("urn:message:{namespace}:SayHello"),
        json!({"name": "Ada"}),
    )
    .await;
    assert_eq!(body_json(&tap.next().await), json!({"text": "Hello, Ada!"}));
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rust_project_builds_passes_its_test_and_greets() {
    let (_parent, dir) = new_project("rust");
    // One target directory for every run, so the SDK's dependencies are built once.
    let target = repository().join("target/scaffold");
    let cargo = || {
        let mut cargo = Command::new("cargo");
        // As a user would run it: the project's own rust-toolchain.toml chooses the toolchain.
        cargo
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        cargo
    };
    step(
        &dir,
        cargo().args(["build", "-j2", "--release", "--target", "wasm32-wasip2"]),
    );
    let tested = step(&dir, cargo().args(["test", "-j2"]));
    assert!(
        tested.contains("test tests::greets_by_name ... ok"),
        "{tested}"
    );
    // The project kept the versions of the lockfile it started with.
    let version_of = |lock: &str, package: &str| {
        let entry = format!("name = \"{package}\"\nversion = \"");
        let start = lock.find(&entry).map(|i| i + entry.len());
        start.and_then(|i| lock[i..].split('"').next().map(str::to_owned))
    };
    let ours = std::fs::read_to_string(repository().join("plugins/Cargo.lock")).unwrap();
    let its = std::fs::read_to_string(dir.join("Cargo.lock")).unwrap();
    for package in ["wit-bindgen", "serde", "rmp-serde"] {
        let version = version_of(&ours, package);
        assert!(version.is_some(), "plugins/Cargo.lock has no {package}");
        assert_eq!(version_of(&its, package), version, "{package}");
    }
    greets(
        &target.join("wasm32-wasip2/release/hello_rust.wasm"),
        "rust",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_python_project_builds_passes_its_test_and_greets() {
    let (_parent, dir) = new_project("python");
    let venv = repository().join("target/polyglot/venv");
    let script = |name: &str| {
        let mut script = Command::new(dir.join(name));
        if venv.join("bin/componentize-py").is_file() {
            script.env("COURIER_VENV", &venv);
        }
        script
    };
    step(&dir, &mut script("build.sh"));
    let tested = step(&dir, &mut script("test.sh"));
    assert!(
        tested.contains("Ran 1 test") && tested.contains("OK"),
        "{tested}"
    );
    assert!(dir.join("hello-python.toml").is_file(), "the sidecar");
    greets(&dir.join("hello-python.wasm"), "python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_javascript_project_builds_passes_its_test_and_greets() {
    let (_parent, dir) = new_project("js");
    let packages = repository().join("guest-sdk/js/node_modules");
    if packages.is_dir() {
        std::os::unix::fs::symlink(&packages, dir.join("node_modules")).unwrap();
        // What the project's package.json asks for is what is installed.
        step(&dir, Command::new("npm").args(["ls", "--depth=0"]));
    } else {
        step(
            &dir,
            Command::new("npm").args(["install", "--no-audit", "--no-fund"]),
        );
    }
    step(&dir, Command::new("npm").args(["run", "build"]));
    // `step` checks that the test run succeeded; the test's name shows in every reporter.
    let tested = step(&dir, Command::new("npm").arg("test"));
    assert!(tested.contains("greets by name"), "{tested}");
    assert!(dir.join("hello-js.toml").is_file(), "the sidecar");
    greets(&dir.join("hello-js.wasm"), "js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_c_project_builds_passes_its_test_and_greets() {
    let (_parent, dir) = new_project("c");
    step(
        &dir,
        Command::new(dir.join("build.sh")).env("COURIER", courier_bin()),
    );
    let tested = step(&dir, &mut Command::new(dir.join("test.sh")));
    assert!(tested.contains("greeting: ok"), "{tested}");
    greets(&dir.join("hello-c.wasm"), "c").await;
}

/// A name that cannot be a plugin's, a directory that exists and a language Courier has no
/// SDK for are refused, and nothing is written.
#[test]
fn bad_names_and_taken_directories_are_refused() {
    let parent = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(courier_bin())
            .args(args)
            .arg("--dir")
            .arg(parent.path())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let error = run(&["new", "Hello", "--lang", "rust"]);
    assert!(
        error.contains("`Hello` cannot name a plugin project"),
        "{error}"
    );
    let error = run(&["new", "hello", "--lang", "cobol"]);
    assert!(
        error.contains("invalid value 'cobol'") && error.contains("rust, python, js, c"),
        "{error}"
    );
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    std::fs::create_dir(parent.path().join("hello")).unwrap();
    let error = run(&["new", "hello", "--lang", "c"]);
    assert!(error.contains("already exists"), "{error}");
}

/// `courier component new` refuses what is not a core module, naming the file.
#[test]
fn component_new_names_a_file_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("not-wasm.wasm");
    std::fs::write(&module, b"not wasm").unwrap();
    let output = Command::new(courier_bin())
        .args(["component", "new"])
        .arg(&module)
        .arg("-o")
        .arg(dir.path().join("out.wasm"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("not-wasm.wasm cannot be made a Courier component"),
        "{error}"
    );
    assert!(!dir.path().join("out.wasm").exists());
}
