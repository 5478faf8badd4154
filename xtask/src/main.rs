//! `cargo xtask <task>`: the repository's build steps, so the README and CI say one command.
//!
//! - `plugins` builds every plugin and test fixture in `plugins/`: the Rust ones for
//!   `wasm32-wasip2`, the Python and JavaScript ones with their toolchains (`polyglot`), the
//!   C ones with clang (`c`).
//! - `c-bindings` regenerates the C SDK's bindings from `wit/` (`guest-sdk/c/bindings`).
//! - `demo` builds the plugins and the host, and runs the order flow on the embedded broker
//!   (`--polyglot`: with the inventory step in Python, shipping in JavaScript and notification
//!   in C).
//! - `test` builds the plugins and the `courier` binary, then runs every test of the workspace.
//! - `bench` builds the plugins, then runs the benchmark harness (`--quick` for a smoke run).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

mod c;
mod polyglot;

/// The order-flow plugins the demo deploys.
const ORDER_FLOW: [&str; 4] = ["payment", "inventory", "shipping", "notification"];

/// The steps `demo --polyglot` takes from another language: (plugin, language).
const POLYGLOT: [(&str, &str); 3] = [
    ("inventory", "python"),
    ("shipping", "js"),
    ("notification", "c"),
];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    // `cargo xtask demo -- --broker …`: the `--` only separates cargo's arguments from ours.
    let rest: Vec<String> = args.skip_while(|arg| arg == "--").collect();
    let root = workspace_root()?;
    match task.as_str() {
        "plugins" => build_plugins(&root),
        "c-bindings" => c::write_bindings(&root),
        "demo" => {
            build_plugins(&root)?;
            demo(&root, &rest)
        }
        "test" => {
            build_plugins(&root)?;
            polyglot::unit_tests(&root)?;
            // `build_plugins` has checked the C bindings against wit/ (`c::build`).
            c::unit_tests(&root)?;
            // The process-level tests run the `courier` binary itself.
            cargo(&root, &["build", "-p", "courier-host", "--bin", "courier"])?;
            cargo(
                &root,
                &[&["test", "--workspace"], &strs(&rest)[..]].concat(),
            )
        }
        "bench" => {
            build_plugins(&root)?;
            let mut bench = vec!["bench", "-p", "courier-host", "--bench", "dispatch", "--"];
            bench.extend(strs(&rest));
            cargo(&root, &bench)
        }
        _ => bail!("usage: cargo xtask <plugins | c-bindings | demo | test | bench> [args]"),
    }
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask is not inside the workspace")
}

fn cargo(dir: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Adds the `wasm32-wasip2` target to the pinned toolchain if it lacks it. rustup normally does
/// this from `rust-toolchain.toml`, but not where automatic installs are turned off
/// (`RUSTUP_AUTO_INSTALL=0`), and a missing target only shows as "can't find crate for std".
fn ensure_wasm_target(root: &Path) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root)
        .output();
    let Ok(installed) = installed else {
        return Ok(()); // No rustup: the toolchain is managed some other way.
    };
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == "wasm32-wasip2")
    {
        return Ok(());
    }
    eprintln!("adding the wasm32-wasip2 target to the pinned toolchain ...");
    let status = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .current_dir(root)
        .status()
        .context("cannot run rustup")?;
    if !status.success() {
        bail!("`rustup target add wasm32-wasip2` failed ({status})");
    }
    Ok(())
}

/// Builds `plugins/` (its own workspace) into the shared `target/`, then the Python,
/// JavaScript and C plugins.
fn build_plugins(root: &Path) -> Result<()> {
    ensure_wasm_target(root)?;
    eprintln!("building plugins for wasm32-wasip2 ...");
    let target_dir = root.join("target");
    let target_dir = target_dir.to_str().context("target path is not UTF-8")?;
    cargo(
        &root.join("plugins"),
        &[
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
            target_dir,
        ],
    )?;
    polyglot::build(root)?;
    c::build(root)
}

fn demo(root: &Path, args: &[String]) -> Result<()> {
    let polyglot = args.iter().any(|arg| arg == "--polyglot");
    let extra: Vec<String> = args
        .iter()
        .filter(|arg| *arg != "--polyglot")
        .cloned()
        .collect();
    let built = root.join("target/wasm32-wasip2/release");
    let stage = root.join("target/courier-demo");
    let plugins = stage.join("plugins");
    if plugins.exists() {
        std::fs::remove_dir_all(&plugins).context("cannot clear the demo's plugins directory")?;
    }
    std::fs::create_dir_all(&plugins).context("cannot create the demo's plugins directory")?;
    for name in ORDER_FLOW {
        let file = format!("{name}.wasm");
        let source = match POLYGLOT.iter().find(|(step, _)| *step == name) {
            Some((_, language)) if polyglot => {
                // The sidecar settings (instance reuse) travel with the component.
                let sidecar = polyglot::plugin_file(root, language, name).with_extension("toml");
                if sidecar.is_file() {
                    std::fs::copy(&sidecar, plugins.join(format!("{name}.toml")))
                        .with_context(|| format!("cannot stage {}", sidecar.display()))?;
                }
                polyglot::plugin_file(root, language, name)
            }
            _ => built.join(&file),
        };
        std::fs::copy(&source, plugins.join(&file))
            .with_context(|| format!("cannot stage {}", source.display()))?;
    }
    let summary = stage.join("summary.json");
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut run = vec![
        "run".to_owned(),
        "--quiet".to_owned(),
        "-p".to_owned(),
        "courier-host".to_owned(),
        "--".to_owned(),
        "run".to_owned(),
        "--config".to_owned(),
        path(&root.join("demo/courier.toml")),
        "--plugins".to_owned(),
        path(&plugins),
        "--seed".to_owned(),
        path(&root.join("demo/orders.jsonl")),
        "--summary".to_owned(),
        path(&summary),
        "--exit-when-idle".to_owned(),
    ];
    run.extend(extra);
    cargo(root, &strs(&run))?;
    order_flow_check(&summary)
}

/// Every order ends exactly one way: shipped, payment failed, or out of stock.
fn order_flow_check(summary: &Path) -> Result<()> {
    let text = std::fs::read_to_string(summary).context("the demo wrote no summary")?;
    let summary: serde_json::Value = serde_json::from_str(&text)?;
    let count = |short: &str, field: &str| {
        summary["by_type"][format!("urn:message:Orders:{short}")][field]
            .as_u64()
            .unwrap_or(0)
    };
    let placed = count("OrderPlaced", "published");
    let shipped = count("OrderShipped", "published");
    let payment_failed = count("PaymentFailed", "published");
    let out_of_stock = count("StockReservationFailed", "published");
    let verdict = if placed == shipped + payment_failed + out_of_stock {
        "adds up"
    } else {
        "DOES NOT ADD UP"
    };
    println!(
        "\nOrder flow: {placed} placed = {shipped} shipped + {payment_failed} payment failed + {out_of_stock} out of stock ({verdict})"
    );
    if verdict != "adds up" {
        bail!("the order flow lost or duplicated orders");
    }
    Ok(())
}
