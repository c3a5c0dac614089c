//! `tracelake-bench kafka`: puts the workload on a Kafka topic as the
//! OpenTelemetry Collector's Kafka exporter does (`otlp_proto`: one
//! `ExportTraceServiceRequest` per message), to measure how fast the Kafka
//! receiver consumes it (`bench/kafka.sh`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use serde_json::{Value, json};

use crate::driver::{Config, pool};

/// Messages sent in one produce request.
const MESSAGES_PER_PRODUCE: usize = 16;

/// Produces `spans` spans of the seeded workload, `batch` per message, to
/// `topic` (created with `partitions` partitions if missing), spread
/// round-robin over its partitions; what was sent and how fast.
pub async fn produce(
    brokers: Vec<String>,
    topic: &str,
    partitions: i32,
    spans: u64,
    batch: usize,
    seed: u64,
) -> anyhow::Result<Value> {
    let client = Arc::new(
        ClientBuilder::new(brokers.clone())
            .build()
            .await
            .with_context(|| format!("connecting to {}", brokers.join(",")))?,
    );
    let topics = client.list_topics().await?;
    let partitions = match topics.iter().find(|t| t.name == topic) {
        Some(t) => t.partitions.len() as i32,
        None => {
            client
                .controller_client()?
                .create_topic(topic, partitions, 1, 10_000)
                .await
                .with_context(|| format!("creating topic {topic}"))?;
            partitions
        }
    };
    let config = Config {
        spans: Some(spans),
        batch,
        seed,
        pool_bytes: usize::MAX,
        ..Config::new("")
    };
    let (items, _) = pool(&config);
    let items = Arc::new(items);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for partition in 0..partitions {
        let (client, items, topic) = (Arc::clone(&client), Arc::clone(&items), topic.to_string());
        tasks.push(tokio::spawn(async move {
            let producer = client
                .partition_client(&topic, partition, UnknownTopicHandling::Retry)
                .await?;
            let mine: Vec<_> = items
                .iter()
                .skip(partition as usize)
                .step_by(partitions as usize)
                .collect();
            let (mut messages, mut bytes) = (0u64, 0u64);
            for chunk in mine.chunks(MESSAGES_PER_PRODUCE) {
                let records = chunk
                    .iter()
                    .map(|item| Record {
                        key: None,
                        value: Some(item.body.clone()),
                        headers: BTreeMap::new(),
                        timestamp: chrono::Utc::now(),
                    })
                    .collect();
                producer
                    .produce(records, Compression::NoCompression)
                    .await?;
                messages += chunk.len() as u64;
                bytes += chunk.iter().map(|i| i.body.len() as u64).sum::<u64>();
            }
            anyhow::Ok((messages, bytes))
        }));
    }
    let (mut messages, mut bytes) = (0, 0);
    for task in tasks {
        let (m, b) = task.await??;
        messages += m;
        bytes += b;
    }
    let seconds = started.elapsed().as_secs_f64();
    let sent: u64 = items.iter().map(|i| i.spans).sum();
    Ok(json!({
        "topic": topic,
        "partitions": partitions,
        "messages": messages,
        "spans": sent,
        "bytes": bytes,
        "seconds": seconds,
    }))
}
