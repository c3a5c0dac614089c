//! The decode-only ceiling: how fast this machine turns the workload's OTLP
//! bodies into Arrow record batches (decode, validation, the same
//! `SpansBuilder` the server uses), without a network, a WAL or storage.
//! Ingest is reported as a fraction of it. [`Path`] picks the decoder: the
//! server's (straight into Arrow, protobuf or JSON) or the reference path
//! through the OTLP structs, to measure one against the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tracelake_protocols::{Sink, otlp_json, otlp_proto};
use tracelake_schema::otlp::{Acceptance, SpansBuilder};

use crate::driver::{Config, JsonBody, pool};

/// Which body and decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Protobuf straight into Arrow (`otlp_proto`): the server's path.
    Protobuf,
    /// Protobuf through prost's structs, then `append_request`.
    ProtobufProst,
    /// OTLP/JSON straight into Arrow (`otlp_json::decode_into`): the
    /// server's path.
    Json,
    /// OTLP/JSON through `serde_json::Value` and the serde structs.
    JsonSerde,
}

impl Path {
    pub const ALL: [Path; 4] = [
        Self::Protobuf,
        Self::ProtobufProst,
        Self::Json,
        Self::JsonSerde,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Protobuf => "protobuf",
            Self::ProtobufProst => "protobuf-prost",
            Self::Json => "json",
            Self::JsonSerde => "json-serde",
        }
    }

    fn json(self) -> bool {
        matches!(self, Self::Json | Self::JsonSerde)
    }

    /// Decodes `body` into `builder`; returns the rejected count.
    fn decode(self, body: &[u8], builder: &mut SpansBuilder) -> u64 {
        let any = Acceptance::ANY_TIME;
        match self {
            Self::Protobuf | Self::Json => {
                let mut sink = Sink::new(builder, any);
                if self == Self::Protobuf {
                    otlp_proto::decode_into(body, &mut sink).expect("the workload decodes");
                } else {
                    otlp_json::decode_into(body, &mut sink).expect("the workload decodes");
                }
                sink.rejections.count
            }
            Self::ProtobufProst => {
                let request =
                    ExportTraceServiceRequest::decode(body).expect("the workload decodes");
                builder.append_request(&request, &any).count
            }
            Self::JsonSerde => {
                let request = otlp_json::decode_request(body).expect("the workload decodes");
                builder.append_request(&request, &any).count
            }
        }
    }
}

/// Decodes the pool `rounds` times over on `threads` threads; returns
/// (spans decoded, seconds).
pub fn run(config: &Config, threads: usize, rounds: usize, path: Path) -> (u64, f64) {
    let items: Vec<(Vec<u8>, u64)> = pool(config)
        .0
        .into_iter()
        .map(|item| {
            let body = if path.json() {
                JsonBody::new(&item.request).body
            } else {
                item.body
            };
            (body, item.spans)
        })
        .collect();
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));
    let total = items.len() * rounds.max(1);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let items = Arc::clone(&items);
            let next = Arc::clone(&next);
            std::thread::spawn(move || {
                let mut spans = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return spans;
                    }
                    let (body, n) = &items[i % items.len()];
                    let mut builder = SpansBuilder::with_capacity(*n as usize);
                    let rejected = path.decode(body, &mut builder);
                    assert_eq!(rejected, 0, "the workload is valid");
                    let batch = builder.finish();
                    spans += batch.num_rows() as u64;
                }
            })
        })
        .collect();
    let spans = handles
        .into_iter()
        .map(|h| h.join().expect("decode thread"))
        .sum();
    (spans, started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_span_of_the_pool_each_round() {
        let config = Config {
            streams: 1,
            spans: Some(3_000),
            seed: 9,
            pool_bytes: usize::MAX,
            ..Config::new("")
        };
        let in_pool: u64 = pool(&config).0.iter().map(|i| i.spans).sum();
        for path in Path::ALL {
            let (decoded, seconds) = run(&config, 2, 3, path);
            assert_eq!(decoded, in_pool * 3, "{path:?}");
            assert!(seconds > 0.0);
        }
    }
}
