//! The HTTP endpoints of the controller process, on upstream's ports:
//! `/metrics` (Prometheus text, port 8090) and `/healthz`, `/readyz`
//! (port 8080). Standby replicas serve them too.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::manager::Health;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Both listeners, bound (so a port in use fails at startup, not later).
pub struct Listeners {
    metrics: TcpListener,
    health: TcpListener,
}

impl Listeners {
    pub async fn bind(metrics: SocketAddr, health: SocketAddr) -> Result<Self, Error> {
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { what, addr, source })
        };
        Ok(Listeners {
            metrics: bind("metrics", metrics).await?,
            health: bind("health checks", health).await?,
        })
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        metrics: Metrics,
        health: Health,
        shutdown: impl Future<Output = ()> + Send + Clone + 'static,
    ) {
        let metrics_app = Router::new().route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    // Written on a blocking thread and sent as it is written: the
                    // page of 10,000 Rollouts is some 20 MB, never held whole.
                    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, Infallible>>(2);
                    tokio::task::spawn_blocking(move || {
                        metrics.render_chunks(&mut |chunk| tx.blocking_send(Ok(chunk)).is_ok());
                    });
                    let chunks = futures::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|chunk| (chunk, rx))
                    });
                    (
                        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                        Body::from_stream(chunks),
                    )
                }
            }),
        );
        let health_app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let ready = health.ready();
                    async move {
                        if ready {
                            (StatusCode::OK, "ok").into_response()
                        } else {
                            (
                                StatusCode::SERVICE_UNAVAILABLE,
                                "not ready: cannot reach the Kubernetes API server",
                            )
                                .into_response()
                        }
                    }
                }),
            );
        let a = axum::serve(self.metrics, metrics_app).with_graceful_shutdown(shutdown.clone());
        let b = axum::serve(self.health, health_app).with_graceful_shutdown(shutdown);
        if let Err(e) = futures::try_join!(a.into_future(), b.into_future()) {
            tracing::warn!(error = %e, "HTTP server stopped");
        }
    }
}
