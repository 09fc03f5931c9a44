//! Output of `get rollout` (header and tree) and `list rollouts`.
//!
//! Both follow what kubectl-argo-rollouts prints (the `info` package's
//! derived values, its icons and column names), computed here from the
//! objects themselves. Lines carry no trailing spaces.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::Rollout;
use crate::api::analysis::{AnalysisPhase, AnalysisRun};
use crate::api::rollout::RolloutStatus;
use crate::rollout::hash::POD_TEMPLATE_HASH_LABEL;
use crate::rollout::plan::replica_set::scale_down_deadline;
use crate::rollout::plan::{status, steps};
use crate::rollout::snapshot::{REVISION_ANNOTATION, ReplicaSetExt};

/// What `get rollout` shows: the Rollout and the objects it owns.
pub struct RolloutView {
    pub rollout: Rollout,
    pub replica_sets: Vec<ReplicaSet>,
    pub pods: Vec<Pod>,
    pub runs: Vec<AnalysisRun>,
}

// Status icons (as the plugin's `info` package).
const ICON_WAITING: &str = "◷";
const ICON_PROGRESSING: &str = "◌";
const ICON_WARNING: &str = "⚠";
const ICON_UNKNOWN: &str = "?";
const ICON_OK: &str = "✔";
const ICON_BAD: &str = "✖";
const ICON_PAUSED: &str = "॥";
const ICON_NEUTRAL: &str = "•";

// Tree icons.
const ICON_ROLLOUT: &str = "⟳";
const ICON_REVISION: &str = "#";
const ICON_REPLICA_SET: &str = "⧉";
const ICON_POD: &str = "□";
const ICON_ANALYSIS: &str = "α";

const TAG_CANARY: &str = "canary";
const TAG_STABLE: &str = "stable";
const TAG_ACTIVE: &str = "active";
const TAG_PREVIEW: &str = "preview";
const TAG_PING: &str = "ping";
const TAG_PONG: &str = "pong";

// ANSI foreground colours.
const RED: u8 = 31;
const GREEN: u8 = 32;
const YELLOW: u8 = 33;
const HI_BLUE: u8 = 94;

/// The colour the plugin gives a well-known word (icon, tag or analysis
/// phase); the pause and neutral icons stay uncoloured.
fn colour_of(word: &str) -> Option<u8> {
    match word {
        ICON_WAITING | ICON_UNKNOWN | TAG_CANARY => Some(YELLOW),
        ICON_PROGRESSING | TAG_PREVIEW | TAG_PING | TAG_PONG | "Pending" | "Running" => {
            Some(HI_BLUE)
        }
        ICON_WARNING | ICON_BAD => Some(RED),
        ICON_OK | TAG_STABLE | TAG_ACTIVE => Some(GREEN),
        _ => None,
    }
}

#[derive(Clone, Copy)]
struct Painter {
    color: bool,
}

impl Painter {
    /// `s` in the colour of `key`, when colour is on and `key` has one.
    fn as_(&self, s: &str, key: &str) -> String {
        match colour_of(key) {
            Some(code) if self.color => format!("\x1b[{code}m{s}\x1b[0m"),
            _ => s.to_string(),
        }
    }
    fn word(&self, s: &str) -> String {
        self.as_(s, s)
    }
}

/// Like kubectl's (apimachinery) human-readable durations: "45s", "3m20s",
/// "15m", "2h30m", "10h", "3d4h", "20d", "2y3d".
fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        return with_rest(minutes, "m", secs % 60, "s");
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return with_rest(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with_rest(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return with_rest(years, "y", days % 365, "d");
    }
    format!("{years}y")
}

fn with_rest(big: i64, big_unit: &str, rest: i64, rest_unit: &str) -> String {
    if rest == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit}{rest}{rest_unit}")
    }
}

/// Age of an object from its creationTimestamp ("" when it has none).
fn age<K: ResourceExt>(obj: &K, now: Timestamp) -> String {
    obj.meta()
        .creation_timestamp
        .as_ref()
        .map(|t| human_duration(now.duration_since(t.0).as_secs()))
        .unwrap_or_default()
}

/// Rows of cells aligned like Go's tabwriter (minimum width 0, padding 2,
/// padded with spaces): every cell but a row's last is padded to its
/// column's widest cell plus two. Widths count characters, not bytes, and
/// ignore ANSI escapes. Trailing spaces are trimmed.
fn tabulate(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(visible_width(cell));
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] + 2 - visible_width(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end_matches(' '));
        out.push('\n');
    }
    out
}

fn visible_width(s: &str) -> usize {
    let mut width = 0;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI sequence: ESC [ params final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            width += 1;
        }
    }
    width
}

/// Phase and message as the plugin derives them: spec changes not yet
/// observed and a pending unpause show as Progressing; otherwise the
/// controller's status.phase, or (for a status without one) the phase
/// computed from spec and status.
fn phase(ro: &Rollout) -> (String, String) {
    let default = RolloutStatus::default();
    let st = ro.status.as_ref().unwrap_or(&default);
    let observed = st
        .observed_generation
        .as_deref()
        .and_then(|g| g.parse::<i64>().ok());
    if let (Some(observed), Some(generation)) = (observed, ro.metadata.generation)
        && observed < generation
    {
        return (
            "Progressing".into(),
            "waiting for rollout spec update to be observed".into(),
        );
    }
    if st.controller_pause && st.pause_conditions.is_empty() {
        return (
            "Progressing".into(),
            "waiting for rollout to unpause".into(),
        );
    }
    let (phase, message) = match st.phase {
        Some(p) => (p, st.message.clone().unwrap_or_default()),
        None => status::phase(&ro.spec, st),
    };
    (phase.as_str().to_string(), message)
}

fn rollout_icon(phase: &str) -> &'static str {
    match phase {
        "Progressing" => ICON_PROGRESSING,
        "Error" | "InvalidSpec" => ICON_WARNING,
        "Paused" => ICON_PAUSED,
        "Healthy" => ICON_OK,
        "Degraded" => ICON_BAD,
        "Unknown" => ICON_UNKNOWN,
        "ScaledDown" => ICON_NEUTRAL,
        _ => " ",
    }
}

fn max_weight(ro: &Rollout) -> i32 {
    ro.spec
        .strategy
        .canary
        .as_ref()
        .and_then(|c| c.traffic_routing.as_ref())
        .and_then(|t| t.max_traffic_weight)
        .unwrap_or(100)
}

/// "index/steps" for a canary with steps and a current step index.
fn step_text(ro: &Rollout) -> Option<String> {
    let canary = ro.spec.strategy.canary.as_ref()?;
    let index = ro.status.as_ref()?.current_step_index?;
    (!canary.steps.is_empty()).then(|| format!("{index}/{}", canary.steps.len()))
}

/// The weight the steps put in force (0 once aborted); None for blue-green.
fn set_weight_of(ro: &Rollout) -> Option<i32> {
    let canary = ro.spec.strategy.canary.as_ref()?;
    let st = ro.status.as_ref();
    if st.is_some_and(|s| s.abort) {
        return Some(0);
    }
    let index = st.and_then(|s| s.current_step_index);
    Some(steps::set_weight(&canary.steps, index, max_weight(ro)))
}

/// What the tree shows of a ReplicaSet.
struct RsInfo<'a> {
    rs: &'a ReplicaSet,
    revision: i64,
    status: &'static str,
    stable: bool,
    canary: bool,
    active: bool,
    preview: bool,
    ping: bool,
    pong: bool,
    pods: Vec<&'a Pod>,
}

impl RsInfo<'_> {
    fn tags(&self) -> Vec<&'static str> {
        [
            (self.canary, TAG_CANARY),
            (self.stable, TAG_STABLE),
            (self.active, TAG_ACTIVE),
            (self.preview, TAG_PREVIEW),
            (self.ping, TAG_PING),
            (self.pong, TAG_PONG),
        ]
        .into_iter()
        .filter_map(|(on, tag)| on.then_some(tag))
        .collect()
    }
}

fn replica_set_health(rs: &ReplicaSet) -> &'static str {
    let generation = rs.metadata.generation.unwrap_or(0);
    let rs_status = rs.status.as_ref();
    let observed = rs_status.and_then(|s| s.observed_generation).unwrap_or(0);
    if generation > observed {
        return "Progressing";
    }
    let failed = rs_status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "ReplicaFailure" && c.status == "True");
    if failed {
        return "ReplicaFailure";
    }
    if rs.available() < rs.spec_replicas() {
        return "Progressing";
    }
    if rs.spec_replicas() == 0 {
        return "ScaledDown";
    }
    "Healthy"
}

fn replica_set_icon(status: &str) -> &'static str {
    match status {
        "Progressing" => ICON_PROGRESSING,
        "Healthy" => ICON_OK,
        "ReplicaFailure" => ICON_BAD,
        "ScaledDown" => ICON_NEUTRAL,
        _ => " ",
    }
}

fn replica_set_infos<'a>(view: &'a RolloutView) -> Vec<RsInfo<'a>> {
    let ro = &view.rollout;
    let default = RolloutStatus::default();
    let st = ro.status.as_ref().unwrap_or(&default);
    let is =
        |field: &Option<String>, hash: Option<&str>| hash.is_some() && field.as_deref() == hash;
    let mut infos: Vec<RsInfo> = view
        .replica_sets
        .iter()
        .map(|rs| {
            let hash = rs.pod_hash();
            let mut info = RsInfo {
                rs,
                revision: rs.revision(),
                status: replica_set_health(rs),
                stable: false,
                canary: false,
                active: false,
                preview: false,
                ping: false,
                pong: false,
                pods: vec![],
            };
            if let Some(canary) = &ro.spec.strategy.canary {
                let ping_pong = canary.ping_pong.is_some();
                let stable_is_ping = st.canary.stable_ping_pong.as_deref() == Some("ping");
                if is(&st.stable_rs, hash) {
                    info.stable = true;
                    info.ping = ping_pong && stable_is_ping;
                    info.pong = ping_pong && !stable_is_ping;
                } else if is(&st.current_pod_hash, hash) {
                    info.canary = true;
                    info.ping = ping_pong && !stable_is_ping;
                    info.pong = ping_pong && stable_is_ping;
                }
            }
            if ro.spec.strategy.blue_green.is_some() {
                info.stable = is(&st.stable_rs, hash);
                if is(&st.blue_green.active_selector, hash) {
                    info.active = true;
                } else if is(&st.blue_green.preview_selector, hash) {
                    info.preview = true;
                }
            }
            info
        })
        .collect();
    infos.sort_by(|a, b| {
        b.revision
            .cmp(&a.revision)
            .then_with(|| a.rs.name_any().cmp(&b.rs.name_any()))
    });
    for pod in &view.pods {
        let by_uid = infos.iter().position(|i| {
            let uid = i.rs.metadata.uid.as_deref();
            uid.is_some()
                && pod
                    .owner_references()
                    .iter()
                    .any(|o| Some(o.uid.as_str()) == uid)
        });
        let by_hash = || {
            let hash = pod.labels().get(POD_TEMPLATE_HASH_LABEL)?;
            infos
                .iter()
                .position(|i| i.rs.pod_hash() == Some(hash.as_str()))
        };
        if let Some(i) = by_uid.or_else(by_hash) {
            infos[i].pods.push(pod);
        }
    }
    for info in &mut infos {
        info.pods.sort_by(|a, b| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        });
    }
    infos
}

/// What the tree shows of a pod: its status word (as `kubectl get pods`
/// derives it), ready containers and restarts.
struct PodInfo {
    status: String,
    ready: String,
    restarts: i32,
}

fn pod_info(pod: &Pod) -> PodInfo {
    let spec = pod.spec.as_ref();
    let pod_status = pod.status.as_ref();
    let init_specs = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);
    let total = spec.map_or(0, |s| s.containers.len());
    let mut reason = pod_status
        .and_then(|s| s.reason.clone())
        .filter(|r| !r.is_empty())
        .or_else(|| pod_status.and_then(|s| s.phase.clone()))
        .unwrap_or_default();
    let mut restarts = 0;
    let mut ready = 0;
    let mut initializing = false;
    let init_statuses = pod_status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or(&[]);
    for (i, c) in init_statuses.iter().enumerate() {
        restarts += c.restart_count;
        let state = c.state.as_ref();
        let terminated = state.and_then(|s| s.terminated.as_ref());
        let waiting_reason = state
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref())
            .filter(|r| !r.is_empty());
        let sidecar = init_specs
            .iter()
            .any(|s| s.name == c.name && s.restart_policy.as_deref() == Some("Always"));
        if let Some(t) = terminated {
            if t.exit_code == 0 {
                continue;
            }
            reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None => match t.signal.filter(|s| *s != 0) {
                    Some(sig) => format!("Init:Signal:{sig}"),
                    None => format!("Init:ExitCode:{}", t.exit_code),
                },
            };
        } else if sidecar && c.started == Some(true) {
            if c.ready {
                continue;
            }
            // a started sidecar that is not ready ends the scan without
            // changing the reason
            break;
        } else if let Some(w) = waiting_reason.filter(|r| *r != "PodInitializing") {
            reason = format!("Init:{w}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    if !initializing {
        restarts = 0;
        let mut running = false;
        let statuses = pod_status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or(&[]);
        for c in statuses.iter().rev() {
            restarts += c.restart_count;
            let state = c.state.as_ref();
            let waiting = state
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                .filter(|r| !r.is_empty());
            let terminated = state.and_then(|s| s.terminated.as_ref());
            if let Some(w) = waiting {
                reason = w.to_string();
            } else if let Some(t) = terminated {
                reason = match t.reason.as_deref().filter(|r| !r.is_empty()) {
                    Some(r) => r.to_string(),
                    None => match t.signal.filter(|s| *s != 0) {
                        Some(sig) => format!("Signal:{sig}"),
                        None => format!("ExitCode:{}", t.exit_code),
                    },
                };
            } else if c.ready && state.is_some_and(|s| s.running.is_some()) {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            reason = "Running".into();
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        let lost = pod_status.and_then(|s| s.reason.as_deref()) == Some("NodeLost");
        reason = if lost { "Unknown" } else { "Terminating" }.into();
    }
    PodInfo {
        status: reason,
        ready: format!("{ready}/{total}"),
        restarts,
    }
}

fn pod_icon(status: &str) -> &'static str {
    if status.starts_with("Init:") {
        return ICON_PROGRESSING;
    }
    if status.starts_with("Signal:") || status.starts_with("ExitCode:") {
        return ICON_BAD;
    }
    if status.ends_with("Error") || status.starts_with("Err") {
        return ICON_WARNING;
    }
    match status {
        "Pending" | "Terminating" | "ContainerCreating" => ICON_PROGRESSING,
        "Running" | "Completed" => ICON_OK,
        "Failed" | "InvalidImageName" | "CrashLoopBackOff" => ICON_BAD,
        "ImagePullBackOff" | "RegistryUnavailable" => ICON_WARNING,
        "Unknown" => ICON_UNKNOWN,
        _ => " ",
    }
}

fn analysis_phase_str(p: AnalysisPhase) -> &'static str {
    match p {
        AnalysisPhase::Pending => "Pending",
        AnalysisPhase::Running => "Running",
        AnalysisPhase::Successful => "Successful",
        AnalysisPhase::Failed => "Failed",
        AnalysisPhase::Error => "Error",
        AnalysisPhase::Inconclusive => "Inconclusive",
    }
}

fn analysis_icon(p: Option<AnalysisPhase>) -> &'static str {
    match p {
        Some(AnalysisPhase::Successful) => ICON_OK,
        Some(AnalysisPhase::Inconclusive) => ICON_UNKNOWN,
        Some(AnalysisPhase::Failed) => ICON_BAD,
        Some(AnalysisPhase::Error) => ICON_WARNING,
        Some(AnalysisPhase::Running) => ICON_PROGRESSING,
        Some(AnalysisPhase::Pending) => ICON_WAITING,
        None => " ",
    }
}

/// The revision a run belongs to: its revision annotation, else that of
/// the ReplicaSet whose pod-template hash it carries as a label or in its
/// name; 0 when none is found.
fn run_revision(run: &AnalysisRun, infos: &[RsInfo]) -> i64 {
    if let Some(rev) = run
        .annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
    {
        return rev;
    }
    let by_label = run
        .labels()
        .get(POD_TEMPLATE_HASH_LABEL)
        .and_then(|h| infos.iter().find(|i| i.rs.pod_hash() == Some(h.as_str())));
    let name = run.name_any();
    let by_name = || {
        infos
            .iter()
            .find(|i| i.rs.pod_hash().is_some_and(|h| name.contains(h)))
    };
    by_label.or_else(by_name).map_or(0, |i| i.revision)
}

/// Measurement counts of a run: successful, failed, inconclusive, error,
/// summed over its metric results (the run summary when there are none).
fn run_counts(run: &AnalysisRun) -> [i32; 4] {
    let Some(st) = run.status.as_ref() else {
        return [0; 4];
    };
    if st.metric_results.is_empty() {
        return st.run_summary.as_ref().map_or([0; 4], |s| {
            [s.successful, s.failed, s.inconclusive, s.error]
        });
    }
    st.metric_results.iter().fold([0; 4], |acc, m| {
        [
            acc[0] + m.successful,
            acc[1] + m.failed,
            acc[2] + m.inconclusive,
            acc[3] + m.error,
        ]
    })
}

/// Each distinct image of the ReplicaSets with pods, by image name, with
/// the tags of the ReplicaSets running it (merged tags are sorted).
fn images(infos: &[RsInfo]) -> Vec<(String, Vec<&'static str>)> {
    let mut out: Vec<(String, Vec<&'static str>)> = Vec::new();
    for info in infos.iter().filter(|i| i.rs.status_replicas() > 0) {
        let containers = info
            .rs
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref())
            .map(|s| s.containers.as_slice())
            .unwrap_or(&[]);
        for c in containers {
            let image = c.image.clone().unwrap_or_default();
            let tags = info.tags();
            match out.iter_mut().find(|(i, _)| *i == image) {
                Some((_, existing)) => {
                    let merged: BTreeSet<&'static str> =
                        existing.iter().chain(&tags).copied().collect();
                    *existing = merged.into_iter().collect();
                }
                None => out.push((image, tags)),
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The prefix of a child and the prefix its own children continue with.
fn branch(last: bool, parent: &str) -> (String, String) {
    if last {
        (format!("{parent}└──"), format!("{parent}   "))
    } else {
        (format!("{parent}├──"), format!("{parent}│  "))
    }
}

/// The header and the tree, as of `now`; `color` adds ANSI colours to status icons.
pub fn get_rollout(view: &RolloutView, now: Timestamp, color: bool) -> String {
    let paint = Painter { color };
    let ro = &view.rollout;
    let default = RolloutStatus::default();
    let st = ro.status.as_ref().unwrap_or(&default);
    let (phase, message) = phase(ro);
    let icon = rollout_icon(&phase);
    let infos = replica_set_infos(view);

    let mut out = String::new();
    let mut field = |label: &str, value: &str| {
        let line = format!("{label:<17}{value}");
        out.push_str(line.trim_end_matches(' '));
        out.push('\n');
    };
    field("Name:", &ro.name_any());
    field("Namespace:", ro.metadata.namespace.as_deref().unwrap_or(""));
    field("Status:", &format!("{} {phase}", paint.word(icon)));
    if !message.is_empty() {
        field("Message:", &message);
    }
    if let Some(canary) = &ro.spec.strategy.canary {
        field("Strategy:", "Canary");
        field("  Step:", &step_text(ro).unwrap_or_default());
        let set_weight = set_weight_of(ro).unwrap_or_default();
        field("  SetWeight:", &set_weight.to_string());
        let max = max_weight(ro);
        let at_step = steps::current(&canary.steps, st.current_step_index).is_some();
        let actual = if !at_step {
            max
        } else if st.available_replicas <= 0 {
            0
        } else if canary.traffic_routing.is_none() {
            infos
                .iter()
                .filter(|i| i.canary)
                .map(|i| i.rs.available() * max / st.available_replicas)
                .next_back()
                .unwrap_or(0)
        } else {
            st.canary
                .weights
                .as_ref()
                .map_or(set_weight, |w| w.canary.weight)
        };
        field("  ActualWeight:", &actual.to_string());
    } else if ro.spec.strategy.blue_green.is_some() {
        field("Strategy:", "BlueGreen");
    } else {
        field("Strategy:", "");
    }
    for (i, (image, tags)) in images(&infos).iter().enumerate() {
        let label = if i == 0 { "Images:" } else { "" };
        let value = if tags.is_empty() {
            image.clone()
        } else {
            let tags: Vec<String> = tags.iter().map(|t| paint.word(t)).collect();
            format!("{image} ({})", tags.join(", "))
        };
        field(label, &value);
    }
    field("Replicas:", "");
    field("  Desired:", &ro.spec.replicas_or_default().to_string());
    field("  Current:", &st.replicas.to_string());
    field("  Updated:", &st.updated_replicas.to_string());
    field("  Ready:", &st.ready_replicas.to_string());
    field("  Available:", &st.available_replicas.to_string());
    out.push('\n');

    let mut rows: Vec<Vec<String>> = vec![
        ["NAME", "KIND", "STATUS", "AGE", "INFO"]
            .map(String::from)
            .to_vec(),
        vec![
            format!("{ICON_ROLLOUT} {}", ro.name_any()),
            "Rollout".into(),
            format!("{} {phase}", paint.word(icon)),
            age(ro, now),
            String::new(),
        ],
    ];

    let mut runs: Vec<(i64, &AnalysisRun)> = view
        .runs
        .iter()
        .map(|r| (run_revision(r, &infos), r))
        .collect();
    runs.sort_by(|(ra, a), (rb, b)| {
        let created = |r: &AnalysisRun| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        rb.cmp(ra)
            .then_with(|| created(a).cmp(&created(b)))
            .then_with(|| b.name_any().cmp(&a.name_any()))
    });
    let revisions: BTreeSet<i64> = infos
        .iter()
        .map(|i| i.revision)
        .chain(runs.iter().map(|(r, _)| *r))
        .collect();

    for (n, revision) in revisions.iter().rev().enumerate() {
        let (prefix, sub) = branch(n + 1 == revisions.len(), "");
        rows.push(vec![
            format!("{prefix}{ICON_REVISION} revision:{revision}"),
            String::new(),
            " ".into(),
            String::new(),
            String::new(),
        ]);
        let rs_here: Vec<&RsInfo> = infos.iter().filter(|i| i.revision == *revision).collect();
        let runs_here: Vec<&AnalysisRun> = runs
            .iter()
            .filter(|(r, _)| r == revision)
            .map(|(_, run)| *run)
            .collect();
        let total = rs_here.len() + runs_here.len();
        for (k, info) in rs_here.iter().enumerate() {
            let (prefix, sub) = branch(k + 1 == total, &sub);
            replica_set_rows(&mut rows, info, &prefix, &sub, now, paint);
        }
        for (k, run) in runs_here.iter().enumerate() {
            let (prefix, _) = branch(rs_here.len() + k + 1 == total, &sub);
            rows.push(analysis_run_row(run, &prefix, now, paint));
        }
    }
    out.push_str(&tabulate(&rows));
    out
}

fn replica_set_rows(
    rows: &mut Vec<Vec<String>>,
    info: &RsInfo,
    prefix: &str,
    sub: &str,
    now: Timestamp,
    paint: Painter,
) {
    let mut name = info.rs.name_any();
    let mut cols: Vec<String> = Vec::new();
    let mut tag = |on: bool, t: &str, name: &mut String| {
        if on {
            cols.push(paint.word(t));
            *name = paint.as_(name, t);
        }
    };
    tag(info.stable, TAG_STABLE, &mut name);
    if info.canary {
        tag(true, TAG_CANARY, &mut name);
    } else if info.active {
        tag(true, TAG_ACTIVE, &mut name);
    } else if info.preview {
        tag(true, TAG_PREVIEW, &mut name);
    }
    tag(info.ping, TAG_PING, &mut name);
    tag(info.pong, TAG_PONG, &mut name);
    if let Some(deadline) = scale_down_deadline(info.rs) {
        let delay = if deadline < now {
            "passed".to_string()
        } else {
            human_duration(deadline.duration_since(now).as_secs())
        };
        cols.push(format!("delay:{delay}"));
    }
    rows.push(vec![
        format!("{prefix}{ICON_REPLICA_SET} {name}"),
        "ReplicaSet".into(),
        format!(
            "{} {}",
            paint.word(replica_set_icon(info.status)),
            info.status
        ),
        age(info.rs, now),
        cols.join(","),
    ]);
    for (k, pod) in info.pods.iter().enumerate() {
        let (prefix, _) = branch(k + 1 == info.pods.len(), sub);
        let p = pod_info(pod);
        let mut cols = vec![format!("ready:{}", p.ready)];
        if p.restarts > 0 {
            cols.push(format!("restarts:{}", p.restarts));
        }
        rows.push(vec![
            format!("{prefix}{ICON_POD} {}", pod.name_any()),
            "Pod".into(),
            format!("{} {}", paint.word(pod_icon(&p.status)), p.status),
            age(*pod, now),
            cols.join(","),
        ]);
    }
}

fn analysis_run_row(
    run: &AnalysisRun,
    prefix: &str,
    now: Timestamp,
    paint: Painter,
) -> Vec<String> {
    let phase = run.status.as_ref().and_then(|s| s.phase);
    let status = phase.map(analysis_phase_str).unwrap_or("");
    let counts = run_counts(run);
    let cols: Vec<String> = [ICON_OK, ICON_BAD, ICON_UNKNOWN, ICON_WARNING]
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(icon, n)| format!("{} {n}", paint.word(icon)))
        .collect();
    vec![
        format!(
            "{prefix}{ICON_ANALYSIS} {}",
            paint.as_(&run.name_any(), status)
        ),
        "AnalysisRun".into(),
        format!("{} {status}", paint.word(analysis_icon(phase))),
        age(run, now),
        cols.join(","),
    ]
}

/// The `list rollouts` table; with `all_namespaces` a NAMESPACE column comes first.
pub fn list_rollouts(rollouts: &[Rollout], all_namespaces: bool) -> String {
    let mut sorted: Vec<&Rollout> = rollouts.iter().collect();
    sorted.sort_by(|a, b| {
        a.metadata
            .namespace
            .cmp(&b.metadata.namespace)
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    // The plugin pads each value to about its header's width before the
    // tabwriter aligns the columns.
    const MIN_WIDTHS: [usize; 9] = [10, 9, 12, 4, 10, 5, 7, 10, 9];
    const NAMESPACE_MIN_WIDTH: usize = 9;
    let header = [
        "NAME",
        "STRATEGY",
        "STATUS",
        "STEP",
        "SET-WEIGHT",
        "READY",
        "DESIRED",
        "UP-TO-DATE",
        "AVAILABLE",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut head: Vec<String> = header.map(String::from).to_vec();
    if all_namespaces {
        head.insert(0, "NAMESPACE".into());
    }
    rows.push(head);
    for ro in sorted {
        let default = RolloutStatus::default();
        let st = ro.status.as_ref().unwrap_or(&default);
        let strategy = if ro.spec.strategy.canary.is_some() {
            "Canary"
        } else if ro.spec.strategy.blue_green.is_some() {
            "BlueGreen"
        } else {
            "unknown"
        };
        let values = [
            ro.name_any(),
            strategy.to_string(),
            phase(ro).0,
            step_text(ro).unwrap_or_else(|| "-".into()),
            set_weight_of(ro).map_or_else(|| "-".into(), |w| w.to_string()),
            format!("{}/{}", st.ready_replicas, st.replicas),
            ro.spec.replicas_or_default().to_string(),
            st.updated_replicas.to_string(),
            st.available_replicas.to_string(),
        ];
        let mut row: Vec<String> = values
            .iter()
            .zip(MIN_WIDTHS)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        if all_namespaces {
            let ns = ro.metadata.namespace.as_deref().unwrap_or("");
            row.insert(0, format!("{ns:<NAMESPACE_MIN_WIDTH$}"));
        }
        rows.push(row);
    }
    tabulate(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const NOW: i64 = 1_750_000_000;

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).unwrap()
    }
    /// RFC 3339 time `secs` before NOW (negative: after).
    fn ago(secs: i64) -> String {
        Timestamp::from_second(NOW - secs).unwrap().to_string()
    }

    fn rollout(name: &str, ns: &str, created_ago: i64, spec: Value, status: Value) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {
                "name": name, "namespace": ns, "uid": format!("uid-{name}"),
                "generation": 3, "creationTimestamp": ago(created_ago),
            },
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    struct Rs<'a> {
        name: &'a str,
        hash: &'a str,
        revision: i64,
        spec: i32,
        replicas: i32,
        available: i32,
        image: &'a str,
        created_ago: i64,
    }

    fn rs(r: Rs, annotations: &[(&str, String)]) -> ReplicaSet {
        let mut ann = serde_json::Map::new();
        ann.insert(REVISION_ANNOTATION.into(), json!(r.revision.to_string()));
        for (k, v) in annotations {
            ann.insert(k.to_string(), json!(v));
        }
        serde_json::from_value(json!({
            "metadata": {
                "name": r.name, "uid": format!("uid-{}", r.name), "generation": 1,
                "creationTimestamp": ago(r.created_ago),
                "labels": { POD_TEMPLATE_HASH_LABEL: r.hash },
                "annotations": ann,
            },
            "spec": {
                "replicas": r.spec,
                "selector": { "matchLabels": { POD_TEMPLATE_HASH_LABEL: r.hash } },
                "template": { "spec": { "containers": [{ "name": "app", "image": r.image }] } },
            },
            "status": {
                "replicas": r.replicas, "readyReplicas": r.available,
                "availableReplicas": r.available, "observedGeneration": 1,
            },
        }))
        .unwrap()
    }

    /// A container status: running and ready, or waiting with a reason.
    fn container(ready: bool, waiting: Option<&str>, restarts: i32) -> Value {
        let state = match waiting {
            Some(reason) => json!({ "waiting": { "reason": reason } }),
            None => json!({ "running": { "startedAt": ago(60) } }),
        };
        json!({
            "name": "app", "image": "app", "imageID": "", "ready": ready,
            "restartCount": restarts, "state": state,
        })
    }

    /// A pod of ReplicaSet `rs` (owned by uid when `owned`, else only
    /// labelled with the hash).
    fn pod(name: &str, rs: &str, hash: &str, owned: bool, created_ago: i64, c: Value) -> Pod {
        let owners = if owned {
            json!([{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                     "uid": format!("uid-{rs}"), "controller": true }])
        } else {
            json!([])
        };
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "creationTimestamp": ago(created_ago),
                "labels": { POD_TEMPLATE_HASH_LABEL: hash },
                "ownerReferences": owners,
            },
            "spec": { "containers": [{ "name": "app" }] },
            "status": { "phase": "Running", "containerStatuses": [c] },
        }))
        .unwrap()
    }

    fn run(name: &str, created_ago: i64, meta: Value, phase: &str, results: Value) -> AnalysisRun {
        let mut metadata = json!({ "name": name, "creationTimestamp": ago(created_ago) });
        metadata
            .as_object_mut()
            .unwrap()
            .extend(meta.as_object().unwrap().clone());
        serde_json::from_value(json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisRun",
            "metadata": metadata,
            "spec": { "metrics": [] },
            "status": { "phase": phase, "metricResults": results },
        }))
        .unwrap()
    }

    fn rev_annotation(rev: i64) -> Value {
        json!({ "annotations": { REVISION_ANNOTATION: rev.to_string() } })
    }

    /// Canary paused at step 1 of 8: stable RS with 5 pods (one of them
    /// terminating), canary RS with 1 pod, one running AnalysisRun.
    fn paused_canary() -> RolloutView {
        let steps: Vec<Value> = [20, 40, 60, 80]
            .iter()
            .enumerate()
            .flat_map(|(i, w)| {
                let pause = if i == 0 {
                    json!({ "pause": {} })
                } else {
                    json!({ "pause": { "duration": "10s" } })
                };
                [json!({ "setWeight": w }), pause]
            })
            .collect();
        let rollout = rollout(
            "guestbook",
            "default",
            604_800,
            json!({
                "replicas": 5,
                "strategy": { "canary": { "steps": steps } },
            }),
            json!({
                "phase": "Paused", "message": "CanaryPauseStep",
                "observedGeneration": "3",
                "currentStepIndex": 1,
                "stableRS": "6c5f4b9d8", "currentPodHash": "7d9f8c6b5",
                "controllerPause": true,
                "pauseConditions": [{ "reason": "CanaryPauseStep", "startTime": ago(250) }],
                "replicas": 5, "updatedReplicas": 1, "readyReplicas": 5, "availableReplicas": 5,
            }),
        );
        let stable = Rs {
            name: "guestbook-6c5f4b9d8",
            hash: "6c5f4b9d8",
            revision: 1,
            spec: 4,
            replicas: 4,
            available: 4,
            image: "argoproj/rollouts-demo:blue",
            created_ago: 604_800,
        };
        let canary = Rs {
            name: "guestbook-7d9f8c6b5",
            hash: "7d9f8c6b5",
            revision: 2,
            spec: 1,
            replicas: 1,
            available: 1,
            image: "argoproj/rollouts-demo:yellow",
            created_ago: 300,
        };
        let stable_pod = |suffix: &str, c: Value| {
            pod(
                &format!("guestbook-6c5f4b9d8-{suffix}"),
                "guestbook-6c5f4b9d8",
                "6c5f4b9d8",
                true,
                604_000,
                c,
            )
        };
        let mut terminating = stable_pod("wm6jd", container(false, None, 0));
        terminating.metadata.deletion_timestamp = Some(Time(now()));
        RolloutView {
            rollout,
            // deliberately not in display order
            replica_sets: vec![rs(stable, &[]), rs(canary, &[])],
            pods: vec![
                terminating,
                stable_pod("q5rtz", container(true, None, 0)),
                pod(
                    "guestbook-7d9f8c6b5-x4k2m",
                    "guestbook-7d9f8c6b5",
                    "7d9f8c6b5",
                    true,
                    290,
                    container(true, None, 0),
                ),
                stable_pod("c9lmv", container(true, None, 2)),
                stable_pod("8hw4n", container(true, None, 0)),
                stable_pod("2xkqp", container(true, None, 0)),
            ],
            runs: vec![run(
                "guestbook-7d9f8c6b5-2-1",
                200,
                rev_annotation(2),
                "Running",
                json!([{ "name": "success-rate", "phase": "Running",
                         "count": 3, "successful": 2, "failed": 1 }]),
            )],
        }
    }

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn paused_canary_snapshot() {
        let expected = "\
Name:            guestbook
Namespace:       default
Status:          ॥ Paused
Message:         CanaryPauseStep
Strategy:        Canary
  Step:          1/8
  SetWeight:     20
  ActualWeight:  20
Images:          argoproj/rollouts-demo:blue (stable)
                 argoproj/rollouts-demo:yellow (canary)
Replicas:
  Desired:       5
  Current:       5
  Updated:       1
  Ready:         5
  Available:     5

NAME                                  KIND         STATUS         AGE    INFO
⟳ guestbook                           Rollout      ॥ Paused       7d
├──# revision:2
│  ├──⧉ guestbook-7d9f8c6b5           ReplicaSet   ✔ Healthy      5m     canary
│  │  └──□ guestbook-7d9f8c6b5-x4k2m  Pod          ✔ Running      4m50s  ready:1/1
│  └──α guestbook-7d9f8c6b5-2-1       AnalysisRun  ◌ Running      3m20s  ✔ 2,✖ 1
└──# revision:1
   └──⧉ guestbook-6c5f4b9d8           ReplicaSet   ✔ Healthy      7d     stable
      ├──□ guestbook-6c5f4b9d8-2xkqp  Pod          ✔ Running      6d23h  ready:1/1
      ├──□ guestbook-6c5f4b9d8-8hw4n  Pod          ✔ Running      6d23h  ready:1/1
      ├──□ guestbook-6c5f4b9d8-c9lmv  Pod          ✔ Running      6d23h  ready:1/1,restarts:2
      ├──□ guestbook-6c5f4b9d8-q5rtz  Pod          ✔ Running      6d23h  ready:1/1
      └──□ guestbook-6c5f4b9d8-wm6jd  Pod          ◌ Terminating  6d23h  ready:0/1
";
        assert_eq!(get_rollout(&paused_canary(), now(), false), expected);
    }

    /// Blue-green after promotion: the new ReplicaSet is stable and active
    /// (preview points at it too), the old one waits out its scale-down delay.
    fn healthy_blue_green() -> RolloutView {
        let rollout = rollout(
            "bg",
            "shop",
            51 * 3600,
            json!({
                "replicas": 2,
                "strategy": { "blueGreen": { "activeService": "bg", "previewService": "bg-preview" } },
            }),
            json!({
                "phase": "Healthy", "observedGeneration": "3",
                "stableRS": "5b8c9f7d6", "currentPodHash": "5b8c9f7d6",
                "blueGreen": { "activeSelector": "5b8c9f7d6", "previewSelector": "5b8c9f7d6" },
                "replicas": 4, "updatedReplicas": 2, "readyReplicas": 4, "availableReplicas": 2,
            }),
        );
        let new = Rs {
            name: "bg-5b8c9f7d6",
            hash: "5b8c9f7d6",
            revision: 2,
            spec: 2,
            replicas: 2,
            available: 2,
            image: "nginx:1.27",
            created_ago: 600,
        };
        let old = Rs {
            name: "bg-84f6d6c8b",
            hash: "84f6d6c8b",
            revision: 1,
            spec: 2,
            replicas: 2,
            available: 2,
            image: "nginx:1.26",
            created_ago: 51 * 3600,
        };
        let deadline = [(
            crate::rollout::plan::replica_set::SCALE_DOWN_DEADLINE_ANNOTATION,
            ago(-25),
        )];
        let running = || container(true, None, 0);
        RolloutView {
            rollout,
            replica_sets: vec![rs(old, &deadline), rs(new, &[])],
            pods: vec![
                pod(
                    "bg-5b8c9f7d6-r7d4n",
                    "bg-5b8c9f7d6",
                    "5b8c9f7d6",
                    true,
                    590,
                    running(),
                ),
                pod(
                    "bg-5b8c9f7d6-k2x9p",
                    "bg-5b8c9f7d6",
                    "5b8c9f7d6",
                    true,
                    590,
                    running(),
                ),
                // matched by the hash label alone
                pod(
                    "bg-84f6d6c8b-5tq8w",
                    "",
                    "84f6d6c8b",
                    false,
                    183_000,
                    running(),
                ),
                pod(
                    "bg-84f6d6c8b-h3m2z",
                    "",
                    "84f6d6c8b",
                    false,
                    183_000,
                    running(),
                ),
                // belongs to no ReplicaSet of this Rollout: not shown
                pod("other-1", "", "0000000", false, 10, running()),
            ],
            runs: vec![],
        }
    }

    #[test]
    fn healthy_blue_green_snapshot() {
        let expected = "\
Name:            bg
Namespace:       shop
Status:          ✔ Healthy
Strategy:        BlueGreen
Images:          nginx:1.26
                 nginx:1.27 (stable, active)
Replicas:
  Desired:       2
  Current:       4
  Updated:       2
  Ready:         4
  Available:     2

NAME                           KIND        STATUS     AGE    INFO
⟳ bg                           Rollout     ✔ Healthy  2d3h
├──# revision:2
│  └──⧉ bg-5b8c9f7d6           ReplicaSet  ✔ Healthy  10m    stable,active
│     ├──□ bg-5b8c9f7d6-k2x9p  Pod         ✔ Running  9m50s  ready:1/1
│     └──□ bg-5b8c9f7d6-r7d4n  Pod         ✔ Running  9m50s  ready:1/1
└──# revision:1
   └──⧉ bg-84f6d6c8b           ReplicaSet  ✔ Healthy  2d3h   delay:25s
      ├──□ bg-84f6d6c8b-5tq8w  Pod         ✔ Running  2d2h   ready:1/1
      └──□ bg-84f6d6c8b-h3m2z  Pod         ✔ Running  2d2h   ready:1/1
";
        assert_eq!(get_rollout(&healthy_blue_green(), now(), false), expected);
    }

    /// Canary with nginx routing, aborted at revision 4: the canary pod
    /// crash-loops, its step analysis failed, the canary ReplicaSet's
    /// scale-down deadline has passed; an older revision is scaled down.
    fn aborted_canary() -> RolloutView {
        let rollout = rollout(
            "api",
            "prod",
            30 * 86_400,
            json!({
                "replicas": 2,
                "strategy": { "canary": {
                    "canaryService": "api-canary", "stableService": "api-stable",
                    "trafficRouting": { "nginx": { "stableIngress": "api" } },
                    "steps": [
                        { "setWeight": 10 }, { "pause": { "duration": 60 } },
                        { "setWeight": 50 }, { "pause": {} },
                    ],
                } },
            }),
            json!({
                "phase": "Degraded",
                "message": "RolloutAborted: Rollout aborted update to revision 4",
                "observedGeneration": "3",
                "abort": true, "abortedAt": ago(300),
                "currentStepIndex": 0,
                "stableRS": "5d4c8b7f9", "currentPodHash": "7f9d8b6c5",
                "canary": { "weights": {
                    "canary": { "weight": 0, "serviceName": "api-canary", "podTemplateHash": "7f9d8b6c5" },
                    "stable": { "weight": 100, "serviceName": "api-stable", "podTemplateHash": "5d4c8b7f9" },
                } },
                "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2,
            }),
        );
        let canary = Rs {
            name: "api-7f9d8b6c5",
            hash: "7f9d8b6c5",
            revision: 4,
            spec: 1,
            replicas: 1,
            available: 0,
            image: "ghcr.io/acme/api:v1.5.0",
            created_ago: 400,
        };
        let stable = Rs {
            name: "api-5d4c8b7f9",
            hash: "5d4c8b7f9",
            revision: 3,
            spec: 2,
            replicas: 2,
            available: 2,
            image: "ghcr.io/acme/api:v1.4.0",
            created_ago: 10 * 86_400,
        };
        let old = Rs {
            name: "api-6b7c9d8f4",
            hash: "6b7c9d8f4",
            revision: 2,
            spec: 0,
            replicas: 0,
            available: 0,
            image: "ghcr.io/acme/api:v1.3.0",
            created_ago: 20 * 86_400,
        };
        let passed = [(
            crate::rollout::plan::replica_set::SCALE_DOWN_DEADLINE_ANNOTATION,
            ago(5),
        )];
        let running = || container(true, None, 0);
        RolloutView {
            rollout,
            replica_sets: vec![rs(old, &[]), rs(stable, &[]), rs(canary, &passed)],
            pods: vec![
                pod(
                    "api-7f9d8b6c5-j8v2c",
                    "api-7f9d8b6c5",
                    "7f9d8b6c5",
                    true,
                    395,
                    container(false, Some("CrashLoopBackOff"), 5),
                ),
                pod(
                    "api-5d4c8b7f9-n4wzp",
                    "api-5d4c8b7f9",
                    "5d4c8b7f9",
                    true,
                    863_000,
                    running(),
                ),
                pod(
                    "api-5d4c8b7f9-bx7kq",
                    "api-5d4c8b7f9",
                    "5d4c8b7f9",
                    true,
                    863_000,
                    running(),
                ),
            ],
            runs: vec![
                run(
                    "api-5d4c8b7f9-3",
                    10 * 86_400,
                    rev_annotation(3),
                    "Successful",
                    json!([{ "name": "success-rate", "phase": "Successful",
                             "count": 5, "successful": 5 }]),
                ),
                // no revision annotation: found by its pod-template-hash label
                run(
                    "api-7f9d8b6c5-4-analysis",
                    350,
                    json!({ "labels": { POD_TEMPLATE_HASH_LABEL: "7f9d8b6c5" } }),
                    "Failed",
                    json!([
                        { "name": "success-rate", "phase": "Failed",
                          "count": 5, "successful": 4, "failed": 1 },
                        { "name": "latency", "phase": "Error", "count": 1, "error": 1 },
                    ]),
                ),
            ],
        }
    }

    #[test]
    fn aborted_canary_snapshot() {
        let expected = "\
Name:            api
Namespace:       prod
Status:          ✖ Degraded
Message:         RolloutAborted: Rollout aborted update to revision 4
Strategy:        Canary
  Step:          0/4
  SetWeight:     0
  ActualWeight:  0
Images:          ghcr.io/acme/api:v1.4.0 (stable)
                 ghcr.io/acme/api:v1.5.0 (canary)
Replicas:
  Desired:       2
  Current:       3
  Updated:       1
  Ready:         2
  Available:     2

NAME                              KIND         STATUS              AGE    INFO
⟳ api                             Rollout      ✖ Degraded          30d
├──# revision:4
│  ├──⧉ api-7f9d8b6c5             ReplicaSet   ◌ Progressing       6m40s  canary,delay:passed
│  │  └──□ api-7f9d8b6c5-j8v2c    Pod          ✖ CrashLoopBackOff  6m35s  ready:0/1,restarts:5
│  └──α api-7f9d8b6c5-4-analysis  AnalysisRun  ✖ Failed            5m50s  ✔ 4,✖ 1,⚠ 1
├──# revision:3
│  ├──⧉ api-5d4c8b7f9             ReplicaSet   ✔ Healthy           10d    stable
│  │  ├──□ api-5d4c8b7f9-bx7kq    Pod          ✔ Running           9d     ready:1/1
│  │  └──□ api-5d4c8b7f9-n4wzp    Pod          ✔ Running           9d     ready:1/1
│  └──α api-5d4c8b7f9-3           AnalysisRun  ✔ Successful        10d    ✔ 5
└──# revision:2
   └──⧉ api-6b7c9d8f4             ReplicaSet   • ScaledDown        20d
";
        assert_eq!(get_rollout(&aborted_canary(), now(), false), expected);
    }

    #[test]
    fn list_snapshot() {
        // out of order on purpose: rows sort by namespace, then name
        let rollouts = [
            healthy_blue_green().rollout,
            paused_canary().rollout,
            aborted_canary().rollout,
        ];
        let expected = "\
NAME        STRATEGY   STATUS        STEP  SET-WEIGHT  READY  DESIRED  UP-TO-DATE  AVAILABLE
guestbook   Canary     Paused        1/8   20          5/5    5        1           5
api         Canary     Degraded      0/4   0           2/3    2        1           2
bg          BlueGreen  Healthy       -     -           4/4    2        2           2
";
        assert_eq!(list_rollouts(&rollouts, false), expected);
        let expected = "\
NAMESPACE  NAME        STRATEGY   STATUS        STEP  SET-WEIGHT  READY  DESIRED  UP-TO-DATE  AVAILABLE
default    guestbook   Canary     Paused        1/8   20          5/5    5        1           5
prod       api         Canary     Degraded      0/4   0           2/3    2        1           2
shop       bg          BlueGreen  Healthy       -     -           4/4    2        2           2
";
        assert_eq!(list_rollouts(&rollouts, true), expected);
    }

    #[test]
    fn colour_only_when_asked() {
        for view in [paused_canary(), healthy_blue_green(), aborted_canary()] {
            let plain = get_rollout(&view, now(), false);
            assert!(!plain.contains('\x1b'), "{plain}");
            let coloured = get_rollout(&view, now(), true);
            assert!(coloured.contains("\x1b["), "{coloured}");
            // the escapes do not move the columns
            let strip = |s: &str| {
                let mut out = String::new();
                let mut chars = s.chars();
                while let Some(c) = chars.next() {
                    if c == '\x1b' {
                        chars.by_ref().find(|c| c.is_ascii_alphabetic());
                    } else {
                        out.push(c);
                    }
                }
                out
            };
            assert_eq!(strip(&coloured), plain);
        }
        let coloured = get_rollout(&aborted_canary(), now(), true);
        assert!(coloured.contains("Status:          \x1b[31m✖\x1b[0m Degraded"));
        assert!(coloured.contains("(\x1b[32mstable\x1b[0m)"));
        let list = list_rollouts(&[paused_canary().rollout], true);
        assert!(!list.contains('\x1b'));
    }

    fn header_line(view: &RolloutView, label: &str) -> String {
        get_rollout(view, now(), false)
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn weights_as_the_plugin_computes_them() {
        // Routed canary mid-way: SetWeight from the steps, ActualWeight
        // from what the router reports, else the set weight.
        let mut view = aborted_canary();
        let st = view.rollout.status.as_mut().unwrap();
        st.abort = false;
        st.current_step_index = Some(3);
        st.canary.weights.as_mut().unwrap().canary.weight = 10;
        assert_eq!(header_line(&view, "  Step:"), "  Step:          3/4");
        assert_eq!(header_line(&view, "  SetWeight:"), "  SetWeight:     50");
        assert_eq!(header_line(&view, "  ActualWeight:"), "  ActualWeight:  10");
        view.rollout.status.as_mut().unwrap().canary.weights = None;
        assert_eq!(header_line(&view, "  ActualWeight:"), "  ActualWeight:  50");
        // Past the last step: the maximum weight.
        let st = view.rollout.status.as_mut().unwrap();
        st.current_step_index = Some(4);
        let routing = view.rollout.spec.strategy.canary.as_mut().unwrap();
        routing.traffic_routing.as_mut().unwrap().max_traffic_weight = Some(1000);
        assert_eq!(header_line(&view, "  SetWeight:"), "  SetWeight:     1000");
        assert_eq!(
            header_line(&view, "  ActualWeight:"),
            "  ActualWeight:  1000"
        );
        // Basic canary with nothing available: 0.
        let mut view = paused_canary();
        view.rollout.status.as_mut().unwrap().available_replicas = 0;
        assert_eq!(header_line(&view, "  ActualWeight:"), "  ActualWeight:  0");
        // No steps: no step count, full weight.
        let mut view = paused_canary();
        view.rollout
            .spec
            .strategy
            .canary
            .as_mut()
            .unwrap()
            .steps
            .clear();
        assert_eq!(header_line(&view, "  Step:"), "  Step:");
        assert_eq!(header_line(&view, "  SetWeight:"), "  SetWeight:     100");
        assert_eq!(
            list_rollouts(&[view.rollout], false)
                .lines()
                .nth(1)
                .unwrap(),
            "guestbook   Canary     Paused        -     100         5/5    5        1           5"
        );
    }

    #[test]
    fn blue_green_preview_and_merged_image_tags() {
        // Paused before promotion: the old ReplicaSet is stable and active,
        // the new one is the preview.
        let mut view = healthy_blue_green();
        let st = view.rollout.status.as_mut().unwrap();
        st.stable_rs = Some("84f6d6c8b".into());
        st.blue_green.active_selector = Some("84f6d6c8b".into());
        let out = get_rollout(&view, now(), false);
        assert!(
            out.contains("Images:          nginx:1.26 (stable, active)\n"),
            "{out}"
        );
        assert!(
            out.contains("                 nginx:1.27 (preview)\n"),
            "{out}"
        );
        assert!(
            out.contains("ReplicaSet  ✔ Healthy  10m    preview\n"),
            "{out}"
        );
        assert!(
            out.contains("ReplicaSet  ✔ Healthy  2d3h   stable,active,delay:25s\n"),
            "{out}"
        );

        // Canary and stable running the same image: one line, tags merged and sorted.
        let mut view = paused_canary();
        for rs in &mut view.replica_sets {
            let t = rs.spec.as_mut().unwrap().template.as_mut().unwrap();
            t.spec.as_mut().unwrap().containers[0].image = Some("demo:1".into());
        }
        let out = get_rollout(&view, now(), false);
        assert!(
            out.contains("Images:          demo:1 (canary, stable)\nReplicas:"),
            "{out}"
        );
    }

    #[test]
    fn durations_read_like_kubectl() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (10_799, "179m"),
            (10_800, "3h"),
            (12_600, "3h30m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (8 * 86_400, "8d"),
            (730 * 86_400, "2y"),
            (731 * 86_400, "2y1d"),
            (8 * 365 * 86_400, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn widths_ignore_escapes_and_count_chars() {
        assert_eq!(visible_width("\x1b[32m✔\x1b[0m ok"), 4);
        let rows = vec![
            vec!["a".to_string(), "b".into()],
            vec!["\x1b[31m✖\x1b[0m".to_string(), "c".into()],
        ];
        assert_eq!(tabulate(&rows), "a  b\n\x1b[31m✖\x1b[0m  c\n");
    }
}
