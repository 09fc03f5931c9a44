//! Go's `encoding/json` output for a Kubernetes pod template and for a
//! Rollout's canary steps, byte for byte.
//!
//! Upstream Argo Rollouts names ReplicaSets by a hash of `json.Marshal` of
//! the pod template, and records the steps it is walking by a hash of
//! `json.Marshal` of `[]CanaryStep`, so reusing upstream's ReplicaSets and
//! carrying on at upstream's step (and upstream at ours) needs the same
//! bytes. Go writes struct fields in declaration order, with
//! zero values for fields not marked `omitempty`, maps sorted by key,
//! quantities in their canonical form and `<`, `>`, `&` escaped. The field
//! order and tags come from the Go types themselves: `hack/gojson types`
//! writes them to `types.json` (upstream v1.10.2's own API types and the
//! k8s.io/api v0.34.5 it uses), and `tests/pod_template_hash.rs` compares
//! random templates and step lists with Go.
//!
//! The input is the template as serde writes it (k8s-openapi's types):
//! absent fields are Go's zero values; fields the Go types do not have are
//! dropped, as Go drops them when it reads the Rollout.

pub mod quantity;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum GoJsonError {
    #[error("{path}: expected {expected}, found {found}")]
    Type {
        path: String,
        expected: String,
        found: String,
    },
    #[error("{path}: {source}")]
    Quantity {
        path: String,
        source: quantity::QuantityError,
    },
    #[error("unknown Go type {0} (types.json out of date?)")]
    UnknownType(String),
}

impl GoJsonError {
    /// The error with `segment` (".name", "[3]") put in front of its path:
    /// paths are built only on the way out of a failure, so encoding a
    /// template allocates none.
    fn within(mut self, segment: &str) -> Self {
        match &mut self {
            GoJsonError::Type { path, .. } | GoJsonError::Quantity { path, .. } => {
                path.insert_str(0, segment);
            }
            GoJsonError::UnknownType(_) => {}
        }
        self
    }
}

#[derive(Debug, Deserialize)]
struct Types {
    roots: Roots,
    types: BTreeMap<String, TypeDef>,
}

/// The Go types encoded from outside: `corev1.PodTemplateSpec` and
/// upstream's `[]v1alpha1.CanaryStep`.
#[derive(Debug, Default, Deserialize)]
struct Roots {
    pod_template: String,
    canary_steps: String,
}

#[derive(Debug, Deserialize)]
struct TypeDef {
    #[serde(default)]
    fields: Vec<Field>,
}

#[derive(Debug, Deserialize)]
struct Field {
    name: String,
    #[serde(default)]
    omitempty: bool,
    #[serde(default)]
    omitzero: bool,
    #[serde(rename = "type")]
    ty: String,
}

static GO_TYPES: LazyLock<Types> = LazyLock::new(|| {
    // Checked by a unit test; a broken table is a build defect.
    serde_json::from_str(include_str!("types.json")).unwrap_or_else(|_| Types {
        roots: Roots::default(),
        types: BTreeMap::new(),
    })
});

/// Which Go produced the bytes: Go 1.24 with k8s.io/api v0.34 leaves out a
/// zero `creationTimestamp` (`omitzero`); older builds (upstream up to
/// v1.9) write `"creationTimestamp":null`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    OmitZero,
    BeforeOmitZero,
}

/// `json.Marshal` of a `corev1.PodTemplateSpec` given as serde's JSON.
pub fn pod_template(template: &Value, dialect: Dialect) -> Result<String, GoJsonError> {
    let types = &*GO_TYPES;
    let mut out = String::with_capacity(1024);
    Encoder { types, dialect }
        .value(template, &types.roots.pod_template, &mut out)
        .map_err(|e| e.within("template"))?;
    Ok(out)
}

/// `json.Marshal` of upstream's `[]CanaryStep` given as serde's JSON (an
/// array, or null for a Rollout without steps).
pub fn canary_steps(steps: &Value) -> Result<String, GoJsonError> {
    let types = &*GO_TYPES;
    let mut out = String::with_capacity(256);
    Encoder {
        types,
        dialect: Dialect::OmitZero,
    }
    .value(steps, &types.roots.canary_steps, &mut out)
    .map_err(|e| e.within("steps"))?;
    Ok(out)
}

struct Encoder<'a> {
    types: &'a Types,
    dialect: Dialect,
}

impl Encoder<'_> {
    fn value(&self, v: &Value, ty: &str, out: &mut String) -> Result<(), GoJsonError> {
        let wrong = |expected: &str| GoJsonError::Type {
            path: String::new(),
            expected: expected.to_string(),
            found: kind(v).to_string(),
        };
        if let Some(elem) = ty.strip_prefix("ptr:") {
            return if v.is_null() {
                out.push_str("null");
                Ok(())
            } else {
                self.value(v, elem, out)
            };
        }
        if let Some(elem) = ty.strip_prefix("slice:") {
            let Value::Array(items) = v else {
                return if v.is_null() {
                    out.push_str("null");
                    Ok(())
                } else {
                    Err(wrong("an array"))
                };
            };
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                self.value(item, elem, out)
                    .map_err(|e| e.within(&format!("[{i}]")))?;
            }
            out.push(']');
            return Ok(());
        }
        if let Some(elem) = ty.strip_prefix("map:") {
            let Value::Object(map) = v else {
                return if v.is_null() {
                    out.push_str("null");
                    Ok(())
                } else {
                    Err(wrong("an object"))
                };
            };
            // Go sorts map keys bytewise, as Rust's string order does.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(k, out);
                out.push(':');
                self.value(&map[k], elem, out)
                    .map_err(|e| e.within(&format!(".{k}")))?;
            }
            out.push('}');
            return Ok(());
        }
        match (ty, v) {
            ("string" | "bytes", Value::String(s)) => string(s, out),
            ("string" | "bytes", Value::Null) => out.push_str("\"\""),
            ("int", Value::Number(n)) if n.is_i64() || n.is_u64() => {
                let _ = write!(out, "{n}");
            }
            ("int", Value::Null) => out.push('0'),
            ("bool", Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            ("bool", Value::Null) => out.push_str("false"),
            ("quantity", Value::String(s)) => {
                let q = quantity::canonical(s).map_err(|source| GoJsonError::Quantity {
                    path: String::new(),
                    source,
                })?;
                string(&q, out);
            }
            ("quantity", Value::Number(n)) => {
                let q = quantity::canonical(&n.to_string()).map_err(|source| {
                    GoJsonError::Quantity {
                        path: String::new(),
                        source,
                    }
                })?;
                string(&q, out);
            }
            ("quantity", Value::Null) => out.push_str("\"0\""),
            ("intorstring", Value::Number(n)) if n.is_i64() || n.is_u64() => {
                let _ = write!(out, "{n}");
            }
            ("intorstring", Value::String(s)) => string(s, out),
            ("intorstring", Value::Null) => out.push('0'),
            // metav1.Time and MicroTime: RFC 3339 as read, null when zero.
            ("time" | "microtime", Value::String(s)) => string(s, out),
            ("time" | "microtime", Value::Null) => out.push_str("null"),
            ("rawjson", v) => raw(v, out),
            (struct_ty, Value::Object(_) | Value::Null) => self.structure(v, struct_ty, out)?,
            (_, _) => return Err(wrong(ty)),
        }
        Ok(())
    }

    fn structure(&self, v: &Value, ty: &str, out: &mut String) -> Result<(), GoJsonError> {
        let def = self
            .types
            .types
            .get(ty)
            .ok_or_else(|| GoJsonError::UnknownType(ty.to_string()))?;
        let empty = serde_json::Map::new();
        let obj = v.as_object().unwrap_or(&empty);
        out.push('{');
        let mut first = true;
        for f in &def.fields {
            let value = obj.get(&f.name).unwrap_or(&Value::Null);
            if f.omitempty && is_empty(value, &f.ty) {
                continue;
            }
            if f.omitzero && self.dialect == Dialect::OmitZero && self.is_zero(value, &f.ty) {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            string(&f.name, out);
            out.push(':');
            self.value(value, &f.ty, out)
                .map_err(|e| e.within(&format!(".{}", f.name)))?;
        }
        out.push('}');
        Ok(())
    }

    /// Go's reflect.Value.IsZero (or the type's IsZero method) for
    /// `omitzero`.
    fn is_zero(&self, v: &Value, ty: &str) -> bool {
        match v {
            Value::Null => true,
            Value::Object(map) if !ty.starts_with("map:") && !ty.starts_with("ptr:") => {
                self.types.types.get(ty).is_some_and(|def| {
                    def.fields
                        .iter()
                        .all(|f| self.is_zero(map.get(&f.name).unwrap_or(&Value::Null), &f.ty))
                })
            }
            Value::String(s) => ty == "string" && s.is_empty(),
            Value::Number(n) => ty == "int" && n.as_i64() == Some(0),
            Value::Bool(b) => !b,
            _ => false,
        }
    }
}

/// Go's isEmptyValue for `omitempty`: false, 0, "", nil, and empty slices
/// and maps. A struct (Quantity, IntOrString and Time included) is never
/// empty.
fn is_empty(v: &Value, ty: &str) -> bool {
    if ty.starts_with("ptr:") {
        return v.is_null();
    }
    if ty.starts_with("slice:") || ty.starts_with("map:") || ty == "bytes" {
        return match v {
            Value::Null => true,
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty(),
            Value::String(s) => s.is_empty(),
            _ => false,
        };
    }
    match ty {
        "string" => v.as_str().is_none_or(str::is_empty),
        "int" => v.is_null() || v.as_i64() == Some(0) || v.as_u64() == Some(0),
        "bool" => v.as_bool() != Some(true),
        _ => false,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON string as Go's encoder writes it, HTML-safe.
fn string(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                let b = c as u8;
                out.push_str("\\u00");
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xf)] as char);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Raw JSON (managedFields, a step plugin's config), compact, with Go's
/// string escaping.
fn raw(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                raw(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(k, out);
                out.push(':');
                raw(item, out);
            }
            out.push('}');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_type_table_reads_and_is_complete() {
        let types = &*GO_TYPES;
        assert_eq!(
            types.roots.pod_template,
            "k8s.io/api/core/v1.PodTemplateSpec"
        );
        assert_eq!(
            types.roots.canary_steps,
            "slice:github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1.CanaryStep"
        );
        let known = |t: &str| {
            let base = t.trim_start_matches("ptr:").trim_start_matches("slice:");
            let base = base.trim_start_matches("map:").trim_start_matches("ptr:");
            matches!(
                base,
                "string"
                    | "int"
                    | "bool"
                    | "bytes"
                    | "quantity"
                    | "intorstring"
                    | "time"
                    | "microtime"
                    | "rawjson"
            ) || types.types.contains_key(base)
        };
        for (name, def) in &types.types {
            for f in &def.fields {
                assert!(known(&f.ty), "{name}.{}: {}", f.name, f.ty);
            }
        }
        assert!(known(&types.roots.canary_steps));
    }

    #[test]
    fn an_error_names_the_field_it_is_in() {
        let t = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1x"}}}]}});
        let err = pod_template(&t, Dialect::OmitZero)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(
                |e| e.starts_with("template.spec.containers[0].resources.limits.cpu: ")
            ),
            "{err:?}"
        );
    }

    /// Expected bytes from Go (`hack/gojson hash` prints them).
    #[test]
    fn a_small_template_is_encoded_as_go_does() {
        let t = json!({
            "metadata": {"labels": {"b": "2", "a": "<1>"}},
            "spec": {"containers": [{"name": "app", "image": "nginx:1",
                "resources": {"limits": {"cpu": "0.5"}}}]}
        });
        assert_eq!(
            pod_template(&t, Dialect::OmitZero).unwrap_or_default(),
            r#"{"metadata":{"labels":{"a":"\u003c1\u003e","b":"2"}},"spec":{"containers":[{"name":"app","image":"nginx:1","resources":{"limits":{"cpu":"500m"}}}]}}"#
        );
        assert_eq!(
            pod_template(&t, Dialect::BeforeOmitZero).unwrap_or_default(),
            r#"{"metadata":{"creationTimestamp":null,"labels":{"a":"\u003c1\u003e","b":"2"}},"spec":{"containers":[{"name":"app","image":"nginx:1","resources":{"limits":{"cpu":"500m"}}}]}}"#
        );
    }

    /// Expected bytes from Go (`hack/gojson steps-hash` prints them).
    #[test]
    fn canary_steps_are_encoded_as_go_does() {
        let steps = json!([
            {"setWeight": 20}, {"pause": {}}, {"pause": {"duration": 30}},
            {"analysis": {"templates": [{"templateName": "a"}], "args": [{"name": "x", "value": "<y>"}]}},
            {"setCanaryScale": {"matchTrafficWeight": true}},
            {"setHeaderRoute": {"name": "h", "match": [{"headerName": "n", "headerValue": {"exact": "v"}}]}},
            {"plugin": {"name": "p", "config": {"a": "&", "b": 1}}}
        ]);
        assert_eq!(
            canary_steps(&steps).unwrap_or_default(),
            r#"[{"setWeight":20},{"pause":{}},{"pause":{"duration":30}},{"analysis":{"templates":[{"templateName":"a"}],"args":[{"name":"x","value":"\u003cy\u003e"}]}},{"setCanaryScale":{"matchTrafficWeight":true}},{"setHeaderRoute":{"name":"h","match":[{"headerName":"n","headerValue":{"exact":"v"}}]}},{"plugin":{"name":"p","config":{"a":"\u0026","b":1}}}]"#
        );
        assert_eq!(canary_steps(&Value::Null).unwrap_or_default(), "null");
    }
}
