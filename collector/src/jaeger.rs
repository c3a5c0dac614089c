//! Jaeger thrift receivers, for legacy Jaeger/OpenTracing clients:
//!
//! - HTTP `POST /api/traces` (default port 14268): a TBinaryProtocol `Batch`
//!   (`Content-Type: application/x-thrift` or
//!   `application/vnd.apache.thrift.binary`; `...thrift.compact` for
//!   TCompactProtocol); 202 on success, 400 with a text message for a bad
//!   body or content type, 413, 429/503 with `Retry-After`. Partial
//!   rejections (spans outside the accepted time window) store the rest and
//!   answer 400 with the counts.
//! - UDP `Agent.emitBatch` datagrams, compact (6831) and binary (6832). UDP
//!   has no answer: bad datagrams and datagrams refused under backpressure
//!   are logged and counted in `tracelake_request_errors_total`.
//!
//! Decoding and the mapping to OTLP are in [`tracelake_protocols::jaeger`].

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};
use tracelake_protocols::jaeger::{self, Protocol};

use crate::body;
use crate::ingest::Ingest;
use crate::plain::{self, Failure};

const HTTP: &str = "jaeger_thrift_http";

/// Largest datagram a Jaeger agent client sends.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams being written at once; more are refused (and counted).
const UDP_IN_FLIGHT: usize = 64;

#[derive(Clone)]
struct Receiver {
    ingest: Arc<Ingest>,
    max_body_bytes: usize,
}

/// The `/api/traces` ingest route.
pub fn router(ingest: Arc<Ingest>, max_body_bytes: usize) -> Router {
    Router::new()
        .route(
            "/api/traces",
            post(traces)
                .fallback(|| async { plain::method_not_allowed("use POST with a thrift Batch") }),
        )
        .with_state(Receiver {
            ingest,
            max_body_bytes,
        })
}

async fn traces(State(receiver): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    let outcome = handle(&receiver, &headers, body).await;
    plain::respond(&receiver.ingest, HTTP, outcome)
}

async fn handle(receiver: &Receiver, headers: &HeaderMap, body: Body) -> Result<(), Failure> {
    let protocol = match plain::media_type(headers).as_str() {
        "application/x-thrift" | "application/vnd.apache.thrift.binary" => Protocol::Binary,
        "application/vnd.apache.thrift.compact" => Protocol::Compact,
        other => {
            return Err(Failure::bad_request(
                "unsupported_media_type",
                format!(
                    "unsupported content type {other:?}: use application/x-thrift (a TBinaryProtocol Batch)"
                ),
            ));
        }
    };
    receiver.ingest.check_capacity(HTTP)?;
    let raw = body::read(body, headers, receiver.max_body_bytes).await?;
    let request = jaeger::from_batch(&raw, protocol)
        .map_err(|e| Failure::bad_request("bad_thrift", e.to_string()))?;
    let accepted = receiver.ingest.export(HTTP, request).await?;
    plain::all_accepted(&accepted)
}

/// Receives `Agent.emitBatch` datagrams on `socket` until `stop` turns true.
pub async fn serve_udp(
    ingest: Arc<Ingest>,
    socket: UdpSocket,
    protocol: Protocol,
    mut stop: watch::Receiver<bool>,
) {
    let label = match protocol {
        Protocol::Compact => "jaeger_thrift_compact",
        Protocol::Binary => "jaeger_thrift_binary",
    };
    let permits = Arc::new(Semaphore::new(UDP_IN_FLIGHT));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let n = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, _)) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "jaeger udp receive failed");
                    continue;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let request = match jaeger::from_agent_message(&buf[..n], protocol) {
            Ok(r) => r,
            Err(e) => {
                ingest.count_error(label, "bad_thrift");
                tracing::debug!(error = %e, "jaeger udp datagram refused");
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            ingest.count_error(label, "overloaded");
            tracing::warn!("jaeger udp datagram dropped: too many in flight");
            continue;
        };
        let ingest = Arc::clone(&ingest);
        tokio::spawn(async move {
            match ingest.export(label, request).await {
                Ok(a) if a.rejections.count > 0 => tracing::debug!(
                    rejected = a.rejections.count,
                    "jaeger udp spans rejected: {}",
                    a.rejections.message()
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "jaeger udp batch not stored"),
            }
            drop(permit);
        });
    }
    // Let the batches in flight finish before the collector drains.
    let _ = permits.acquire_many(UDP_IN_FLIGHT as u32).await;
}
