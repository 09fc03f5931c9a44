//! The main job, `hack/demo.sh`, run as a user runs it (as root), on a
//! cluster of its own in a network namespace of its own, started from empty
//! state: it must end with exit code 0 after its three releases, each with
//! its checks on the cluster and on the requests sent through the proxy,
//! and `hack/demo.sh down` must stop everything it started and delete the
//! namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rig's binary, built by `cargo test` with the other examples;
/// without it the demo builds it.
fn rig_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/demo-<hash> -> target/<profile>/examples/demo-rig
    let bin = exe.parent()?.parent()?.join("examples/demo-rig");
    bin.exists().then_some(bin)
}

/// The demo's network namespace: one per test run.
fn netns() -> String {
    format!("rollouts-demo-test-{}", std::process::id())
}

/// Runs `hack/demo.sh ARGS` against the cluster state directory `state`,
/// with the binaries this test was built with (no nested cargo build).
fn demo(state: &Path, args: &[&str]) -> Output {
    let mut command = Command::new("bash");
    command
        .arg(repo_root().join("hack/demo.sh"))
        .args(args)
        .current_dir(repo_root())
        .env("ROLLOUTS_CLUSTER_DIR", state)
        .env("ROLLOUTS_DEMO_NETNS", netns())
        .env(
            "ROLLOUTS_CONTROLLER_BIN",
            env!("CARGO_BIN_EXE_rollouts-controller"),
        )
        .env(
            "ROLLOUTS_PLUGIN_BIN",
            env!("CARGO_BIN_EXE_kubectl-rollouts"),
        )
        .env_remove("KUBECONFIG");
    if let Some(rig) = rig_bin() {
        command.env("ROLLOUTS_RIG_BIN", rig);
    }
    command.output().expect("bash runs")
}

fn netns_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        })
        .unwrap_or(false)
}

/// Stops the demo's cluster however the test ends.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        if self.0.exists() || netns_exists(&netns()) {
            let _ = demo(&self.0, &["down"]);
        }
    }
}

#[test]
fn the_demo_tells_three_releases_with_real_traffic_and_cleans_up_after_itself() {
    let state = std::env::temp_dir().join(format!("rollouts-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let _down = Down(state.clone());

    let out = demo(&state, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Without the terminal's colours, for the checks below.
    let plain = strip_ansi(&stdout);
    assert!(
        out.status.success(),
        "hack/demo.sh failed ({}):\n--- stdout\n{plain}\n--- stderr\n{stderr}",
        out.status
    );
    for line in [
        "ok: paused at step 1 of 8 (setWeight 20): 1 of 5 pods run the new version",
        "ok: the canary Service selects the new pods, the stable Service the old ones",
        "ok: the proxy sends 20% of the requests to the new version (the last 5 s: ",
        "ok: the new version is stable, both Services select it",
        "ok: no request failed during the release (",
        "ok: the analysis failed and the update was aborted, in upstream's words",
        "ok: all pods run the stable version again, which stays stable",
        "ok: after the abort, the stable version serves every request and none fails (",
        "ok: the new version is up behind the preview Service; users still get the old one",
        "ok: through the proxy, the preview serves only the new version and the active Service only the old one",
        "ok: the active Service switched to the new version",
        "ok: no request to the active Service failed, through the switch and the old pods' removal (",
        "== Done: three releases, each checked",
    ] {
        assert!(plain.contains(line), "missing {line:?} in:\n{plain}");
    }
    assert!(
        plain.contains(
            "Metric \"canary-error-rate\" assessed Failed due to failed (1) > failureLimit (0)"
        ),
        "upstream's abort message:\n{plain}"
    );
    // The live view was drawn: a second of the canary split between the
    // two versions, none failing.
    assert!(
        plain.lines().any(|l| l.trim_start().starts_with("canary ")
            && l.contains("blue ")
            && l.contains("yellow ")
            && l.contains("failed 0")),
        "no view of the canary's split in:\n{plain}"
    );

    // `down` stops the cluster the demo started: its state is gone and no
    // process it started is left.
    let pids: Vec<String> = std::fs::read_dir(state.join("pids"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .map(|p| p.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(!pids.is_empty(), "the demo's cluster wrote no pid files");
    let started: Vec<String> = ["demo-controller.pid", "demo-rig.pid"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(state.join(f))
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    let down = demo(&state, &["down"]);
    assert!(
        down.status.success(),
        "hack/demo.sh down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!state.exists(), "the cluster state is still there");
    assert!(
        !netns_exists(&netns()),
        "network namespace {} is still there",
        netns()
    );
    for pid in pids.iter().chain(&started) {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
            "process {pid} is still running after `hack/demo.sh down`"
        );
    }
}

fn is_zombie(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
