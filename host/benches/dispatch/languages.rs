//! Guest languages: the conformance suite's reference plugin in Rust, Python, JavaScript and C
//! (the same handlers, see docs/conformance.md), each measured the same way, with Rust as the
//! baseline of every figure:
//! - the component's size;
//! - compiling it with an empty code cache, and loading it again from the cache, each in an
//!   engine of its own (compile, link, `describe`);
//! - the per-message cost of its `Echo` handler (decode a typed body, log a line, read the
//!   config, publish one event and send one command) on one thread, with a fresh instance per
//!   message and with one reused instance;
//! - the linear memory of an instance once it has handled one message.
//!
//! The Python, JavaScript and C components are built by `cargo xtask plugins` (which `cargo
//! xtask bench` runs) into `target/polyglot/<language>/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use courier_host::config::{EngineConfig, InstancePolicy, PluginSettings};
use courier_host::engine::CodeSource;
use courier_host::{CourierEngine, Envelope, Outcome, Plugin, PublishRequest};
use serde_json::json;

use crate::{Row, per_call, plugin_file};

/// The languages measured, Rust (the baseline) first.
const LANGUAGES: [&str; 4] = ["rust", "python", "js", "c"];

/// What was measured for one language.
struct Figures {
    size_mib: f64,
    compile: Duration,
    from_cache: Duration,
    reused: Duration,
    fresh: Duration,
    memory_mib: f64,
}

fn component(language: &str) -> PathBuf {
    if language == "rust" {
        return plugin_file("conformance");
    }
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/polyglot")
        .join(language)
        .join("conformance.wasm");
    assert!(
        file.is_file(),
        "{} is missing: run `cargo xtask bench`",
        file.display()
    );
    file
}

fn echo_message() -> Envelope {
    let body = json!({
        "text": "bench", "count": 41, "tags": ["a", "b", "c"],
        "nested": {"flag": true, "ratio": 0.75},
    });
    PublishRequest::new("urn:message:Conformance:Echo", body)
        .into_outbound("bench")
        .unwrap()
        .envelope
}

/// Loads `path` in `engine`, timing the whole load.
fn timed_load(engine: &CourierEngine, path: &Path, instance: InstancePolicy) -> (Plugin, Duration) {
    let started = Instant::now();
    let plugin = Plugin::load(engine, path, |_| {
        Ok(PluginSettings {
            instance,
            recycle_after: u64::MAX,
            ..PluginSettings::default()
        })
    })
    .unwrap();
    (plugin, started.elapsed())
}

fn measure(language: &str, quick: bool) -> Figures {
    let path = component(language);
    let size_mib = std::fs::metadata(&path).unwrap().len() as f64 / f64::from(1 << 20);
    let cache = tempfile::Builder::new()
        .prefix("courier-bench-languages-")
        .tempdir()
        .unwrap();
    let engine_config = EngineConfig {
        cache_dir: cache.path().to_owned(),
        ..EngineConfig::default()
    };
    // A cold compile, then a load from the cache it filled, each in a new engine as a host
    // starting up would have.
    let (_, compile) = timed_load(
        &CourierEngine::new(&engine_config).unwrap(),
        &path,
        InstancePolicy::Fresh,
    );
    let engine = CourierEngine::new(&engine_config).unwrap();
    let (fresh_plugin, from_cache) = timed_load(&engine, &path, InstancePolicy::Fresh);
    assert_eq!(
        fresh_plugin.code_source(),
        CodeSource::Cache,
        "{language}: the second load must come from the cache"
    );
    let (reused_plugin, _) = timed_load(&engine, &path, InstancePolicy::Reuse);

    let message = echo_message();
    let first = fresh_plugin.invoke(&message, "bench");
    assert_eq!(first.outcome, Outcome::Handled, "{language}");
    assert_eq!(first.outbox.len(), 2, "{language}: Echoed and Recorded");
    let memory_mib = first.memory_bytes as f64 / f64::from(1 << 20);
    assert_eq!(
        reused_plugin.invoke(&message, "bench").outcome,
        Outcome::Handled
    );
    // A fresh Python instance costs milliseconds: fewer calls per round than for the
    // microsecond-scale figures elsewhere.
    let (rounds, iterations) = if quick { (3, 20) } else { (5, 200) };
    let reused = per_call(rounds, iterations, || {
        std::hint::black_box(reused_plugin.invoke(&message, "bench"));
    });
    let fresh = per_call(rounds, iterations, || {
        std::hint::black_box(fresh_plugin.invoke(&message, "bench"));
    });
    Figures {
        size_mib,
        compile,
        from_cache,
        reused,
        fresh,
        memory_mib,
    }
}

/// Measures every language and adds the rows.
pub fn run(quick: bool, rows: &mut Vec<Row>) {
    let figures: Vec<(&str, Figures)> = LANGUAGES
        .iter()
        .map(|language| {
            eprintln!("languages: {language} ...");
            (*language, measure(language, quick))
        })
        .collect();
    let rust = &figures[0].1;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for (language, f) in &figures {
        let scenario = format!("language: {language} (conformance plugin)");
        for (variant, value, unit, baseline) in [
            ("component size", f.size_mib, "MiB", rust.size_mib),
            (
                "compile, empty cache",
                ms(f.compile),
                "ms",
                ms(rust.compile),
            ),
            (
                "load from the cache",
                ms(f.from_cache),
                "ms",
                ms(rust.from_cache),
            ),
            (
                "echo, reused instance",
                us(f.reused),
                "µs/msg",
                us(rust.reused),
            ),
            (
                "echo, fresh instance",
                us(f.fresh),
                "µs/msg",
                us(rust.fresh),
            ),
            (
                "linear memory per instance",
                f.memory_mib,
                "MiB",
                rust.memory_mib,
            ),
        ] {
            rows.push(Row {
                scenario: scenario.clone(),
                variant: variant.to_owned(),
                value,
                unit,
                ratio: value / baseline,
            });
        }
    }
}
