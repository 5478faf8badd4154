//! The soak test of hot reload, on the real RabbitMQ: a steady stream of 20,000 pings while
//! `stamp` is swapped twelve times between its two versions (renamed into place, as a
//! deployment does) and a broken version is dropped in mid-run. Every ping must be handled
//! exactly once, by exactly one version, never by the broken one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation stops the test with its message"
)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_host::plugin::{HANDLED_BY_VERSION_HEADER, Plugin};
use courier_host::transport::Outbound;
use courier_host::{Host, PublishRequest};
use courier_tests::*;

const MESSAGES: u64 = 20_000;
const SWAPS: usize = 12;
/// The stream: this many pings every tick (about 2,000 a second, below what the host handles,
/// so the queue stays short and every swap lands among messages being handled).
const BATCH: u64 = 40;
const TICK: Duration = Duration::from_millis(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_swaps_and_a_broken_version_under_a_steady_stream_lose_nothing() {
    let vhost = Vhost::new("reload-soak");
    let dir = std::env::temp_dir().join(format!("courier-reload-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("stamp.wasm");
    std::fs::copy(plugin_file("stamp-v1"), &file).unwrap();
    let (host, _watch) = watched_host("[defaults]\nconcurrency = 4\n", &dir, Some(&vhost)).await;
    let mut tap = Tap::new(&host, "tap", &[&test_type("Stamped")]).await;

    let publisher = tokio::spawn(stream_pings(Arc::clone(&host)));

    // The swaps, spread evenly over the pings handled; the broken version goes in halfway.
    let mut versions: Vec<Arc<Plugin>> = vec![host.plugin("stamp").unwrap()];
    let sources = [plugin_file("stamp-v2"), plugin_file("stamp-v1")];
    let broken = {
        let v2 = std::fs::read(&sources[0]).unwrap();
        v2[..v2.len() * 2 / 3].to_vec()
    };
    let swapper = {
        let host = Arc::clone(&host);
        let file = file.clone();
        tokio::spawn(async move {
            let mut swapped = Vec::new();
            for swap in 0..SWAPS {
                let due = (swap as u64 + 1) * MESSAGES / (SWAPS as u64 + 1);
                wait_until("the stream goes on", || {
                    host.summary().of(&test_type("Ping")).handled >= due
                })
                .await;
                if swap == SWAPS / 2 {
                    let temp = file.with_extension("broken.tmp");
                    std::fs::write(&temp, &broken).unwrap();
                    std::fs::rename(&temp, &file).unwrap();
                    wait_until("the broken version is refused", || {
                        !host.refused().is_empty()
                    })
                    .await;
                }
                let current = host.plugin("stamp").unwrap();
                put_in_place(&sources[swap % 2], &file);
                wait_until("the swap", || {
                    !Arc::ptr_eq(&host.plugin("stamp").unwrap(), &current)
                })
                .await;
                swapped.push(host.plugin("stamp").unwrap());
            }
            swapped
        })
    };

    // Every follow-up, by ping.
    let mut stamped_by: HashMap<u64, Vec<String>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while (stamped_by.len() as u64) < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "only {} of {MESSAGES} pings stamped",
            stamped_by.len()
        );
        let Some(stamped) = tap.try_next(Duration::from_secs(5)).await else {
            continue;
        };
        let body = body_json(&stamped);
        let version = body["version"].as_str().unwrap().to_owned();
        assert_eq!(
            stamped.header(HANDLED_BY_VERSION_HEADER),
            Some(version.as_str()),
            "the host's header and the plugin's stamp disagree"
        );
        stamped_by
            .entry(body["n"].as_u64().unwrap())
            .or_default()
            .push(version);
    }
    let published = publisher.await.unwrap();
    versions.extend(swapper.await.unwrap());
    tap.expect_nothing(Duration::from_secs(1)).await;
    host.wait_until_idle(Duration::from_millis(100))
        .await
        .unwrap();

    // The accounting.
    let mut by_version: BTreeMap<String, u64> = BTreeMap::new();
    for (n, stamps) in &stamped_by {
        assert!(*n < MESSAGES, "ping {n} was never published");
        assert_eq!(stamps.len(), 1, "ping {n} was stamped {stamps:?}");
        *by_version.entry(stamps[0].clone()).or_default() += 1;
    }
    let handled_per_version: u64 = versions.iter().map(|v| v.counts().handled()).sum();
    let failures: u64 = versions.iter().map(|v| v.counts().failed()).sum();
    let summary = host.summary().of(&test_type("Ping"));
    println!("soak: {published} pings published, {SWAPS} swaps, 1 broken version refused");
    for (version, count) in &by_version {
        println!("  handled by {version}: {count}");
    }
    println!(
        "  handled {} (by the {} version objects: {handled_per_version}), duplicates caught {}, \
         failures {failures}",
        summary.handled,
        versions.len(),
        summary.duplicates
    );
    let shares: Vec<String> = versions
        .iter()
        .map(|v| format!("{}:{}", v.version(), v.counts().handled()))
        .collect();
    println!("  in the order served: {}", shares.join(" "));
    assert_eq!(published, MESSAGES);
    assert_eq!(stamped_by.len() as u64, MESSAGES);
    assert_eq!(summary.handled, MESSAGES, "each ping handled exactly once");
    assert_eq!(handled_per_version, MESSAGES);
    assert_eq!(failures, 0);
    assert_eq!(
        by_version.keys().cloned().collect::<Vec<_>>(),
        ["1.0.0", "2.0.0"],
        "only the two good versions handled pings"
    );
    assert_eq!(versions.len(), SWAPS + 1);
    // Each swap put in a new version, and each version object handled its share.
    let serving: Vec<&str> = versions.iter().map(|v| v.version()).collect();
    for pair in serving.windows(2) {
        assert_ne!(pair[0], pair[1], "{serving:?}");
    }
    assert!(
        versions.iter().all(|v| v.counts().handled() > 0),
        "every version served part of the stream: {shares:?}"
    );
    let refusals = host.refused();
    assert_eq!(
        refusals.len(),
        0,
        "the last good version cleared the refusal"
    );
    host.shutdown().await;
}

/// Publishes the pings as a steady stream; returns how many were published.
async fn stream_pings(host: Arc<Host>) -> u64 {
    let mut ticker = tokio::time::interval(TICK);
    let mut n = 0;
    while n < MESSAGES {
        ticker.tick().await;
        let batch: Vec<Outbound> = (n..(n + BATCH).min(MESSAGES))
            .map(|n| {
                PublishRequest::new(test_type("Ping"), serde_json::json!({ "n": n }))
                    .into_outbound("soak")
                    .unwrap()
            })
            .collect();
        n += batch.len() as u64;
        host.transport().dispatch(batch).await.unwrap();
    }
    n
}
