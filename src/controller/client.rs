//! The controller's Kubernetes client: kubeconfig or in-cluster config as
//! kubectl reads them, a client-side rate limit (`--qps`, `--burst`, like
//! client-go's), and a count of every request by resource kind, verb and
//! status code for `controller_clientset_k8s_request_total`.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, Request, Response, Uri};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tower::limit::RateLimitLayer;
use tower::{Layer, Service};

use std::sync::Arc;

/// Client-side request rate limit.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub qps: f32,
    /// Requests allowed at once before the sustained rate applies.
    pub burst: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no Kubernetes configuration found (set KUBECONFIG, use ~/.kube/config, or run in a cluster): {0}"
    )]
    Config(#[from] kube::config::InferConfigError),
    #[error("cannot use the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("cannot build a Kubernetes client from the configuration: {0}")]
    Build(#[from] kube::Error),
    #[error("--qps must be above 0 and --burst at least 1 (got qps {qps}, burst {burst})")]
    Limit { qps: f32, burst: u32 },
}

/// Where the configuration comes from: kubectl's `--kubeconfig`,
/// `--context`, `--cluster` and `--user` (upstream's controller takes
/// them too); with none, KUBECONFIG, ~/.kube/config or in-cluster.
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub cluster: Option<String>,
    pub user: Option<String>,
}

impl Source {
    async fn config(&self) -> Result<Config, Error> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        };
        let kubeconfig_error = |path: &str| {
            let path = path.to_string();
            move |source| Error::Kubeconfig { path, source }
        };
        match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(kubeconfig_error(path))?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(kubeconfig_error(path))
            }
            None if options.context.is_some()
                || options.cluster.is_some()
                || options.user.is_some() =>
            {
                Config::from_kubeconfig(&options)
                    .await
                    .map_err(kubeconfig_error("(KUBECONFIG or ~/.kube/config)"))
            }
            None => Ok(Config::infer().await?),
        }
    }
}

/// A client with the rate limit and the request counter.
/// What the client reports of each request (the metrics implement it).
pub trait Observer: Send + Sync {
    /// One request of `kind` and `verb` answered with `status` (a code, or
    /// "error") after `took`.
    fn request(&self, kind: &str, verb: &str, status: &str, took: Duration);
}

pub async fn client(
    source: &Source,
    limit: RateLimit,
    observer: Arc<dyn Observer>,
) -> Result<Client, Error> {
    if !(limit.qps > 0.0 && limit.qps.is_finite()) || limit.burst == 0 {
        return Err(Error::Limit {
            qps: limit.qps,
            burst: limit.burst,
        });
    }
    let config = source.config().await?;
    // `burst` requests per window of burst/qps seconds: on average `qps`,
    // and up to `burst` back to back after a quiet spell.
    let window = Duration::from_secs_f64(f64::from(limit.burst) / f64::from(limit.qps));
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&CountLayer(observer))
        .with_layer(&RateLimitLayer::new(u64::from(limit.burst), window))
        .build())
}

/// How a request is counted: (resource kind, verb).
pub fn classify(method: &Method, uri: &Uri) -> (String, &'static str) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let rest = match rest {
        ["namespaces", _, resource, more @ ..] => {
            let mut r = vec![*resource];
            r.extend(more);
            r
        }
        other => other.to_vec(),
    };
    let Some(kind) = rest.first() else {
        return ("Unknown".into(), "Unknown");
    };
    let named = rest.len() >= 2;
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        Method::GET if watch => "Watch",
        Method::GET if named => "Get",
        Method::GET => "List",
        Method::POST => "Create",
        Method::PUT => "Update",
        Method::PATCH => "Patch",
        Method::DELETE => "Delete",
        _ => "Unknown",
    };
    (kind.to_string(), verb)
}

/// Counts requests into the metrics.
#[derive(Clone)]
struct CountLayer(Arc<dyn Observer>);

impl<S> Layer<S> for CountLayer {
    type Service = Count<S>;
    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Count<S> {
    inner: S,
    metrics: Arc<dyn Observer>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Count<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (kind, verb) = classify(request.method(), request.uri());
        let metrics = self.metrics.clone();
        let started = std::time::Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let status = match &result {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            metrics.request(&kind, verb, &status, started.elapsed());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: Method, uri: &str) -> (String, &'static str) {
        classify(&method, &uri.parse().unwrap())
    }

    #[test]
    fn requests_are_counted_by_kind_and_verb() {
        assert_eq!(
            c(
                Method::GET,
                "/apis/argoproj.io/v1alpha1/namespaces/a/rollouts/web"
            ),
            ("rollouts".into(), "Get")
        );
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/argoproj.io/v1alpha1/namespaces/a/rollouts/web/status"
            ),
            ("rollouts".into(), "Patch")
        );
        assert_eq!(
            c(
                Method::GET,
                "/apis/apps/v1/replicasets?labelSelector=x&watch=true"
            ),
            ("replicasets".into(), "Watch")
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/a/services?limit=1"),
            ("services".into(), "List")
        );
        assert_eq!(
            c(Method::POST, "/api/v1/namespaces/a/events"),
            ("events".into(), "Create")
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/a"),
            ("namespaces".into(), "Get")
        );
        assert_eq!(c(Method::GET, "/version"), ("Unknown".into(), "Unknown"));
    }
}
