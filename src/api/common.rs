//! Types shared by the Rollout and analysis kinds, and the small value
//! helpers (durations, int-or-percent) that upstream keeps in its `defaults`
//! and `timeutil` packages.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// Labels and annotations added to pods or AnalysisRuns.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateMetadata {
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A reference to an AnalysisTemplate (or ClusterAnalysisTemplate with
/// `clusterScope: true`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateRef {
    pub template_name: String,
    // Kept as written, an explicit `false` included: upstream's steps hash
    // covers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_scope: Option<bool>,
}

impl AnalysisTemplateRef {
    /// Whether this names a ClusterAnalysisTemplate.
    pub fn cluster(&self) -> bool {
        self.cluster_scope == Some(true)
    }
}

/// `fieldRef` of an argument: a JSON path into the owning object
/// (`metadata.labels['x']`, `metadata.name`, ...).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldRef {
    pub field_path: String,
}

/// Marks metrics (by name, a regular expression) as dry-run: measured but not
/// counted in the run's phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    pub metric_name: String,
}

/// How many measurements of a metric the run keeps in its status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementRetention {
    pub metric_name: String,
    pub limit: i32,
}

/// Go's `json:",omitempty"` on a number, bool or string held as is: the
/// field is left out when it holds the zero value (0, false, ""). Fields
/// without `omitempty` upstream are always written and must not use it.
pub fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// `omitempty` on a string or map that we hold as an `Option` (upstream's is
/// a plain `string` or `map`, not a pointer): left out when absent and also
/// when empty. A pointer upstream (`*string`, `*int32`) is written even when
/// it points to "" or 0, so it keeps serde's plain `Option` handling.
pub fn is_none_or_default<T: Default + PartialEq>(v: &Option<T>) -> bool {
    v.as_ref().is_none_or(is_default)
}

/// A value of an API field that is either a whole number or a percentage
/// string ("25%", or upstream's stored default "25").
pub fn int_or_percent(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, ValueError> {
    match value {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let digits = s.strip_suffix('%').unwrap_or(s);
            let pct: i64 = digits
                .trim()
                .parse()
                .map_err(|_| ValueError::Percent(s.clone()))?;
            // Checked: the percentage is any i64 the user wrote.
            let too_big = || ValueError::Percent(s.clone());
            let scaled = pct.checked_mul(i64::from(total)).ok_or_else(too_big)?;
            let v = if round_up {
                scaled.checked_add(99).ok_or_else(too_big)?.div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(v).map_err(|_| too_big())
        }
    }
}

/// Parses a step or analysis duration: an integer (seconds), a bare numeric
/// string (seconds), or a Go-style duration string such as "30s", "5m",
/// "1h30m", "500ms".
pub fn parse_duration(value: &IntOrString) -> Result<Duration, ValueError> {
    match value {
        IntOrString::Int(i) => u64::try_from(*i)
            .map(Duration::from_secs)
            .map_err(|_| ValueError::Duration(i.to_string())),
        IntOrString::String(s) => parse_duration_str(s),
    }
}

/// String form of [`parse_duration`].
pub fn parse_duration_str(s: &str) -> Result<Duration, ValueError> {
    let bad = || ValueError::Duration(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    // A duration too long for Duration (say "99999999999999999999h") is
    // an error like any other: from_secs_f64 would panic on it.
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// A malformed value in a user's object.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ValueError {
    #[error(
        "invalid duration {0:?}: use seconds (30) or a duration string (\"30s\", \"5m\", \"1h\")"
    )]
    Duration(String),
    #[error("invalid int or percentage {0:?}: use an integer (1) or a percentage (\"25%\")")]
    Percent(String),
}

/// Schema for fields we accept and store as-is but do not interpret yet
/// (other traffic routers, experiment steps, plugins). Keeping them lets an
/// Argo Rollouts manifest apply unchanged.
pub fn opaque_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_as_upstream() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(int_or_percent(&p("25%"), 10, true), Ok(3));
        assert_eq!(int_or_percent(&p("25%"), 10, false), Ok(2));
        // upstream stores its default without the percent sign
        assert_eq!(int_or_percent(&p("25"), 4, false), Ok(1));
        assert_eq!(int_or_percent(&IntOrString::Int(2), 10, false), Ok(2));
        assert!(int_or_percent(&p("abc%"), 10, false).is_err());
        assert!(int_or_percent(&p("9223372036854775807%"), 10, true).is_err());
    }

    #[test]
    fn durations() {
        let s = |v: &str| parse_duration(&IntOrString::String(v.into()));
        assert_eq!(s("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(s("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(s("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(s("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(s("10"), Ok(Duration::from_secs(10)));
        assert_eq!(s("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse_duration(&IntOrString::Int(7)),
            Ok(Duration::from_secs(7))
        );
        assert!(s("5 minutes").is_err());
        assert!(s("").is_err());
        assert!(s("m").is_err());
        assert!(parse_duration(&IntOrString::Int(-1)).is_err());
        // A pause this long panicked in validation (Duration::from_secs_f64),
        // taking the controller down with it.
        assert_eq!(
            s("99999999999999999999999h"),
            Err(ValueError::Duration("99999999999999999999999h".into()))
        );
        assert!(s("1e400s").is_err());
    }
}
