//! The Kafka receiver: spans that the OpenTelemetry Collector's Kafka
//! exporter, Zipkin's Kafka collector or Jaeger's collector put on Kafka
//! topics, consumed exactly once into the table.
//!
//! # Exactly once without a second log
//! Kafka is the log: the receiver keeps no WAL. Each topic partition is
//! consumed by one task, with its own [`Buffer`] (rows visible to queries
//! before they are committed), and flushed in commits of its own that carry
//! the Delta application transaction `kafka:<topic>:<partition>` at the
//! last offset included. At start, and whenever a commit finds the table
//! not where it left it, the task reads that version back and fetches from
//! the next offset, so a crash at any point neither loses nor duplicates a
//! message:
//! - killed before a commit: the rows were only buffered; they are fetched
//!   again;
//! - killed during a commit: it landed (its version is in the table) or it
//!   did not; either way the next start resumes after what the table holds;
//! - two nodes consuming the same partition (a change of ownership, a
//!   mistake in the configuration): a commit is made only when the table's
//!   version for the partition is the one its rows follow, and Delta's
//!   conflict check refuses a second commit of the same application id
//!   made from the same version; the node that loses drops its buffer and
//!   fetches again after the winner's offset. The broker's committed
//!   offsets are never used.
//!
//! # Partition ownership
//! rskafka has no consumer groups, so ownership is static: node `i` of `n`
//! (`--kafka-member i/n`) consumes the partitions `p` with `p % n == i` of
//! every topic. Changing `n` (scaling out or in) needs no coordination: the
//! table's transaction versions decide what is stored.
//!
//! # Bad messages
//! A message that does not decode in its topic's encoding is counted
//! (`tracelake_kafka_bad_messages_total{topic,reason}`), logged with its
//! topic, partition and offset, and skipped; spans outside the accepted
//! time window are rejected and counted as on every receiver. Neither
//! stops the partition.
//!
//! # Backpressure
//! While the buffered rows of all partitions hold more than
//! [`KafkaConfig::max_buffer_bytes`], no partition fetches: memory stays
//! bounded and the lag grows on the broker instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use tokio::sync::watch;
use tracelake_protocols::{Sink, otlp_json, otlp_proto, zipkin};
use tracelake_schema::otlp::{Acceptance, SpansBuilder};
use tracelake_schema::trace_keys;

use crate::buffer::Buffer;
use crate::flush::FlushConfig;
use crate::metrics::{Metrics, TenantGauges};
use crate::table::Table;
use crate::writer::write_partition;

/// The `protocol` label of the spans counters.
pub const PROTOCOL: &str = "kafka";

/// How the messages of a topic are encoded (the names of the OpenTelemetry
/// Collector's Kafka exporter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// An OTLP `ExportTraceServiceRequest` (= `TracesData`) protobuf: the
    /// exporter's default.
    OtlpProto,
    /// The same as OTLP/JSON.
    OtlpJson,
    /// A Zipkin proto3 `ListOfSpans` (Zipkin's Kafka collector).
    ZipkinProto,
    /// A Zipkin v2 JSON list of spans.
    ZipkinJson,
}

impl std::str::FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "otlp_proto" => Self::OtlpProto,
            "otlp_json" => Self::OtlpJson,
            "zipkin_proto" => Self::ZipkinProto,
            "zipkin_json" => Self::ZipkinJson,
            "jaeger_proto" | "jaeger_json" => {
                return Err(format!(
                    "Kafka encoding {s} is not supported yet (otlp_proto, otlp_json, \
                     zipkin_proto, zipkin_json are)"
                ));
            }
            _ => {
                return Err(format!(
                    "unknown Kafka encoding {s:?} (otlp_proto, otlp_json, zipkin_proto, \
                     zipkin_json)"
                ));
            }
        })
    }
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Self::OtlpProto => "otlp_proto",
            Self::OtlpJson => "otlp_json",
            Self::ZipkinProto => "zipkin_proto",
            Self::ZipkinJson => "zipkin_json",
        }
    }

    /// Writes the spans of one message into `sink`; the error names what
    /// is wrong with it.
    fn decode(self, message: &[u8], sink: &mut Sink<'_>) -> Result<(), String> {
        let request = match self {
            Self::OtlpProto => {
                return otlp_proto::decode_into(message, sink).map_err(|e| e.to_string());
            }
            Self::OtlpJson => {
                return otlp_json::decode_into(message, sink).map_err(|e| e.to_string());
            }
            Self::ZipkinProto => zipkin::from_proto(message),
            Self::ZipkinJson => zipkin::from_json(message),
        }
        .map_err(|e| e.to_string())?;
        let rejections = sink.builder.append_request(&request, &sink.acceptance);
        for (reason, n) in rejections.reasons {
            sink.rejections.add_n(reason, n);
        }
        Ok(())
    }
}

/// Where consumption starts in a partition the table holds nothing of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
}

/// The receiver's settings.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `host:port` of the bootstrap brokers.
    pub brokers: Vec<String>,
    /// Topics and their encodings.
    pub topics: Vec<(String, Encoding)>,
    /// This node is member `.0` of `.1`: it consumes the partitions `p`
    /// with `p % .1 == .0`.
    pub member: (u32, u32),
    pub client_id: String,
    /// TLS to the brokers.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// SASL/PLAIN user name and password.
    pub sasl_plain: Option<(String, String)>,
    pub start_at: StartAt,
    /// Bytes asked for in one fetch.
    pub fetch_max_bytes: i32,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .field("member", &self.member)
            .field("client_id", &self.client_id)
            .field("tls", &self.tls.is_some())
            .field(
                "sasl_plain",
                &self.sasl_plain.as_ref().map(|(user, _)| user),
            )
            .field("start_at", &self.start_at)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    topic: String,
    reason: String,
}

/// What the receiver counts (`/metrics`).
#[derive(Default)]
pub struct KafkaMetrics {
    messages: Family<PartitionLabels, Counter>,
    bad_messages: Family<ReasonLabels, Counter>,
    lag: Family<PartitionLabels, Gauge>,
    committed_offset: Family<PartitionLabels, Gauge>,
    paused: Counter,
    refetched: Family<PartitionLabels, Counter>,
}

impl KafkaMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        let r = registry.sub_registry_with_prefix("tracelake_kafka");
        r.register(
            "messages",
            "Kafka messages consumed, by topic and partition",
            self.messages.clone(),
        );
        r.register(
            "bad_messages",
            "Kafka messages skipped because they did not decode, by topic and reason",
            self.bad_messages.clone(),
        );
        r.register(
            "lag",
            "Messages on the broker not yet consumed (high watermark minus next offset), by \
             topic and partition",
            self.lag.clone(),
        );
        r.register(
            "committed_offset",
            "The last offset of each partition in the table",
            self.committed_offset.clone(),
        );
        r.register(
            "fetch_pauses",
            "Times a partition waited because the buffered rows were over the limit",
            self.paused.clone(),
        );
        r.register(
            "refetches",
            "Times a partition dropped its buffer and fetched again after the table's offset \
             (another node committed it)",
            self.refetched.clone(),
        );
    }
}

/// How one partition stands, for `/ready`.
#[derive(Debug, Clone, Default)]
pub struct PartitionState {
    pub topic: String,
    pub partition: i32,
    /// The last offset in the table.
    pub committed: Option<i64>,
    /// Messages on the broker not consumed yet.
    pub lag: i64,
    /// The last error, if the partition is not consuming.
    pub error: Option<String>,
}

/// One consumed partition as others see it.
struct Shared {
    app_id: String,
    buffer: Arc<Buffer>,
    state: Mutex<PartitionState>,
}

/// A running Kafka receiver.
pub struct Kafka {
    view: KafkaView,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// What queries and `/ready` see of a running receiver.
#[derive(Clone)]
pub struct KafkaView {
    partitions: Arc<Mutex<Vec<Arc<Shared>>>>,
    connection: Arc<Mutex<Option<String>>>,
}

/// The application id of a partition's commits.
pub fn app_id(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}:{partition}")
}

impl Kafka {
    /// Connects (retrying until it can) and consumes this node's
    /// partitions until [`Kafka::shutdown`]: each partition's rows are
    /// committed as `flush` says, spans are accepted in `ingest`'s window,
    /// and fetching pauses while the partitions buffer more than its
    /// `max_buffer_bytes`.
    pub fn start(
        config: KafkaConfig,
        table: Arc<Table>,
        store: Arc<dyn ObjectStore>,
        ingest: crate::ingest::IngestConfig,
        flush: FlushConfig,
        metrics: Arc<Metrics>,
        kafka_metrics: Arc<KafkaMetrics>,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let partitions = Arc::new(Mutex::new(Vec::new()));
        let connection = Arc::new(Mutex::new(Some("connecting".to_string())));
        let run = Run {
            config: Arc::new(config),
            table,
            store,
            ingest,
            flush,
            metrics,
            kafka_metrics,
            partitions: Arc::clone(&partitions),
            connection: Arc::clone(&connection),
        };
        let task = tokio::spawn(run.supervise(stopped));
        Self {
            view: KafkaView {
                partitions,
                connection,
            },
            stop,
            task,
        }
    }

    pub fn view(&self) -> KafkaView {
        self.view.clone()
    }

    /// Stops fetching, commits what is buffered, and returns.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

impl KafkaView {
    /// Each consumed partition's application id and buffered rows (for
    /// queries).
    pub fn buffers(&self) -> Vec<(String, Arc<Buffer>)> {
        self.partitions
            .lock()
            .iter()
            .map(|p| (p.app_id.clone(), Arc::clone(&p.buffer)))
            .collect()
    }

    /// How each partition stands, and the connection's problem if any.
    pub fn states(&self) -> (Option<String>, Vec<PartitionState>) {
        let states = self
            .partitions
            .lock()
            .iter()
            .map(|p| p.state.lock().clone())
            .collect();
        (self.connection.lock().clone(), states)
    }
}

struct Run {
    config: Arc<KafkaConfig>,
    table: Arc<Table>,
    store: Arc<dyn ObjectStore>,
    ingest: crate::ingest::IngestConfig,
    flush: FlushConfig,
    metrics: Arc<Metrics>,
    kafka_metrics: Arc<KafkaMetrics>,
    partitions: Arc<Mutex<Vec<Arc<Shared>>>>,
    connection: Arc<Mutex<Option<String>>>,
}

impl Run {
    async fn connect(&self) -> Result<Client, String> {
        let mut builder = ClientBuilder::new(self.config.brokers.clone())
            .client_id(self.config.client_id.clone());
        if let Some(tls) = &self.config.tls {
            builder = builder.tls_config(Arc::clone(tls));
        }
        if let Some((user, password)) = &self.config.sasl_plain {
            builder = builder.sasl_config(SaslConfig::Plain(Credentials::new(
                user.clone(),
                password.clone(),
            )));
        }
        builder.build().await.map_err(|e| {
            format!(
                "cannot reach the Kafka brokers {}: {e}",
                self.config.brokers.join(",")
            )
        })
    }

    /// Connects, finds this node's partitions, runs a task for each; starts
    /// again from the connection when the topics' partitions change.
    async fn supervise(self, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let mut backoff = Duration::from_millis(200);
        let client = loop {
            match this.connect().await {
                Ok(client) => break client,
                Err(error) => {
                    tracing::warn!(%error, "Kafka receiver not connected; retrying");
                    *this.connection.lock() = Some(error);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        };
        let client = Arc::new(client);
        let owned = loop {
            match this.owned_partitions(&client).await {
                Ok(owned) => break owned,
                Err(error) => {
                    tracing::warn!(%error, "cannot list the Kafka topics; retrying");
                    *this.connection.lock() = Some(error);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
        };
        *this.connection.lock() = None;
        tracing::info!(
            partitions = ?owned.iter().map(|(t, p, _)| format!("{t}/{p}")).collect::<Vec<_>>(),
            "Kafka receiver consuming"
        );
        let mut tasks = Vec::new();
        for (topic, partition, encoding) in owned {
            let shared = Arc::new(Shared {
                app_id: app_id(&topic, partition),
                buffer: Arc::new(Buffer::new(None, TenantGauges::default())),
                state: Mutex::new(PartitionState {
                    topic: topic.clone(),
                    partition,
                    ..PartitionState::default()
                }),
            });
            this.partitions.lock().push(Arc::clone(&shared));
            let consumer = Consumer {
                run: Arc::clone(&this),
                client: Arc::clone(&client),
                labels: PartitionLabels {
                    topic: topic.clone(),
                    partition: partition.to_string(),
                },
                topic,
                partition,
                encoding,
                shared,
            };
            tasks.push(tokio::spawn(consumer.run(stop.clone())));
        }
        futures::future::join_all(tasks).await;
    }

    /// The configured topics' partitions this node consumes.
    async fn owned_partitions(
        &self,
        client: &Client,
    ) -> Result<Vec<(String, i32, Encoding)>, String> {
        let topics = client
            .list_topics()
            .await
            .map_err(|e| format!("listing Kafka topics: {e}"))?;
        let (index, count) = self.config.member;
        let mut owned = Vec::new();
        for (name, encoding) in &self.config.topics {
            let Some(topic) = topics.iter().find(|t| &t.name == name) else {
                return Err(format!("Kafka topic {name} does not exist"));
            };
            for &partition in topic
                .partitions
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
            {
                if partition.rem_euclid(count as i32) == index as i32 {
                    owned.push((name.clone(), partition, *encoding));
                }
            }
        }
        Ok(owned)
    }

    /// Buffered bytes of every partition.
    fn buffered(&self) -> usize {
        self.partitions
            .lock()
            .iter()
            .map(|p| p.buffer.bytes())
            .sum()
    }
}

/// One partition's consumer.
struct Consumer {
    run: Arc<Run>,
    client: Arc<Client>,
    topic: String,
    partition: i32,
    encoding: Encoding,
    shared: Arc<Shared>,
    labels: PartitionLabels,
}

/// Why a partition task went back to the table's offset.
enum Resume {
    /// The table holds this partition up to the offset (`None`: nothing).
    From(Option<i64>),
}

impl Consumer {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        // Until the partition client and the table's offset are known.
        let (client, mut committed) = loop {
            match self.open().await {
                Ok(opened) => break opened,
                Err(error) => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, %error, "Kafka partition not consuming; retrying");
                    self.shared.state.lock().error = Some(error);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        };
        let mut next = match self.first_offset(&client, committed).await {
            Some(next) => next,
            None => return,
        };
        // The last offset consumed (buffered, or skipped as bad), and
        // since when it is ahead of the table's.
        let mut consumed: Option<i64> = committed;
        let mut ahead_since: Option<Instant> = None;
        loop {
            let stopping = *stop.borrow();
            let flush = &self.run.flush;
            let due = ahead_since.is_some_and(|t| t.elapsed() >= flush.max_age)
                || self.shared.buffer.bytes() >= flush.max_bytes;
            if (due || stopping) && consumed > committed {
                match self
                    .flush(committed, consumed.expect("consumed > committed"))
                    .await
                {
                    Ok(Resume::From(at)) if at == consumed => committed = at,
                    Ok(Resume::From(at)) => {
                        // Another node committed this partition: what is
                        // buffered may be in the table already.
                        tracing::warn!(
                            topic = %self.topic,
                            partition = self.partition,
                            table = ?at,
                            "another node committed this partition; fetching again after its offset"
                        );
                        self.run
                            .kafka_metrics
                            .refetched
                            .get_or_create(&self.labels)
                            .inc();
                        self.shared.buffer.clear();
                        committed = at;
                        consumed = at;
                        next = match at {
                            Some(at) => at + 1,
                            None => match self.first_offset(&client, None).await {
                                Some(next) => next,
                                None => return,
                            },
                        };
                    }
                    Err(error) => {
                        tracing::error!(topic = %self.topic, partition = self.partition, %error, "Kafka partition flush failed; rows stay buffered and will be retried");
                        self.shared.state.lock().error = Some(error);
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                            _ = stop.changed() => {}
                        }
                        if *stop.borrow() && stopping {
                            // Stopping, and the table cannot take the rows:
                            // Kafka keeps them for the next start.
                            return;
                        }
                        continue;
                    }
                }
                ahead_since = None;
                self.shared.state.lock().committed = committed;
                if let Some(at) = committed {
                    self.run
                        .kafka_metrics
                        .committed_offset
                        .get_or_create(&self.labels)
                        .set(at);
                }
            }
            if stopping {
                return;
            }
            if self.run.buffered() > self.run.ingest.max_buffer_bytes {
                self.run.kafka_metrics.paused.inc();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let fetched = tokio::select! {
                fetched = client.fetch_records(next, 1..self.run.config.fetch_max_bytes, 250) => fetched,
                _ = stop.changed() => continue,
            };
            let (records, high_watermark) = match fetched {
                Ok(fetched) => fetched,
                Err(rskafka::client::error::Error::ServerError {
                    protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
                    ..
                }) => {
                    let earliest = client.get_offset(OffsetAt::Earliest).await.unwrap_or(next);
                    if earliest > next {
                        tracing::error!(
                            topic = %self.topic,
                            partition = self.partition,
                            from = next,
                            to = earliest,
                            "Kafka deleted messages before they were consumed (retention): they are lost"
                        );
                        next = earliest;
                    } else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    continue;
                }
                Err(error) => {
                    let error = format!("fetching from offset {next}: {error}");
                    tracing::warn!(topic = %self.topic, partition = self.partition, %error, "Kafka fetch failed; retrying");
                    self.shared.state.lock().error = Some(error);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            };
            let records: Vec<(i64, Option<Vec<u8>>)> = records
                .into_iter()
                .filter(|r| r.offset >= next)
                .map(|r| (r.offset, r.record.value))
                .collect();
            if let Some(&(last, _)) = records.last() {
                self.consume(records).await;
                consumed = Some(last);
                next = last + 1;
                ahead_since.get_or_insert_with(Instant::now);
            }
            let lag = (high_watermark - next).max(0);
            {
                let mut state = self.shared.state.lock();
                state.lag = lag;
                state.error = None;
            }
            self.run
                .kafka_metrics
                .lag
                .get_or_create(&self.labels)
                .set(lag);
        }
    }

    /// The partition's client and the table's offset for it.
    async fn open(&self) -> Result<(PartitionClient, Option<i64>), String> {
        let client = self
            .client
            .partition_client(&self.topic, self.partition, UnknownTopicHandling::Retry)
            .await
            .map_err(|e| format!("opening {}/{}: {e}", self.topic, self.partition))?;
        self.run.table.refresh().await.map_err(|e| e.to_string())?;
        let committed = self
            .run
            .table
            .transaction_version(&self.shared.app_id)
            .await
            .map_err(|e| e.to_string())?;
        self.shared.state.lock().committed = committed;
        Ok((client, committed))
    }

    /// The offset to fetch first: after the table's, or where configured
    /// for a partition the table holds nothing of.
    async fn first_offset(&self, client: &PartitionClient, committed: Option<i64>) -> Option<i64> {
        if let Some(at) = committed {
            return Some(at + 1);
        }
        let at = match self.run.config.start_at {
            StartAt::Earliest => OffsetAt::Earliest,
            StartAt::Latest => OffsetAt::Latest,
        };
        loop {
            match client.get_offset(at).await {
                Ok(offset) => return Some(offset),
                Err(error) => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, %error, "cannot read the partition's offsets; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Decodes fetched messages (on the blocking pool) into the buffer;
    /// the bad ones are counted, logged and skipped.
    async fn consume(&self, records: Vec<(i64, Option<Vec<u8>>)>) {
        let count = records.len() as u64;
        let encoding = self.encoding;
        let acceptance = acceptance(&self.run.ingest);
        let decoded = tokio::task::spawn_blocking(move || {
            let mut batches = Vec::with_capacity(records.len());
            let mut bad: Vec<(i64, &'static str, String)> = Vec::new();
            let mut rejections = tracelake_schema::otlp::Rejections::default();
            let mut last = None;
            for (offset, value) in records {
                last = Some(offset);
                let Some(value) = value else {
                    bad.push((offset, "empty", "no value".to_string()));
                    continue;
                };
                // A message that fails half-way leaves nothing behind.
                let mut one = SpansBuilder::with_capacity(8);
                let mut sink = Sink::new(&mut one, acceptance);
                match encoding.decode(&value, &mut sink) {
                    Ok(()) => {
                        for (reason, n) in std::mem::take(&mut sink.rejections).reasons {
                            rejections.add_n(reason, n);
                        }
                        batches.push(one.finish());
                    }
                    Err(message) => bad.push((offset, "undecodable", message)),
                }
            }
            let batch = match batches.first() {
                Some(first) => arrow::compute::concat_batches(&first.schema(), &batches)
                    .map_err(|e| e.to_string()),
                None => Ok(RecordBatch::new_empty(
                    tracelake_schema::spans::spans_schema(),
                )),
            };
            (batch, bad, rejections, last)
        })
        .await;
        let (batch, bad, rejections, last) = match decoded {
            Ok((Ok(batch), bad, rejections, last)) => (batch, bad, rejections, last),
            Ok((Err(error), ..)) => {
                // Batches of one schema always concatenate.
                tracing::error!(topic = %self.topic, partition = self.partition, %error, "cannot join decoded batches");
                return;
            }
            Err(error) => {
                tracing::error!(topic = %self.topic, partition = self.partition, %error, "decoding task failed");
                return;
            }
        };
        self.run
            .kafka_metrics
            .messages
            .get_or_create(&self.labels)
            .inc_by(count);
        for (offset, reason, message) in &bad {
            tracing::warn!(
                topic = %self.topic,
                partition = self.partition,
                offset,
                encoding = encoding.name(),
                error = %message,
                "skipping a Kafka message that does not decode"
            );
            self.run
                .kafka_metrics
                .bad_messages
                .get_or_create(&ReasonLabels {
                    topic: self.topic.clone(),
                    reason: (*reason).to_string(),
                })
                .inc();
        }
        let labels = [("protocol", PROTOCOL)];
        let accepted = batch.num_rows() as u64;
        self.run
            .metrics
            .spans_received
            .get_or_create(&labels)
            .inc_by(accepted + rejections.count);
        self.run
            .metrics
            .spans_accepted
            .get_or_create(&labels)
            .inc_by(accepted);
        for (reason, n) in &rejections.reasons {
            self.run
                .metrics
                .spans_rejected
                .get_or_create(&[("protocol", PROTOCOL), ("reason", reason.label())])
                .inc_by(*n);
        }
        if let Some(last) = last {
            self.shared.buffer.insert(last as u64, &batch);
        }
    }

    /// Commits the buffered rows, which follow the table's offset
    /// `committed`, with the partition's offset `upto`; returns the
    /// partition's offset in the table afterwards: `upto`, or another
    /// node's when it committed this partition meanwhile (the buffer is
    /// then not committed).
    async fn flush(&self, committed: Option<i64>, upto: i64) -> Result<Resume, String> {
        let table = &self.run.table;
        let buffer = &self.shared.buffer;
        table.refresh().await.map_err(|e| e.to_string())?;
        let now = table
            .transaction_version(&self.shared.app_id)
            .await
            .map_err(|e| e.to_string())?;
        if now != committed {
            // Ours landed before an answer was lost (`now == upto`), or
            // another node's did: either way the table decides.
            if now == Some(upto) {
                buffer.take();
                buffer.committed(table.version().await.unwrap_or(0));
            }
            return Ok(Resume::From(now));
        }
        let set = buffer.take();
        let partitions = set.map(|s| s.partitions).unwrap_or_default();
        let result = self.write_and_commit(partitions, upto).await;
        match result {
            Ok(version) => {
                buffer.committed(version);
                Ok(Resume::From(Some(upto)))
            }
            Err(error) => {
                buffer.restore();
                Err(error)
            }
        }
    }

    async fn write_and_commit(
        &self,
        partitions: BTreeMap<crate::buffer::PartitionKey, Vec<RecordBatch>>,
        upto: i64,
    ) -> Result<i64, String> {
        let files = tokio::task::spawn_blocking(move || {
            partitions
                .iter()
                .map(|(key, batches)| write_partition(*key, batches))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let mut adds = Vec::with_capacity(files.len());
        for file in files {
            let size = file.bytes.len() as u64;
            self.run
                .store
                .put(&Path::from(file.path.as_str()), file.bytes.into())
                .await
                .map_err(|e| format!("uploading {}: {e}", file.path))?;
            let keys = trace_keys::keys_path(&file.path);
            self.run
                .store
                .put(
                    &Path::from(keys.as_str()),
                    trace_keys::encode(&file.keys).into(),
                )
                .await
                .map_err(|e| format!("uploading {keys}: {e}"))?;
            self.run.metrics.files_written.inc();
            self.run.metrics.rows_written.inc_by(file.rows as u64);
            self.run.metrics.bytes_written.inc_by(size);
            adds.push(file.add);
        }
        crate::faults::hit("kafka.commit").map_err(|e| e.to_string())?;
        let version = self
            .run
            .table
            .commit_as(adds, &self.shared.app_id, upto)
            .await
            .map_err(|e| e.to_string())?;
        crate::faults::hit("kafka.committed").map_err(|e| e.to_string())?;
        Ok(version)
    }
}

/// The accepted span start times, now.
fn acceptance(config: &crate::ingest::IngestConfig) -> Acceptance {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    Acceptance {
        min_start_unix_nano: now.saturating_sub(nanos(config.max_span_age)),
        max_start_unix_nano: now.saturating_add(nanos(config.max_span_future)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_parse_by_the_exporters_names() {
        for name in ["otlp_proto", "otlp_json", "zipkin_proto", "zipkin_json"] {
            assert_eq!(name.parse::<Encoding>().unwrap().name(), name);
        }
        assert!(
            "jaeger_proto"
                .parse::<Encoding>()
                .unwrap_err()
                .contains("not supported")
        );
        assert!("otlp".parse::<Encoding>().unwrap_err().contains("unknown"));
    }

    #[test]
    fn a_bad_message_is_refused_whole() {
        let mut builder = SpansBuilder::default();
        let mut sink = Sink::new(&mut builder, Acceptance::ANY_TIME);
        assert!(
            Encoding::OtlpProto
                .decode(b"\xff\xff\xff", &mut sink)
                .is_err()
        );
        assert!(Encoding::ZipkinJson.decode(b"{", &mut sink).is_err());
    }
}
