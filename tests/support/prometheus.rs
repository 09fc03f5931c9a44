//! A real Prometheus server per test: the binary from hack/prometheus.sh
//! (Debian's package, fetched and cached on first use), scraping one target
//! every second, on a free 127.0.0.1 port with its storage in a temp dir.
//! Dropping it kills the server and removes the dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::scripts::{free_port, hack_script};

/// hack/prometheus.sh's answer, once per test binary (tests starting at the
/// same time wait for the one download).
fn binary() -> Result<PathBuf> {
    static BINARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| hack_script("prometheus.sh", &[]))
        .clone()
        .map_err(anyhow::Error::msg)
}

pub struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `scrape_target` (`host:port`, job `app`)
    /// and waits until it answers queries with a successful scrape
    /// (`up{job="app"} == 1`).
    pub async fn start(scrape_target: &str) -> Result<Prometheus> {
        let binary = binary()?;
        let dir = temp_dir()?;
        let port = free_port()?;
        let child = match spawn(&binary, &dir, scrape_target, port) {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // From here on, Drop stops it and cleans up, whatever happens next.
        let mut prometheus = Prometheus { child, port, dir };
        prometheus
            .wait_until_scraped(Duration::from_secs(60))
            .await?;
        Ok(prometheus)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last lines Prometheus wrote to stdout/stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    async fn wait_until_scraped(&mut self, timeout: Duration) -> Result<()> {
        let http = rollouts::analysis::providers::http_client(Duration::from_secs(5), false)?;
        let start = Instant::now();
        let mut last = String::from("nothing yet");
        let mut ready = false;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "Prometheus exited ({status}) before it was ready; its log:\n{}",
                    self.log_tail(30)
                );
            }
            if !ready {
                match http.get(format!("{}/-/ready", self.url())).send().await {
                    Ok(r) if r.status().is_success() => ready = true,
                    Ok(r) => last = format!("/-/ready answered {}", r.status()),
                    Err(e) => last = format!("/-/ready: {e}"),
                }
            }
            if ready {
                match self.up(&http).await {
                    Ok(Some(v)) if v == "1" => return Ok(()),
                    Ok(Some(v)) => {
                        let why = self.scrape_error(&http).await.unwrap_or_default();
                        last = format!("up{{job=\"app\"}} is {v}, the scrape failed: {why}");
                    }
                    Ok(None) => last = "no up{job=\"app\"} sample yet".into(),
                    Err(e) => last = format!("querying up: {e:#}"),
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "timed out after {timeout:?} waiting for Prometheus on {} to scrape its target; last seen: {last}; its log:\n{}",
                    self.url(),
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Why the last scrape of the target failed, as Prometheus says.
    async fn scrape_error(&self, http: &reqwest::Client) -> Result<String> {
        let body = http
            .get(format!("{}/api/v1/targets", self.url()))
            .send()
            .await?
            .text()
            .await?;
        let doc: serde_json::Value = serde_json::from_str(&body)?;
        Ok(doc["data"]["activeTargets"][0]["lastError"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// The value of `up{job="app"}`, if there is a sample.
    async fn up(&self, http: &reqwest::Client) -> Result<Option<String>> {
        let body = http
            // up{job="app"}
            .get(format!(
                "{}/api/v1/query?query=up%7Bjob%3D%22app%22%7D",
                self.url()
            ))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let doc: serde_json::Value = serde_json::from_str(&body)?;
        Ok(doc["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_string))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes the config into `dir` and starts the server, its output going to
/// `dir/prometheus.log`.
fn spawn(binary: &Path, dir: &Path, scrape_target: &str, port: u16) -> Result<Child> {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: [\"{scrape_target}\"]\n"
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

/// A fresh directory under the system temp dir.
fn temp_dir() -> Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("rollouts-prometheus-{}-{n}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
