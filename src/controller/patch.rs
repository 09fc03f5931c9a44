//! JSON merge patches (RFC 7386): the diff that turns one object into
//! another, and applying one as the API server does.

use serde_json::{Map, Value};

/// RFC 7386 JSON merge patch, as the API server applies it.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`; None when
/// they are equal. Fields missing from `new` become null, so a cleared field
/// is really removed from the stored status.
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(d) = merge_diff(ov, nv) {
                            out.insert(k.clone(), d);
                        }
                    }
                    None => {
                        out.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        _ if old == new => None,
        _ => Some(new.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::merge_diff;
    use serde_json::json;

    #[test]
    fn merge_diff_sets_changes_and_nulls_removals() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1], "gone": true});
        let new = json!({"a": 1, "b": {"c": 5, "d": 3}, "e": [1, 2], "added": "x"});
        assert_eq!(
            merge_diff(&old, &new),
            Some(json!({"b": {"c": 5}, "e": [1, 2], "added": "x", "gone": null}))
        );
        assert_eq!(merge_diff(&new, &new), None);
    }
}
