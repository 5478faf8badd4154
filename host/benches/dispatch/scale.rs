//! Scale: what loading more plugins costs. For 1, 10 and 100 loaded plugins: start-up time
//! with a cold artifact cache (every plugin compiled) and a warm one (every plugin read from
//! the cache), resident memory once loaded, and the throughput of the embedded broker with the
//! same number of handler calls spread evenly over every plugin (every plugin subscribes to
//! the one tick event, so M / N ticks make M calls).
//!
//! Each figure comes from a process of its own (this benchmark binary started again with
//! `--scale-child`), so that resident memory is the memory of that many plugins and nothing
//! left over from an earlier scenario. The plugins are copies of the `fleet` fixture under
//! other names (see its source): distinct components, each with its own digest, compilation
//! and queue.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_host::engine::CodeSource;
use courier_host::envelope::MSGPACK;
use courier_host::transport::{Outbound, Route};
use courier_host::{Envelope, Host, HostConfig};
use serde::{Deserialize, Serialize};

use super::{Row, out_dir, plugin_file};

/// The `fleet` fixture's name, whose digits each copy changes.
const NAME: &[u8] = b"fleet-000";
/// The event every member of the fleet subscribes to.
const TICK: &str = "urn:message:Fleet:Tick";

/// What one child process measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildReport {
    pub plugins: usize,
    /// From the host's creation until every plugin is loaded and consuming.
    pub startup_ms: f64,
    /// How many plugins were compiled rather than read from the cache.
    pub compiled: usize,
    pub rss_loaded_mib: f64,
    /// Of which anonymous (heap, stacks) and file-backed (the compiled code, mapped).
    pub rss_anon_mib: f64,
    pub rss_file_mib: f64,
    /// Threads of the process once loaded (each lane is one).
    pub threads: usize,
    /// Handler calls per second, spread over every plugin (0 when none were made).
    pub rate: f64,
    pub rss_peak_mib: f64,
}

/// `fleet-000`'s bytes with its name changed to `fleet-<n>`.
fn fleet_member(template: &[u8], n: usize) -> Vec<u8> {
    let mut bytes = template.to_vec();
    let mut found = 0;
    let mut at = 0;
    while let Some(offset) = bytes[at..]
        .windows(NAME.len())
        .position(|window| window == NAME)
    {
        let end = at + offset + NAME.len();
        bytes[end - 3..end].copy_from_slice(format!("{n:03}").as_bytes());
        found += 1;
        at = end;
    }
    assert!(
        found > 0,
        "the fleet fixture does not name itself fleet-000: see plugins/fixtures/fleet"
    );
    bytes
}

fn memory_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    kib / 1024.0
}

/// The child: loads every plugin in `plugins` with the cache in `cache`, then makes
/// `messages` handler calls spread evenly over them, and prints its report as one JSON line.
pub fn child(plugins: &Path, cache: &Path, messages: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async {
        let mut config = HostConfig::from_toml("").unwrap();
        config.admin.enabled = false;
        config.engine.cache_dir = cache.to_owned();
        config.memory_broker.queue_capacity = messages + 1;
        let started = Instant::now();
        let host = Arc::new(Host::new(config).await.unwrap());
        let loaded = host.load_plugins_dir(plugins).await.unwrap();
        let startup_ms = started.elapsed().as_secs_f64() * 1e3;
        let count = std::fs::read_dir(plugins).unwrap().count();
        assert_eq!(loaded.len(), count, "refused: {:?}", host.refused());
        let mut names: Vec<&str> = loaded.iter().map(|plugin| plugin.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            count,
            "each copy describes itself by its own name"
        );
        let compiled = loaded
            .iter()
            .filter(|plugin| plugin.code_source() == CodeSource::Compiled)
            .count();
        let rss_loaded_mib = memory_mib("VmRSS:");
        let rss_anon_mib = memory_mib("RssAnon:");
        let rss_file_mib = memory_mib("RssFile:");
        let threads = std::fs::read_dir("/proc/self/task").unwrap().count();
        let rate = if messages == 0 {
            0.0
        } else {
            send_ticks(&host, count, messages).await
        };
        host.shutdown().await;
        ChildReport {
            plugins: count,
            startup_ms,
            compiled,
            rss_loaded_mib,
            rss_anon_mib,
            rss_file_mib,
            threads,
            rate,
            rss_peak_mib: memory_mib("VmHWM:"),
        }
    });
    println!("{}", serde_json::to_string(&report).unwrap());
}

/// Publishes `calls / plugins` ticks, each handled by every plugin; returns handler calls
/// per second.
async fn send_ticks(host: &Arc<Host>, plugins: usize, calls: usize) -> f64 {
    let body = rmp_serde::to_vec_named(&super::Ping { n: 7 }).unwrap();
    let ticks = calls / plugins;
    let started = Instant::now();
    for batch in (0..ticks).collect::<Vec<_>>().chunks(100) {
        let outbound = batch
            .iter()
            .map(|_| Outbound {
                route: Route::Publish,
                envelope: Envelope::new(TICK, MSGPACK, body.clone()),
                delay: None,
            })
            .collect();
        host.transport().dispatch(outbound).await.unwrap();
    }
    host.wait_until_idle(Duration::from_millis(1))
        .await
        .unwrap();
    let handled = host.summary().of(TICK).handled;
    assert_eq!(
        handled,
        (ticks * plugins) as u64,
        "every tick handled once by every plugin"
    );
    handled as f64 / started.elapsed().as_secs_f64()
}

fn run_child(plugins: &Path, cache: &Path, messages: usize) -> ChildReport {
    let output = Command::new(std::env::current_exe().unwrap())
        .arg("--scale-child")
        .arg(plugins)
        .arg(cache)
        .arg(messages.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the scale child failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("the scale child said {stdout:?}: {e}"))
}

/// A directory of `n` fleet members, and an empty cache directory beside it.
fn stage(work: &Path, template: &[u8], n: usize) -> (PathBuf, PathBuf) {
    let plugins = work.join(format!("plugins-{n}"));
    let cache = work.join(format!("cache-{n}"));
    for dir in [&plugins, &cache] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).unwrap();
        }
        std::fs::create_dir_all(dir).unwrap();
    }
    for i in 0..n {
        std::fs::write(
            plugins.join(format!("fleet-{i:03}.wasm")),
            fleet_member(template, i),
        )
        .unwrap();
    }
    (plugins, cache)
}

/// Runs the scale scenario and adds its rows; returns the reports (for the plot).
pub fn run(quick: bool, rows: &mut Vec<Row>) -> Vec<(ChildReport, ChildReport)> {
    let messages = if quick { 20_000 } else { 100_000 };
    let template = std::fs::read(plugin_file("fleet")).unwrap();
    let work = out_dir().join("scale");
    let mut reports = Vec::new();
    for n in [1, 10, 100] {
        eprintln!("scale: {n} plugins, cold cache then warm ...");
        let (plugins, cache) = stage(&work, &template, n);
        let cold = run_child(&plugins, &cache, 0);
        assert_eq!(cold.compiled, n, "a cold start compiles every plugin");
        let warm = run_child(&plugins, &cache, messages);
        assert_eq!(warm.compiled, 0, "a warm start compiles nothing");
        reports.push((cold, warm));
    }
    std::fs::remove_dir_all(&work).unwrap();

    let (_, one) = &reports[0];
    let scenario = |what: &str| format!("scale, {what}");
    for (cold, warm) in &reports {
        let n = warm.plugins;
        let label = format!("{n} plugin{}", if n == 1 { "" } else { "s" });
        let mut push = |what: &str, value: f64, unit: &'static str, baseline: f64| {
            rows.push(Row {
                scenario: scenario(what),
                variant: label.clone(),
                value,
                unit,
                ratio: value / baseline,
            });
        };
        push(
            "start-up, cold cache",
            cold.startup_ms,
            "ms",
            reports[0].0.startup_ms,
        );
        push(
            "start-up, warm cache",
            warm.startup_ms,
            "ms",
            one.startup_ms,
        );
        push(
            "resident memory once loaded",
            warm.rss_loaded_mib,
            "MiB",
            one.rss_loaded_mib,
        );
        push(
            "resident memory once loaded: anonymous",
            warm.rss_anon_mib,
            "MiB",
            one.rss_anon_mib,
        );
        push(
            "resident memory once loaded: file-backed",
            warm.rss_file_mib,
            "MiB",
            one.rss_file_mib,
        );
        push(
            "threads once loaded",
            warm.threads as f64,
            "",
            one.threads as f64,
        );
        push(
            "embedded broker, calls spread over all",
            warm.rate,
            "calls/s",
            one.rate,
        );
        push(
            "peak resident memory after the ticks",
            warm.rss_peak_mib,
            "MiB",
            one.rss_peak_mib,
        );
    }
    let (_, hundred) = &reports[2];
    let per_plugin = (hundred.rss_loaded_mib - one.rss_loaded_mib) / 99.0;
    rows.push(Row {
        scenario: scenario("memory per loaded plugin (100 vs 1)"),
        variant: "(rss at 100 - rss at 1) / 99".to_owned(),
        value: per_plugin * 1024.0,
        unit: "KiB",
        ratio: per_plugin / one.rss_loaded_mib,
    });
    reports
}
