//! successCondition / failureCondition, evaluated with the expr language as
//! upstream does: `result` is the provider's value, with the helpers asInt,
//! asFloat, isNaN, isInf, isNil and default, and expr's date functions (now,
//! date, duration). Error texts follow upstream's. Also the times of a
//! Prometheus range query (`eval_time`).

use expr::{Context, Environment, Value};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value as Json;

use crate::api::analysis::{AnalysisPhase, Metric};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConditionError(pub String);

/// The measurement's phase from the metric's conditions, as upstream: no
/// condition -> Successful; success only -> Successful or Failed; failure
/// only -> Failed or Successful; both -> Failed, Successful or Inconclusive.
pub fn evaluate(metric: &Metric, result: &Json) -> Result<AnalysisPhase, ConditionError> {
    evaluate_value(metric, &to_expr(result))
}

/// [`evaluate`] for a result that JSON cannot hold, such as Prometheus'
/// NaN and ±Inf samples (upstream's `result` is then a Go float64).
pub fn evaluate_value(metric: &Metric, result: &Value) -> Result<AnalysisPhase, ConditionError> {
    let success = non_empty(metric.success_condition.as_deref());
    let failure = non_empty(metric.failure_condition.as_deref());
    let eval = |kind: &str, cond: &str| {
        eval_value(result, cond).map_err(|e| {
            let why = if nil_or_empty(result) {
                "metric result is nil or empty: no data returned from the metric provider".into()
            } else {
                e.0
            };
            ConditionError(format!("could not evaluate {kind} \"{cond}\": {why}"))
        })
    };
    let s = success.map(|c| eval("successCondition", c)).transpose()?;
    let f = failure.map(|c| eval("failureCondition", c)).transpose()?;
    let (s, f) = match (s, f) {
        (None, None) => return Ok(AnalysisPhase::Successful),
        (Some(s), None) => (s, !s),
        (None, Some(f)) => (!f, f),
        (Some(s), Some(f)) => (s, f),
    };
    Ok(if f {
        AnalysisPhase::Failed
    } else if !s {
        AnalysisPhase::Inconclusive
    } else {
        AnalysisPhase::Successful
    })
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.trim().is_empty())
}

fn nil_or_empty(v: &Value) -> bool {
    matches!(v, Value::Nil) || matches!(v, Value::Array(a) if a.is_empty())
}

/// Why a condition cannot even be compiled (a syntax error, a range that
/// is not allowed), if it cannot: such a metric could only ever measure
/// Error.
pub fn compile_error(condition: &str) -> Option<String> {
    if condition.trim().is_empty() {
        return None;
    }
    if let Err(e) = check_limits(condition) {
        return Some(e.0);
    }
    match guarded(|| expr::compile(condition)) {
        Ok(compiled) => compiled.err().map(|e| first_line(&e)),
        Err(e) => Some(e.0),
    }
}

/// How deep `[` may nest. expr-lang's parser backtracks on nested index
/// expressions: `x[a[a[...]]]` takes twice as long with each level (about
/// 40 s at 16, found by fuzzing), so a condition could stall a worker.
const MAX_BRACKET_DEPTH: usize = 5;

/// What expr-lang cannot be trusted with, checked on the text before it
/// parses it: unbounded ranges and deeply nested brackets.
fn check_limits(condition: &str) -> Result<(), ConditionError> {
    let chars: Vec<char> = condition.chars().collect();
    let code = outside_strings(&chars);
    check_ranges(&chars, &code)?;
    check_nesting(&chars, &code)
}

/// For each character, whether it is code rather than part of a string
/// literal (quotes included); `\` escapes, except in backquotes.
fn outside_strings(chars: &[char]) -> Vec<bool> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    chars
        .iter()
        .map(|&c| {
            match quote {
                Some(_) if escaped => escaped = false,
                Some(q) if c == '\\' && q != '`' => escaped = true,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if matches!(c, '"' | '\'' | '`') => quote = Some(c),
                None => return true,
            }
            false
        })
        .collect()
}

/// Refuses a condition whose `[` (outside string literals) nest deeper
/// than [`MAX_BRACKET_DEPTH`].
fn check_nesting(chars: &[char], code: &[bool]) -> Result<(), ConditionError> {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for (c, _) in chars.iter().zip(code).filter(|(_, code)| **code) {
        match c {
            '[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_BRACKET_DEPTH {
        return Err(ConditionError(format!(
            "brackets may nest at most {MAX_BRACKET_DEPTH} deep, not {deepest}"
        )));
    }
    Ok(())
}

/// Runs expr-lang, turning a panic of its own (it has some, such as on a
/// map literal inside a map literal) into an error on the measurement
/// instead of a crash of the controller.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, ConditionError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown");
        ConditionError(format!(
            "the expression library failed on this condition: {why}"
        ))
    })
}

/// The most items a range (`a..b`) may have: Go's expr refuses to build
/// more (its memory budget).
const MAX_RANGE_ITEMS: i128 = 1_000_000;

/// expr-lang builds a range in memory whatever its size, so a condition
/// such as `len(0..3000000000) > 0` would abort the whole controller on a
/// failed allocation. Each `..` outside a string literal must therefore
/// join two integer literals at most [`MAX_RANGE_ITEMS`] apart. A lexical
/// check, on purpose: bounds computed at run time cannot be bounded here.
fn check_ranges(chars: &[char], code: &[bool]) -> Result<(), ConditionError> {
    let refuse = |what: String| {
        ConditionError(format!(
            "ranges need integer literal bounds at most {MAX_RANGE_ITEMS} items apart (such as 1..10), not {what:?}"
        ))
    };
    let mut i = 0;
    while i < chars.len() {
        if !code[i] || chars[i] != '.' || chars.get(i + 1) != Some(&'.') {
            i += 1;
            continue;
        }
        // The literal before the "..": digits, maybe a minus, not part
        // of a name.
        let mut start = i;
        while start > 0 && chars[start - 1] == ' ' {
            start -= 1;
        }
        let end_left = start;
        while start > 0 && chars[start - 1].is_ascii_digit() {
            start -= 1;
        }
        let digits_left = start < end_left;
        if start > 0 && chars[start - 1] == '-' {
            start -= 1;
        }
        let named = start > 0
            && (chars[start - 1].is_alphanumeric()
                || chars[start - 1] == '_'
                || chars[start - 1] == '.');
        // The literal after it.
        let mut end = i + 2;
        while chars.get(end) == Some(&' ') {
            end += 1;
        }
        let begin_right = end;
        if chars.get(end) == Some(&'-') {
            end += 1;
        }
        let digits_start = end;
        while chars.get(end).is_some_and(char::is_ascii_digit) {
            end += 1;
        }
        let digits_right = end > digits_start;
        let trailing = chars
            .get(end)
            .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '.');
        let text: String = chars[start..end.min(chars.len())].iter().collect();
        if !digits_left || named || !digits_right || trailing {
            return Err(refuse(text));
        }
        let left: String = chars[start..end_left].iter().collect();
        let right: String = chars[begin_right..end].iter().collect();
        let (Ok(a), Ok(b)) = (left.trim().parse::<i128>(), right.trim().parse::<i128>()) else {
            return Err(refuse(text));
        };
        if b.saturating_sub(a) >= MAX_RANGE_ITEMS {
            return Err(refuse(text));
        }
        i = end;
    }
    Ok(())
}

/// Evaluates one condition; it must yield a bool.
pub fn eval_condition(result: &Json, condition: &str) -> Result<bool, ConditionError> {
    eval_value(&to_expr(result), condition)
}

fn eval_value(result: &Value, condition: &str) -> Result<bool, ConditionError> {
    check_limits(condition)?;
    let program =
        guarded(|| expr::compile(condition))?.map_err(|e| ConditionError(first_line(&e)))?;
    let mut ctx = Context::default();
    ctx.insert("result", result.clone());
    match guarded(|| env(result).run(&program, &ctx))? {
        Ok(Value::Bool(b)) => Ok(b),
        Ok(other) => Err(ConditionError(format!(
            "expected bool, but got {}",
            go_type(&other)
        ))),
        Err(e) => Err(ConditionError(first_line(&e))),
    }
}

/// Evaluates an expression that must yield a point in time, such as
/// `now() - duration("1h")` (a Prometheus range query's start and end), as
/// upstream's `EvalTime`: expr's date functions plus isNaN and isInf.
pub fn eval_time(expression: &str) -> Result<Timestamp, ConditionError> {
    check_limits(expression)?;
    let program =
        guarded(|| expr::compile(expression))?.map_err(|e| ConditionError(first_line(&e)))?;
    let mut env = Environment::new();
    add_float_checks(&mut env);
    match guarded(|| env.run(&program, &Context::default()))? {
        Ok(v) => match v.as_datetime() {
            Some(t) => i32::try_from(t.timestamp_subsec_nanos())
                .ok()
                .and_then(|nanos| Timestamp::new(t.timestamp(), nanos).ok())
                .ok_or_else(|| ConditionError(format!("time {t} is out of range"))),
            None => Err(ConditionError(format!(
                "expected time.Time, but got {}",
                go_type(&v)
            ))),
        },
        Err(e) => Err(ConditionError(first_line(&e))),
    }
}

/// An error on one line. A parse error is a drawing over several lines
/// (`--> 1:10`, the text, a caret, `= expected ...`): it becomes
/// "expected ... at 1:10"; anything else has its lines joined.
fn first_line(e: &expr::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let at = lines.iter().find_map(|l| l.strip_prefix("--> "));
    let what = lines.iter().find_map(|l| l.strip_prefix("= "));
    match (what, at) {
        (Some(what), Some(at)) => format!("{what} at {at}"),
        _ => lines.join(" "),
    }
}

fn env(result: &Value) -> Environment<'static> {
    let mut env = Environment::new();
    env.add_function("asInt", |c| match c.args.as_slice() {
        [Value::Integer(i)] => Ok(Value::Integer(*i)),
        [Value::Float(f)] => Ok(Value::Integer(*f as i64)),
        [Value::String(s)] => s
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|e| expr::Error::ExprError(format!("asInt({s:?}): {e}"))),
        [v] => Err(expr::Error::ExprError(format!(
            "asInt() not supported on {} {v}",
            go_type(v)
        ))),
        _ => Err(expr::Error::ExprError("asInt takes one argument".into())),
    });
    env.add_function("asFloat", |c| match c.args.as_slice() {
        [Value::Integer(i)] => Ok(Value::Float(*i as f64)),
        [Value::Float(f)] => Ok(Value::Float(*f)),
        [Value::String(s)] => s
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|e| expr::Error::ExprError(format!("asFloat({s:?}): {e}"))),
        [v] => Err(expr::Error::ExprError(format!(
            "asFloat() not supported on {} {v}",
            go_type(v)
        ))),
        _ => Err(expr::Error::ExprError("asFloat takes one argument".into())),
    });
    add_float_checks(&mut env);
    // As upstream, isNil and default look at `result` itself, whatever
    // their first argument is.
    let nil = matches!(result, Value::Nil);
    env.add_function("isNil", move |_| Ok(Value::Bool(nil)));
    let value = result.clone();
    env.add_function("default", move |c| match c.args.as_slice() {
        [_, d] => Ok(if nil { d.clone() } else { value.clone() }),
        _ => Err(expr::Error::ExprError("default takes two arguments".into())),
    });
    env
}

fn add_float_checks(env: &mut Environment<'static>) {
    env.add_function("isNaN", |c| match c.args.as_slice() {
        [Value::Float(f)] => Ok(Value::Bool(f.is_nan())),
        [_] => Ok(Value::Bool(false)),
        _ => Err(expr::Error::ExprError("isNaN takes one argument".into())),
    });
    env.add_function("isInf", |c| match c.args.as_slice() {
        [Value::Float(f)] => Ok(Value::Bool(f.is_infinite())),
        [_] => Ok(Value::Bool(false)),
        _ => Err(expr::Error::ExprError("isInf takes one argument".into())),
    });
}

/// A JSON value as expr sees it.
pub fn to_expr(v: &Json) -> Value {
    match v {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(to_expr).collect()),
        Json::Object(o) => Value::Map(o.iter().map(|(k, v)| (k.clone(), to_expr(v))).collect()),
    }
}

/// Go's name for the type a value would have upstream (for "expected bool,
/// but got T").
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "int",
        Value::Float(_) => "float64",
        Value::Bool(_) => "bool",
        Value::Nil => "<nil>",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Map(_) | Value::KeyedMap(_) => "map[string]interface {}",
        Value::Bytes(_) => "[]uint8",
        Value::DateTime(_) => "time.Time",
        Value::Duration(_) => "time.Duration",
        Value::Timezone(_) => "*time.Location",
        Value::Month(_) => "time.Month",
        Value::Weekday(_) => "time.Weekday",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metric(success: Option<&str>, failure: Option<&str>) -> Metric {
        Metric {
            name: "m".into(),
            success_condition: success.map(Into::into),
            failure_condition: failure.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn phase_from_conditions_as_upstream() {
        use AnalysisPhase::*;
        let r = json!(0.95);
        let rows = [
            (None, None, Successful),
            (Some("result > 0.9"), None, Successful),
            (Some("result > 0.99"), None, Failed),
            (None, Some("result < 0.5"), Successful),
            (None, Some("result > 0.5"), Failed),
            (Some("result > 0.9"), Some("result < 0.5"), Successful),
            (Some("result > 0.99"), Some("result < 0.5"), Inconclusive),
            (Some("result > 0.9"), Some("result > 0.5"), Failed),
        ];
        for (s, f, want) in rows {
            assert_eq!(evaluate(&metric(s, f), &r), Ok(want), "{s:?} {f:?}");
        }
    }

    #[test]
    fn brackets_nested_deeper_than_the_parser_can_afford_are_refused_at_once() {
        let nested = |n: usize| format!("result{}0{} > 0", "[a".repeat(n), "]".repeat(n));
        // Five deep still compiles (as far as nesting goes).
        assert_eq!(check_limits(&nested(MAX_BRACKET_DEPTH)), Ok(()));
        let deep = nested(MAX_BRACKET_DEPTH + 1);
        let started = std::time::Instant::now();
        let err = compile_error(&deep).expect("refused");
        assert_eq!(err, "brackets may nest at most 5 deep, not 6");
        // The fuzzer's input: 100 bytes that took expr-lang 13 s to parse.
        let found = "asInisInf(t2ot(resu %o[[ZL[[((W[[[[[[[[Y[[[[Z[[[d[[[v[[[i(t(res[[[[Y[[[[[[Z[[[d[[[v[[[i(t(res[[[[one([\"";
        let e = eval_condition(&json!(1), found).expect_err("refused");
        assert!(e.0.starts_with("brackets may nest at most 5 deep"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Brackets inside string literals are text, not nesting.
        assert_eq!(
            eval_condition(&json!("[[[[[[["), r#"result == "[[[[[[[""#),
            Ok(true)
        );
    }

    #[test]
    fn a_panic_inside_the_expression_library_is_an_error_not_a_crash() {
        // expr-lang 2.1.0 reaches an `unreachable!` on a map literal in a
        // map literal (found by fuzzing).
        let e = eval_condition(&json!(1), "{a:{a:1}} != nil").expect_err("an error");
        assert!(
            e.0.starts_with("the expression library failed on this condition: "),
            "{e}"
        );
    }

    #[test]
    fn helpers_and_shapes() {
        let t = |r: Json, c: &str| eval_condition(&r, c);
        assert_eq!(t(json!([0.97, 0.1]), "result[0] >= 0.95"), Ok(true));
        assert_eq!(t(json!("3"), "asInt(result) == 3"), Ok(true));
        assert_eq!(t(json!("2.5"), "asFloat(result) > 2"), Ok(true));
        assert_eq!(t(json!(7), "asFloat(result) == 7.0"), Ok(true));
        assert_eq!(t(json!(null), "isNil(result)"), Ok(true));
        assert_eq!(t(json!(null), "default(result, 5) == 5"), Ok(true));
        assert_eq!(t(json!(2), "default(result, 5) == 2"), Ok(true));
        assert_eq!(
            t(json!({"status": "ok"}), "result.status == \"ok\""),
            Ok(true)
        );
        assert_eq!(
            t(json!([1, 2]), "len(result) == 2 && all(result, {# > 0})"),
            Ok(true)
        );
        assert_eq!(t(json!(1), "isNaN(result) || isInf(result)"), Ok(false));
    }

    #[test]
    fn times_from_expressions() {
        let at = |e: &str| eval_time(e).map(|t| t.as_second());
        assert_eq!(at(r#"date("2024-01-02T03:04:05Z")"#), Ok(1_704_164_645));
        assert_eq!(
            at(r#"date("2024-01-02T03:04:05Z") - duration("1h30m")"#),
            Ok(1_704_164_645 - 5400)
        );
        let now = Timestamp::now().as_second();
        let an_hour_ago = at(r#"now() - duration("1h")"#).unwrap();
        assert!(
            (now - 3601..=now - 3599).contains(&an_hour_ago),
            "{an_hour_ago}"
        );
        assert_eq!(
            eval_time("1.5"),
            Err(ConditionError("expected time.Time, but got float64".into()))
        );
        assert_eq!(
            eval_time(r#""now""#),
            Err(ConditionError("expected time.Time, but got string".into()))
        );
        assert!(eval_time("now(").is_err());
        assert!(eval_time("").is_err());
        // Conditions have the date functions too, as upstream's.
        assert_eq!(
            eval_condition(&json!(1), r#"now() > date("2024-01-01T00:00:00Z")"#),
            Ok(true)
        );
    }

    #[test]
    fn errors_read_like_upstream() {
        assert_eq!(
            eval_condition(&json!(41), "result + 1"),
            Err(ConditionError("expected bool, but got int".into()))
        );
        let m = metric(Some("result[0] > 1"), None);
        assert_eq!(
            evaluate(&m, &json!([])).unwrap_err().0,
            "could not evaluate successCondition \"result[0] > 1\": metric result is nil or empty: no data returned from the metric provider"
        );
        let m = metric(Some("result >"), None);
        let err = evaluate(&m, &json!(1)).unwrap_err().0;
        assert!(
            err.starts_with("could not evaluate successCondition \"result >\": "),
            "{err}"
        );
        assert!(!err.contains('\n'));
        assert_eq!(
            compile_error("result >=").as_deref(),
            Some(
                "expected conditional_if, negation_op, sign_op, value, array, map, or ident at 1:10"
            )
        );
        assert_eq!(compile_error("  "), None);
        // A range is built in memory: this one aborted the controller on
        // a failed allocation of 216 GB.
        let huge = "len(0..3000000000) > 0";
        assert_eq!(
            eval_condition(&json!(1), huge),
            Err(ConditionError(
                "ranges need integer literal bounds at most 1000000 items apart (such as 1..10), not \"0..3000000000\"".into()
            ))
        );
        assert!(compile_error(huge).is_some());
        assert!(eval_condition(&json!(5), "0..asInt(result) == []").is_err());
        assert!(eval_condition(&json!(5), "x1..5 == []").is_err());
        assert_eq!(eval_condition(&json!(3), "result in 1..5"), Ok(true));
        assert_eq!(eval_condition(&json!(3), "result in -2 .. 2"), Ok(false));
        assert_eq!(
            eval_condition(&json!("a..b"), "result == \"a..b\""),
            Ok(true)
        );
        assert_eq!(compile_error("result >= 1"), None);
        let m = metric(None, Some("asInt(result) > 1"));
        let err = evaluate(&m, &json!("abc")).unwrap_err().0;
        assert!(err.contains("asInt(\"abc\")"), "{err}");
    }
}
