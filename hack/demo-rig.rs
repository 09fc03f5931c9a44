//! The demo's data plane (hack/demo.sh starts it inside the rig's network
//! namespace): the pod server and Traefik of tests/support/rig.rs,
//! Prometheus scraping Traefik, and a steady load through Traefik for each
//! host the demo names, tallied every second.
//!
//! Usage: demo-rig DIR   (KUBECONFIG names the cluster)
//!   DIR/rig.env           written once all is up: TRAEFIK_PORT,
//!                         TRAEFIK_METRICS_PORT, PROMETHEUS_URL (shell syntax)
//!   DIR/load/NAME         the demo writes a host into it: a load starts
//!                         for that host; removing the file stops it
//!   DIR/traffic/NAME.log  one line per second of that load:
//!                         `<unix second> <requests> <failed> <tag>=<n> ...`
//!   DIR/view/NAME         the same second drawn for a terminal

#[path = "../tests/support/crds.rs"]
mod crds;
#[allow(dead_code)]
#[path = "../tests/support/prometheus.rs"]
mod prometheus;
#[allow(dead_code)] // the tests' entry into the rig is not used here
#[path = "../tests/support/rig.rs"]
mod rig;
#[allow(dead_code)]
#[path = "../tests/support/scripts.rs"]
mod scripts;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use prometheus::Prometheus;
use rig::{Load, PodServer, Tally, Traefik};

/// Requests a second per host: enough for a 20 % step to show as 4 in 20,
/// little enough to leave the two cores to the cluster.
const RATE: u32 = 20;
/// Width of the bar in the terminal view, in cells: the line fits in 80
/// columns, or redrawing it in place would break.
const BAR: usize = 24;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: demo-rig DIR");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo-rig: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Stopped by SIGTERM (the demo, again or `down`) or Ctrl-C: `run` is
    // dropped, and with it Traefik and Prometheus, which are its children.
    let stopped = async {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(&dir) => result,
            () = stopped => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-rig: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One running load: its host, and the file its seconds are appended to.
struct Stream {
    host: String,
    load: Load,
    log: std::fs::File,
}

async fn run(dir: &Path) -> Result<()> {
    let kubeconfig = std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .context("KUBECONFIG is not set")?;
    let client = kube::Client::try_default()
        .await
        .context("a client for the cluster")?;
    let traefik = Traefik::start(&kubeconfig, &client).await?;
    let _pods = PodServer::start(client).await?;
    let prometheus = Prometheus::start(&format!("127.0.0.1:{}", traefik.metrics_port)).await?;
    for sub in ["load", "traffic", "view"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    write_atomically(
        &dir.join("rig.env"),
        &format!(
            "TRAEFIK_PORT={}\nTRAEFIK_METRICS_PORT={}\nPROMETHEUS_URL={}\n",
            traefik.web_port,
            traefik.metrics_port,
            prometheus.url()
        ),
    )?;
    println!(
        "demo-rig: Traefik on 127.0.0.1:{} (metrics :{}), Prometheus at {}",
        traefik.web_port,
        traefik.metrics_port,
        prometheus.url()
    );

    let mut streams: BTreeMap<String, Stream> = BTreeMap::new();
    loop {
        // Just past the next full wall-clock second, so each line of the
        // traffic logs is one second the demo can compare with `date +%s`.
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let to_next = Duration::from_secs(1) - Duration::from_nanos(now.subsec_nanos().into());
        tokio::time::sleep(to_next + Duration::from_millis(50)).await;
        let wall = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let boundary = Instant::now() - Duration::from_nanos(wall.subsec_nanos().into());
        let second = wall.as_secs() - 1;

        follow_requests(dir, &traefik, &mut streams)?;
        for (name, stream) in &mut streams {
            let tally = stream.load.drain(boundary);
            writeln!(stream.log, "{second} {}", counts(&tally))
                .with_context(|| format!("writing the traffic log of {name}"))?;
            write_atomically(&dir.join("view").join(name), &view(name, &tally))?;
        }
    }
}

/// Starts a load for each new file in DIR/load and stops those whose file
/// is gone.
fn follow_requests(
    dir: &Path,
    traefik: &Traefik,
    streams: &mut BTreeMap<String, Stream>,
) -> Result<()> {
    let mut wanted = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("load"))? {
        let path = entry?.path();
        let (Some(name), Ok(host)) = (
            path.file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string),
            std::fs::read_to_string(&path),
        ) else {
            continue;
        };
        let host = host.trim().to_string();
        if !host.is_empty() {
            wanted.insert(name, host);
        }
    }
    streams.retain(|name, s| wanted.get(name) == Some(&s.host));
    for (name, host) in wanted {
        if streams.contains_key(&name) {
            continue;
        }
        let path = dir.join("traffic").join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let load = Load::start(traefik.web_port, &host, RATE);
        println!("demo-rig: {RATE} requests a second for {host} ({name})");
        streams.insert(name, Stream { host, load, log });
    }
    Ok(())
}

/// `<requests> <failed> <tag>=<n> ...`
fn counts(tally: &Tally) -> String {
    let mut line = format!("{} {}", tally.total(), tally.failed.len());
    for (tag, n) in &tally.served {
        line.push_str(&format!(" {tag}={n}"));
    }
    line
}

/// One second of one load as a terminal line: a bar split by revision
/// (failed requests as ✗), then the shares in numbers.
fn view(name: &str, tally: &Tally) -> String {
    let total = tally.total();
    let mut bar = String::new();
    let mut text = String::new();
    let mut used = 0;
    if total > 0 {
        let cells = |n: usize| (n * BAR + total as usize / 2) / total as usize;
        for (tag, n) in &tally.served {
            let width = cells(*n as usize).min(BAR - used);
            used += width;
            bar.push_str(&format!(
                "\x1b[{}m{}\x1b[0m",
                colour(tag),
                "█".repeat(width)
            ));
            text.push_str(&format!(
                "  {tag} {:>3.0}%",
                100.0 * f64::from(*n) / f64::from(total)
            ));
        }
        let width = cells(tally.failed.len()).min(BAR - used);
        used += width;
        bar.push_str(&format!("\x1b[1;31m{}\x1b[0m", "✗".repeat(width)));
    }
    bar.push_str(&"·".repeat(BAR - used));
    // The first word of the first failure: a status code, or "error".
    let failed = match tally.failed.first() {
        None => "  failed 0".to_string(),
        Some(why) => format!(
            "  \x1b[1;31mfailed {}\x1b[0m ({})",
            tally.failed.len(),
            why.split_whitespace()
                .next()
                .unwrap_or_default()
                .chars()
                .take(12)
                .collect::<String>()
        ),
    };
    format!("{name:>8} {bar}{text}{failed}  {total}/s")
}

/// The demo's image tags are colours; anything else gets magenta.
fn colour(tag: &str) -> &'static str {
    match tag {
        "blue" => "34",
        "green" => "32",
        "yellow" => "33",
        "red" => "31",
        _ => "35",
    }
}

/// Readers (the demo's shell) never see half a file.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}
