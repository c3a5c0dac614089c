//! The decode-only ceiling: how fast this machine turns the workload's OTLP
//! protobuf bodies into Arrow record batches (protobuf decode, validation,
//! the same `SpansBuilder` the server uses), without a network, a WAL or
//! storage. Ingest is reported as a fraction of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tracelake_schema::otlp::{Acceptance, SpansBuilder};

use crate::driver::{Config, pool};

/// Decodes the pool `rounds` times over on `threads` threads; returns
/// (spans decoded, seconds).
pub fn run(config: &Config, threads: usize, rounds: usize) -> (u64, f64) {
    let items = Arc::new(pool(config).0);
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
                    let item = &items[i % items.len()];
                    let request = ExportTraceServiceRequest::decode(item.body.as_slice())
                        .expect("the workload decodes");
                    let mut builder = SpansBuilder::with_capacity(item.spans as usize);
                    let rejections = builder.append_request(&request, &Acceptance::ANY_TIME);
                    assert_eq!(rejections.count, 0, "the workload is valid");
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
        let (decoded, seconds) = run(&config, 2, 3);
        assert_eq!(decoded, in_pool * 3);
        assert!(seconds > 0.0);
    }
}
