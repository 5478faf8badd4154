//! The report's plots (PNG, drawn with plotters) and the description of the machine the
//! figures came from.
//!
//! Text is drawn with a TrueType font read at run time: `COURIER_BENCH_FONT`, or DejaVu Sans
//! where Debian installs it (package `fonts-dejavu-core`, which `.ci/run` installs). Without a
//! font the plots are left out, with a warning; the table and the JSON are written anyway.

use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::{Value, json};

use super::scale::ChildReport;

const DEJAVU: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (1200, 480);

type Drawn = Result<(), Box<dyn Error>>;

/// What the figures ran on: CPU model and count, memory, kernel.
pub fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim())
        .to_owned();
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| (kib / 1024.0 / 1024.0).round());
    json!({
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu": model,
        "memory_gib": memory_gib,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

fn register_font() -> bool {
    let path = std::env::var("COURIER_BENCH_FONT").unwrap_or_else(|_| DEJAVU.to_owned());
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!("warning: no font at {path} (set COURIER_BENCH_FONT): the plots are left out");
        return false;
    };
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_err() {
        eprintln!("warning: {path} is not a TrueType font: the plots are left out");
        return false;
    }
    true
}

/// Draws every plot there are figures for into `out`; returns the files written.
pub fn draw(
    out: &Path,
    concurrency: &[(&'static str, Vec<(u32, f64)>)],
    fleet: &[(ChildReport, ChildReport)],
    latency: &[(&'static str, Vec<f64>)],
) -> Vec<PathBuf> {
    if !register_font() {
        return Vec::new();
    }
    let mut written = Vec::new();
    let mut plot = |name: &str, drawn: &dyn Fn(&Path) -> Drawn| {
        let file = out.join(name);
        match drawn(&file) {
            Ok(()) => written.push(file),
            Err(error) => panic!("cannot draw {}: {error}", file.display()),
        }
    };
    if !concurrency.is_empty() {
        plot("embedded-concurrency.png", &|file| {
            embedded_concurrency(file, concurrency)
        });
    }
    if !fleet.is_empty() {
        plot("scale.png", &|file| scale(file, fleet));
    }
    if !latency.is_empty() {
        plot("rabbitmq-latency.png", &|file| {
            rabbitmq_latency(file, latency)
        });
    }
    written
}

const COLOURS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
];

/// Messages per second against handlers per plugin, one panel per flow.
fn embedded_concurrency(file: &Path, curves: &[(&str, Vec<(u32, f64)>)]) -> Drawn {
    let root = BitMapBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, curves.len()));
    for (((label, curve), panel), colour) in curves.iter().zip(&panels).zip(COLOURS) {
        let top = curve.iter().map(|&(_, rate)| rate).fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("embedded broker, {label}"), (FONT, 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(75)
            .build_cartesian_2d(0.5f64..8.5f64, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("concurrent handlers per plugin")
            .y_desc(if label.starts_with("order") {
                "orders/s"
            } else {
                "messages/s"
            })
            .x_labels(8)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style((FONT, 14))
            .draw()?;
        let points: Vec<(f64, f64)> = curve
            .iter()
            .map(|&(c, rate)| (f64::from(c), rate))
            .collect();
        chart.draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?;
        chart.draw_series(
            points
                .iter()
                .map(|&point| Circle::new(point, 4, colour.filled())),
        )?;
    }
    root.present()?;
    Ok(())
}

/// Against loaded plugins (log scale): throughput and memory as a ratio to one plugin, and
/// start-up time with a cold and a warm cache.
fn scale(file: &Path, reports: &[(ChildReport, ChildReport)]) -> Drawn {
    let root = BitMapBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let one = &reports[0].1;
    let x = |report: &ChildReport| report.plugins as f64;

    let ratios: [(&str, Vec<(f64, f64)>); 2] = [
        (
            "throughput (calls spread over all)",
            reports
                .iter()
                .map(|(_, w)| (x(w), w.rate / one.rate))
                .collect(),
        ),
        (
            "resident memory once loaded",
            reports
                .iter()
                .map(|(_, w)| (x(w), w.rss_loaded_mib / one.rss_loaded_mib))
                .collect(),
        ),
    ];
    let top = ratios
        .iter()
        .flat_map(|(_, points)| points.iter().map(|&(_, y)| y))
        .fold(1.2, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&left)
        .caption("loaded plugins: ratio to one plugin", (FONT, 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((0.8f64..130f64).log_scale(), 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("loaded plugins")
        .y_desc("ratio to 1 plugin")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 14))
        .draw()?;
    draw_curves(&mut chart, ratios, true, SeriesLabelPosition::UpperLeft)?;

    let startup: [(&str, Vec<(f64, f64)>); 2] = [
        (
            "cold cache (compiled)",
            reports.iter().map(|(c, _)| (x(c), c.startup_ms)).collect(),
        ),
        (
            "warm cache",
            reports.iter().map(|(_, w)| (x(w), w.startup_ms)).collect(),
        ),
    ];
    let top = startup
        .iter()
        .flat_map(|(_, points)| points.iter().map(|&(_, y)| y))
        .fold(1.0, f64::max)
        * 2.0;
    let bottom = startup
        .iter()
        .flat_map(|(_, points)| points.iter().map(|&(_, y)| y))
        .fold(top, f64::min)
        / 2.0;
    let mut chart = ChartBuilder::on(&right)
        .caption("start-up until every plugin consumes", (FONT, 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((0.8f64..130f64).log_scale(), (bottom..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("loaded plugins")
        .y_desc("ms")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 14))
        .draw()?;
    draw_curves(&mut chart, startup, true, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

/// The share of messages (y) whose publish-to-follow-up latency is at most x, per variant.
fn rabbitmq_latency(file: &Path, curves: &[(&'static str, Vec<f64>)]) -> Drawn {
    let root = BitMapBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    // Up to the slowest variant's p99.9, so the tail is visible and one outlier does not
    // flatten the curves.
    let right = curves
        .iter()
        .map(|(_, sorted)| super::rabbitmq::percentile(sorted, 99.9) / 1e3)
        .fold(0.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "RabbitMQ, payment step at 50% of the slower peak: publish to follow-up",
            (FONT, 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..right, 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_desc("latency, ms")
        .y_desc("% of messages at or under")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 14))
        .draw()?;
    let cdfs: Vec<(&'static str, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|(label, sorted)| {
            let n = sorted.len() as f64;
            let points = sorted
                .iter()
                .enumerate()
                .map(|(i, us)| (us / 1e3, (i + 1) as f64 / n * 100.0))
                .collect();
            (*label, points)
        })
        .collect();
    draw_curves(&mut chart, cdfs, false, SeriesLabelPosition::LowerRight)?;
    root.present()?;
    Ok(())
}

/// Draws each curve in its colour (with a dot on each point if `markers`), and the legend.
fn draw_curves<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    curves: impl IntoIterator<Item = (&'static str, Vec<(f64, f64)>)>,
    markers: bool,
    legend: SeriesLabelPosition,
) -> Drawn
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for ((label, points), colour) in curves.into_iter().zip(COLOURS) {
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        if markers {
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, colour.filled())),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
