//! A scripted Kubernetes API server for unit tests of the shell: it answers
//! the requests in order from a script and records them, so a test pins
//! the exact request sequence a piece of the shell makes (as kube-rs's
//! `controller-rs` does with `tower-test`). No network: the client's
//! service is a function.
//!
//! Events (events.k8s.io) are created in the background, in no fixed order
//! with the rest: they are answered 201 without taking a script line and
//! recorded apart (`Seen::event`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
    /// An Event create (not part of the script).
    pub event: bool,
}

/// One scripted answer: the request it expects (method, path), and the
/// status and body to answer with.
type Reply = (Method, String, u16, Value);

/// What the server saw, in order.
pub type Log = Arc<Mutex<Vec<Seen>>>;

/// A server that answers the requests in order from a script of
/// (method, path, status, body), and records them. A request the script
/// does not expect gets a 500 naming it, which fails the test's assertions.
pub fn server(script: Vec<(Method, &str, u16, Value)>) -> (Client, Log) {
    let script: Arc<Mutex<VecDeque<Reply>>> = Arc::new(Mutex::new(
        script
            .into_iter()
            .map(|(m, p, s, b)| (m, p.to_string(), s, b))
            .collect(),
    ));
    let seen: Log = Arc::default();
    let log = seen.clone();
    let objects: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let service = tower::service_fn(move |req: Request<Body>| {
        let script = script.clone();
        let log = log.clone();
        let objects = objects.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body: Option<Value> = serde_json::from_slice(&bytes).ok();
            let path = parts.uri.path().to_string();
            let event = path.starts_with("/apis/events.k8s.io/");
            log.lock().unwrap().push(Seen {
                method: parts.method.clone(),
                path: path.clone(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                body: body.clone(),
                event,
            });
            let (status, answer) = if event {
                (201, body.unwrap_or(Value::Null))
            } else {
                let next = script.lock().unwrap().pop_front();
                match next {
                    Some((m, p, s, b)) if m == parts.method && p == path => {
                        (s, answer(&objects, &path, b, body.as_ref()))
                    }
                    other => (
                        500,
                        json!({"kind": "Status", "code": 500, "message": format!("unexpected {} {path}; script had {other:?}", parts.method)}),
                    ),
                }
            };
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
                    .unwrap(),
            )
        }
    });
    (Client::new(service, "ns"), seen)
}

/// A scripted answer to a patch: `base` with the request's merge patch
/// applied, at `version`, as the API server returns it. The object is
/// remembered by path (`/status` left out): `patched_again` patches it
/// further.
pub fn patched(base: Value, version: &str) -> Value {
    json!({"$patched": base, "$version": version})
}

/// A scripted answer to a patch of the object as the last `patched`
/// answer for its path left it.
pub fn patched_again(version: &str) -> Value {
    patched(Value::Null, version)
}

/// The scripted answer, patches applied (see `patched`).
fn answer(
    objects: &Mutex<HashMap<String, Value>>,
    path: &str,
    scripted: Value,
    request: Option<&Value>,
) -> Value {
    let (Some(base), Some(version)) = (scripted.get("$patched"), scripted.get("$version")) else {
        return scripted;
    };
    let object = path.trim_end_matches("/status").to_string();
    let mut objects = objects.lock().unwrap();
    let mut out = match base {
        Value::Null => objects.get(&object).cloned().unwrap_or_default(),
        base => base.clone(),
    };
    if let Some(patch) = request {
        // A precondition, not a change.
        let mut patch = patch.clone();
        if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        super::patch::merge_patch(&mut out, &patch);
    }
    out["metadata"]["resourceVersion"] = version.clone();
    objects.insert(object, out.clone());
    out
}

/// The API server's answer for an error `code`.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message})
}

/// The requests other than Events, as (method, path).
pub fn calls(seen: &Log) -> Vec<(String, String)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| !s.event)
        .map(|s| (s.method.to_string(), s.path.clone()))
        .collect()
}

/// The requests other than Events.
pub fn requests(seen: &Log) -> Vec<Seen> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| !s.event)
        .cloned()
        .collect()
}
