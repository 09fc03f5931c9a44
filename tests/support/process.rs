//! The real `rollouts-controller` binary as a child process, with its own
//! ports, killed when dropped; its log goes to a file shown on failure.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

pub struct ControllerProcess {
    pub name: String,
    pub metrics_port: u16,
    pub healthz_port: u16,
    log: PathBuf,
    child: Child,
}

pub use super::scripts::free_ports;

/// The directory holding upstream Argo Rollouts' `rollouts-controller` and
/// `kubectl-argo-rollouts` (hack/build-argo-rollouts.sh: built once, then
/// cached by version outside the repository).
pub fn upstream_bin_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| match super::hack_script("build-argo-rollouts.sh", &[]) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    })
}

impl ControllerProcess {
    /// Starts the binary as pod `name` with `args` (ports are added), using
    /// `kubeconfig`.
    pub fn start(name: &str, kubeconfig: &std::path::Path, args: &[&str]) -> Result<Self> {
        Self::spawn(
            name,
            std::path::Path::new(env!("CARGO_BIN_EXE_rollouts-controller")),
            kubeconfig,
            "--metricsport",
            args,
            &[],
        )
    }

    /// Starts upstream Argo Rollouts' own controller as pod `name`, limited
    /// to namespace `ns` (its namespaced install: `--namespaced` takes the
    /// namespace from the kubeconfig flags; POD_NAMESPACE is where it looks
    /// for its notification ConfigMap), with no leader election.
    pub fn start_upstream(name: &str, kubeconfig: &std::path::Path, ns: &str) -> Result<Self> {
        Self::spawn(
            name,
            &upstream_bin_dir().join("rollouts-controller"),
            kubeconfig,
            "--metricsPort",
            &[
                "--namespaced",
                "--namespace",
                ns,
                "--kubeconfig",
                &kubeconfig.to_string_lossy(),
                "--leader-elect=false",
            ],
            &[("POD_NAMESPACE", ns)],
        )
    }

    fn spawn(
        name: &str,
        program: &std::path::Path,
        kubeconfig: &std::path::Path,
        metrics_flag: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Self> {
        let [metrics_port, healthz_port] = free_ports()?;
        let log = std::env::temp_dir().join(format!(
            "rollouts-controller-{name}-{}.log",
            std::process::id()
        ));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(program)
            .args(args)
            .args([
                metrics_flag,
                &metrics_port.to_string(),
                "--healthzPort",
                &healthz_port.to_string(),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .env("NO_COLOR", "1")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(ControllerProcess {
            name: name.to_string(),
            metrics_port,
            healthz_port,
            log,
            child,
        })
    }

    /// SIGKILL: nothing is released, as when a node dies.
    pub async fn kill(&mut self) -> Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        Ok(tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await??)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// The exit status if the process has ended by itself.
    pub fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// GET on one of its ports: (status code, body).
    pub async fn get(&self, port: u16, path: &str) -> Result<(u16, String)> {
        let client = rollouts::analysis::providers::http_client(Duration::from_secs(5), false)?;
        let response = client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    pub async fn metrics(&self) -> Result<String> {
        let (code, body) = self.get(self.metrics_port, "/metrics").await?;
        if code != 200 {
            bail!("/metrics of {} answered {code}: {body}", self.name);
        }
        Ok(body)
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of controller {} ---\n{}", self.name, self.log());
        }
    }
}

/// The value of the sample `name{labels...}` in a Prometheus text page,
/// matching the given labels (others may be present, in any order).
pub fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            (metric == name).then_some((rest.trim_end_matches('}'), value))
        })
        .find(|(rest, _)| {
            labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, v)| v.parse().ok())
}
