//! The Kafka receiver: spans that the OpenTelemetry Collector's Kafka
//! exporter (`otlp_proto`, `otlp_json`), Zipkin's Kafka collector
//! (`zipkin_proto`, `zipkin_json`) or Jaeger's collector (`jaeger_proto`,
//! `jaeger_json`) put on Kafka topics, consumed exactly once into the
//! table.
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
//!   mistake in the configuration): a commit is made only onto a snapshot
//!   whose version for the partition is the one its rows follow, and
//!   Delta's conflict check refuses it when another commit of the same
//!   application id lands after that snapshot; the node that loses drops
//!   its buffer and fetches again after the winner's offset. The broker's
//!   committed offsets are never used.
//! - starting from the latest offset (`--kafka-start latest`), that offset
//!   is committed first, with no rows, so a crash before the first commit
//!   of rows resumes there.
//!
//! A fetch that returns no record below the high watermark is made again
//! with twice the limit (up to 64 MiB): tansu sends nothing, where Kafka
//! sends a whole first batch, when that batch is larger than the limit.
//! What even the widest fetch does not return is, below the last stable
//! offset, a transaction marker (control records, left out by the client)
//! and is stepped over with a warning (so is a batch larger than the
//! broker sends at once: tansu caps a fetch at 5 MiB); at or above it,
//! records of an open transaction, waited for. Records of aborted
//! transactions are stored like the others (rskafka does not filter them;
//! the exporters named above do not write transactionally).
//!
//! # Partition ownership
//! rskafka has no consumer groups, so ownership is static: node `i` of `n`
//! (`--kafka-member i/n`) consumes the partitions `p` with `p % n == i` of
//! every topic. Changing `n` (scaling out or in) needs no coordination: the
//! table's transaction versions decide what is stored. The topics are
//! listed again every `metadata_refresh`, and partitions added to them are
//! consumed from then on.
//!
//! # Bad messages
//! A message that does not decode in its topic's encoding (reason
//! `undecodable`), or whose spans would hold more than
//! `MAX_REPEATED_BYTES` of their resources' and scopes' values once decoded
//! (`too_large`), is counted
//! (`tracelake_kafka_bad_messages_total{topic,reason}`), logged with its
//! topic, partition and offset, and skipped; spans outside the accepted
//! time window are rejected and counted as on every receiver. Neither
//! stops the partition. With a dead-letter topic
//! (`--kafka-dead-letter-topic`), each bad message is also copied there,
//! key, value and headers as rskafka read them (a header name given twice
//! keeps its last value), with headers saying why and whence
//! ([`DEAD_LETTER_HEADERS`]; a value too large for one produce request is
//! left out, [`DEAD_LETTER_DROPPED_VALUE`] saying so), before the offsets
//! past it are committed: at
//! least once (a restart before that commit copies it again); while the
//! dead-letter topic refuses writes, the partition waits and says why.
//!
//! # Backpressure
//! While the buffered rows of all partitions hold more than the ingest
//! buffer limit (`--max-buffer-bytes`, counted apart from the node's own
//! buffer), no partition fetches: the lag grows on the broker instead
//! (each partition may still add one fetch, at most 4 MiB of messages,
//! which may each grow to `MAX_REPEATED_BYTES` and more once decoded).
//!
//! # Queries
//! A partition's buffered rows are visible to queries before they are
//! committed: on this node, and on query nodes that ask it for its buffers
//! (`--ingest-peers`; `crate::live` hands each partition's groups over
//! under its own application id).

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
use rskafka::record::RecordAndOffset;
use tokio::sync::watch;
use tracelake_protocols::{Sink, jaeger, otlp_json, otlp_proto, zipkin};
use tracelake_schema::otlp::SpansBuilder;
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
    /// One `jaeger.api_v2.Span` protobuf with its process (Jaeger's
    /// collector).
    JaegerProto,
    /// The same in protobuf's JSON mapping.
    JaegerJson,
}

impl std::str::FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "otlp_proto" => Self::OtlpProto,
            "otlp_json" => Self::OtlpJson,
            "zipkin_proto" => Self::ZipkinProto,
            "zipkin_json" => Self::ZipkinJson,
            "jaeger_proto" => Self::JaegerProto,
            "jaeger_json" => Self::JaegerJson,
            _ => {
                return Err(format!(
                    "unknown Kafka encoding {s:?} (otlp_proto, otlp_json, zipkin_proto, \
                     zipkin_json, jaeger_proto, jaeger_json)"
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
            Self::JaegerProto => "jaeger_proto",
            Self::JaegerJson => "jaeger_json",
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
            Self::ZipkinProto => zipkin::from_proto(message).map_err(|e| e.to_string()),
            Self::ZipkinJson => zipkin::from_json(message).map_err(|e| e.to_string()),
            Self::JaegerProto => jaeger::from_model_proto(message).map_err(|e| e.to_string()),
            Self::JaegerJson => jaeger::from_model_json(message).map_err(|e| e.to_string()),
        }?;
        let rejections = sink.builder.append_request(&request, &sink.acceptance);
        for (reason, n) in rejections.reasons {
            sink.rejections.add_n(reason, n);
        }
        Ok(())
    }

    /// The rows of one message, and the spans it rejected; or why the
    /// whole message is bad (`undecodable`, or `too_large` once its spans
    /// carry their resources): a message that fails half-way leaves
    /// nothing behind.
    fn batch(
        self,
        message: &[u8],
        layout: &Arc<tracelake_schema::layout::Layout>,
        acceptance: tracelake_schema::otlp::Acceptance,
    ) -> Result<(RecordBatch, tracelake_schema::otlp::Rejections), (&'static str, String)> {
        let mut builder = SpansBuilder::for_layout(Arc::clone(layout), 8);
        let mut sink = Sink::new(&mut builder, acceptance);
        self.decode(message, &mut sink)
            .map_err(|message| ("undecodable", message))?;
        let rejections = std::mem::take(&mut sink.rejections);
        let batch = builder
            .try_finish()
            .map_err(|too_large| ("too_large", format!("message is {too_large}")))?;
        Ok((batch, rejections))
    }
}

/// Arrow bytes of messages joined into one buffered batch, at most (or
/// one message's alone): far under the 2 GiB that a column's 32-bit
/// offsets address, however large each message grows once decoded (up to
/// `MAX_REPEATED_BYTES` of copies of its resources).
const MAX_JOINED_BYTES: usize = 256 << 20;

/// The batches of consecutive messages, each with its offset, joined into
/// as few batches as keep each under `max_bytes` of Arrow memory (a batch
/// over it on its own stays alone); each joined batch with the offset of
/// its last message.
fn join(
    batches: Vec<(RecordBatch, i64)>,
    max_bytes: usize,
) -> Result<Vec<(RecordBatch, i64)>, arrow::error::ArrowError> {
    let mut joined = Vec::new();
    let mut group: Vec<RecordBatch> = Vec::new();
    let (mut bytes, mut last) = (0, 0);
    let mut close = |group: &mut Vec<RecordBatch>, last| {
        if let Some(first) = group.first() {
            let batch = arrow::compute::concat_batches(&first.schema(), group.iter())?;
            joined.push((batch, last));
            group.clear();
        }
        Ok::<_, arrow::error::ArrowError>(())
    };
    for (batch, offset) in batches {
        let size = batch.get_array_memory_size();
        if !group.is_empty() && bytes + size > max_bytes {
            close(&mut group, last)?;
            bytes = 0;
        }
        bytes += size;
        last = offset;
        group.push(batch);
    }
    close(&mut group, last)?;
    Ok(joined)
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
    /// The topic bad messages are copied to ([`DEAD_LETTER_HEADERS`]).
    pub dead_letter_topic: Option<String>,
    /// How often the topics' partitions are listed again (partitions added
    /// to a topic are consumed from then on).
    pub metadata_refresh: Duration,
}

/// Bytes of dead-letter copies sent in one produce request (before
/// compression): under the brokers' default `message.max.bytes` (1 MiB).
const DEAD_LETTER_BATCH_BYTES: usize = 512 * 1024;

/// The widest fetch: a fetch that returns no record below the high
/// watermark is made again with twice the limit, up to this, before what
/// it did not return is taken for a transaction marker.
const WIDEST_FETCH_BYTES: i32 = 64 << 20;

/// The header of a dead-letter copy sent without its value (too large for
/// one produce request): the value's size in bytes.
pub const DEAD_LETTER_DROPPED_VALUE: &str = "tracelake.error.value_dropped_bytes";

/// The headers a message copied to the dead-letter topic carries besides
/// its own: why it was refused, and where it came from.
pub const DEAD_LETTER_HEADERS: [&str; 6] = [
    "tracelake.error.reason",
    "tracelake.error.message",
    "tracelake.source.topic",
    "tracelake.source.partition",
    "tracelake.source.offset",
    "tracelake.source.encoding",
];

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
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("metadata_refresh", &self.metadata_refresh)
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
    dead_letters: Family<ReasonLabels, Counter>,
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
            "Kafka messages skipped because they did not decode (or were too large once \
             decoded), by topic and reason",
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
            "dead_letters",
            "Bad Kafka messages copied to the dead-letter topic, by source topic and reason",
            self.dead_letters.clone(),
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
        vacuum_grace: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let partitions = Arc::new(Mutex::new(Vec::new()));
        let connection = Arc::new(Mutex::new(Some("connecting".to_string())));
        let run = Run {
            config: Arc::new(config),
            layout: table.layout(),
            table,
            store,
            ingest,
            flush,
            vacuum_grace,
            kafka_metrics: Arc::clone(&metrics.kafka),
            metrics,
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
    /// The layout rows are built in (the table's when the receiver
    /// started), fixed so that every buffered row has one schema.
    layout: Arc<tracelake_schema::layout::Layout>,
    table: Arc<Table>,
    store: Arc<dyn ObjectStore>,
    ingest: crate::ingest::IngestConfig,
    flush: FlushConfig,
    /// Files not in the table are vacuumed once this old: on an object
    /// store, a commit is made only of files well younger.
    vacuum_grace: Duration,
    metrics: Arc<Metrics>,
    kafka_metrics: Arc<KafkaMetrics>,
    partitions: Arc<Mutex<Vec<Arc<Shared>>>>,
    connection: Arc<Mutex<Option<String>>>,
}

impl Run {
    async fn connect(&self) -> Result<Client, String> {
        let mut builder = ClientBuilder::new(self.config.brokers.clone())
            .client_id(self.config.client_id.clone())
            // The client's own retries give up after a while, so that an
            // unreachable broker shows in /ready and a stop is not held up.
            .backoff_config(rskafka::BackoffConfig {
                max_backoff: Duration::from_secs(5),
                deadline: Some(Duration::from_secs(30)),
                ..Default::default()
            });
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

    /// Connects, finds this node's partitions and runs a task for each;
    /// then looks for partitions (and topics) added every
    /// `metadata_refresh`, and runs a task for each new one.
    async fn supervise(self, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let mut backoff = Duration::from_millis(200);
        let (client, (owned, dead_letter)) = loop {
            let attempt = async {
                let client = this.connect().await?;
                let owned = this.owned_partitions(&client).await?;
                let dead_letter = this.dead_letter_partitions(&client).await?;
                Ok::<_, String>((client, (owned, dead_letter)))
            };
            match unless_stopped(&mut stop, attempt).await {
                None => return,
                Some(Ok(found)) => break found,
                Some(Err(error)) => {
                    tracing::warn!(%error, "Kafka receiver not consuming; retrying");
                    *this.connection.lock() = Some(error);
                }
            }
            if !pause(&mut stop, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        };
        let client = Arc::new(client);
        tracing::info!(
            partitions = ?owned.iter().map(|(t, p, _)| format!("{t}/{p}")).collect::<Vec<_>>(),
            "Kafka receiver consuming"
        );
        let mut tasks = Vec::new();
        let mut running = std::collections::HashSet::new();
        let (mut owned, mut first) = (owned, true);
        loop {
            for (topic, partition, encoding) in owned {
                if !running.insert((topic.clone(), partition)) {
                    continue;
                }
                if !first {
                    tracing::info!(%topic, partition, "Kafka partition added to the topic: consuming it");
                }
                let mut consumer =
                    this.consumer(&client, dead_letter.as_ref(), topic, partition, encoding);
                // Made after the receiver started: every message is new.
                consumer.from_earliest = !first;
                tasks.push(tokio::spawn(consumer.run(stop.clone())));
            }
            first = false;
            if !pause(&mut stop, this.config.metadata_refresh).await {
                break;
            }
            owned = match unless_stopped(&mut stop, this.owned_partitions(&client)).await {
                None => break,
                Some(Ok(owned)) => owned,
                Some(Err(error)) => {
                    tracing::warn!(%error, "Kafka topics not read again; the partitions known go on");
                    Vec::new()
                }
            };
        }
        futures::future::join_all(tasks).await;
    }

    /// The consumer of one partition, known to queries and `/ready` from
    /// now on.
    fn consumer(
        self: &Arc<Self>,
        client: &Arc<Client>,
        dead_letter: Option<&(String, Vec<i32>)>,
        topic: String,
        partition: i32,
        encoding: Encoding,
    ) -> Consumer {
        let shared = Arc::new(Shared {
            app_id: app_id(&topic, partition),
            buffer: Arc::new(Buffer::new(None, TenantGauges::default())),
            state: Mutex::new(PartitionState {
                topic: topic.clone(),
                partition,
                ..PartitionState::default()
            }),
        });
        self.partitions.lock().push(Arc::clone(&shared));
        Consumer {
            run: Arc::clone(self),
            client: Arc::clone(client),
            // Spread over the dead-letter topic's partitions.
            dead_letter: dead_letter.map(|(topic, partitions)| {
                let at = partition.rem_euclid(partitions.len() as i32) as usize;
                (topic.clone(), partitions[at])
            }),
            dead_letter_client: Mutex::new(None),
            from_earliest: false,
            labels: PartitionLabels {
                topic: topic.clone(),
                partition: partition.to_string(),
            },
            topic,
            partition,
            encoding,
            shared,
        }
    }

    /// The configured topics' partitions this node consumes. Topics the
    /// brokers do not have (yet) are named in the receiver's state
    /// (`/ready`) and looked for again at the next listing.
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
        let mut missing = Vec::new();
        for (name, encoding) in &self.config.topics {
            let Some(topic) = topics.iter().find(|t| &t.name == name) else {
                missing.push(name.as_str());
                continue;
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
        let problem = (!missing.is_empty()).then(|| {
            format!(
                "Kafka topics {} do not exist; looked for again every {:?}",
                missing.join(", "),
                self.config.metadata_refresh
            )
        });
        if let Some(problem) = &problem
            && self.connection.lock().as_ref() != Some(problem)
        {
            tracing::warn!("{problem}");
        }
        *self.connection.lock() = problem;
        Ok(owned)
    }

    /// The dead-letter topic and its partitions, when there is one.
    async fn dead_letter_partitions(
        &self,
        client: &Client,
    ) -> Result<Option<(String, Vec<i32>)>, String> {
        let Some(name) = &self.config.dead_letter_topic else {
            return Ok(None);
        };
        let topics = client
            .list_topics()
            .await
            .map_err(|e| format!("listing Kafka topics: {e}"))?;
        match topics.into_iter().find(|t| &t.name == name) {
            Some(topic) if !topic.partitions.is_empty() => {
                Ok(Some((name.clone(), topic.partitions.into_iter().collect())))
            }
            _ => Err(format!("Kafka dead-letter topic {name} does not exist")),
        }
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

/// `copy` as it goes to the dead-letter topic: without its value when it
/// would not fit a produce request on its own (brokers refuse batches over
/// `message.max.bytes`, 1 MiB by default), saying how large it was.
fn dead_letter_copy(mut copy: rskafka::record::Record) -> rskafka::record::Record {
    if copy.approximate_size() > DEAD_LETTER_BATCH_BYTES {
        let size = copy.value.take().map_or(0, |v| v.len());
        copy.headers.insert(
            DEAD_LETTER_DROPPED_VALUE.to_string(),
            size.to_string().into_bytes(),
        );
    }
    copy
}

/// `copies` in produce requests of at most [`DEAD_LETTER_BATCH_BYTES`]
/// (before compression), in their order.
fn dead_letter_batches(
    copies: impl Iterator<Item = rskafka::record::Record>,
) -> Vec<Vec<rskafka::record::Record>> {
    let mut batches: Vec<Vec<rskafka::record::Record>> = Vec::new();
    let mut bytes = 0;
    for copy in copies {
        let size = copy.approximate_size();
        match batches.last_mut() {
            Some(batch) if bytes + size <= DEAD_LETTER_BATCH_BYTES => batch.push(copy),
            _ => {
                batches.push(vec![copy]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    batches
}

/// A message that was refused, and why.
struct Bad {
    offset: i64,
    reason: &'static str,
    message: String,
    record: rskafka::record::Record,
}

/// One partition's consumer.
struct Consumer {
    run: Arc<Run>,
    client: Arc<Client>,
    /// The dead-letter topic and the partition of it this one's bad
    /// messages go to.
    dead_letter: Option<(String, i32)>,
    dead_letter_client: Mutex<Option<Arc<PartitionClient>>>,
    /// Start at the earliest offset whatever `--kafka-start` says (a
    /// partition or topic found after the receiver started).
    from_earliest: bool,
    topic: String,
    partition: i32,
    encoding: Encoding,
    shared: Arc<Shared>,
    labels: PartitionLabels,
}

/// Returns once `stop` turns true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// `fut`'s output, or `None` when a stop comes first.
async fn unless_stopped<T>(
    stop: &mut watch::Receiver<bool>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        out = fut => Some(out),
        () = stopped(stop) => None,
    }
}

/// Waits `delay`; `false` when a stop came first.
async fn pause(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    unless_stopped(stop, tokio::time::sleep(delay))
        .await
        .is_some()
}

impl Consumer {
    fn fail(&self, error: String) {
        tracing::warn!(topic = %self.topic, partition = self.partition, %error, "Kafka partition not consuming; retrying");
        self.shared.state.lock().error = Some(error);
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        // Until the partition client, the table's offset for it and the
        // first offset to fetch are known.
        let (client, mut committed, mut next) = loop {
            match unless_stopped(&mut stop, self.open()).await {
                None => return,
                Some(Ok(opened)) => break opened,
                Some(Err(error)) => self.fail(error),
            }
            if !pause(&mut stop, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        };
        // The last offset consumed (buffered, or skipped as bad), and
        // since when it is ahead of the table's.
        let mut consumed: Option<i64> = committed;
        let mut ahead_since: Option<Instant> = None;
        let mut fetch_bytes = self.run.config.fetch_max_bytes;
        loop {
            let stopping = *stop.borrow() || stop.has_changed().is_err();
            let flush = &self.run.flush;
            let due = ahead_since.is_some_and(|t| t.elapsed() >= flush.max_age)
                || self.shared.buffer.bytes() >= flush.max_bytes;
            if (due || stopping) && consumed > committed {
                let upto = consumed.expect("consumed > committed");
                match self.flush(committed, upto).await {
                    Ok(at) if at == consumed => committed = at,
                    Ok(at) => {
                        // Another consumer committed this partition: what
                        // is buffered may be in the table already.
                        tracing::warn!(
                            topic = %self.topic,
                            partition = self.partition,
                            table = ?at,
                            "another consumer committed this partition; fetching again after its offset"
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
                            None => {
                                match unless_stopped(&mut stop, self.start_offset(&client)).await {
                                    Some(Ok(next)) => next,
                                    Some(Err(error)) => {
                                        self.fail(error);
                                        continue;
                                    }
                                    None => return,
                                }
                            }
                        };
                    }
                    Err(error) => {
                        tracing::error!(topic = %self.topic, partition = self.partition, %error, "Kafka partition flush failed; rows stay buffered and will be retried");
                        self.shared.state.lock().error = Some(error);
                        if stopping {
                            // The table cannot take the rows now: Kafka
                            // keeps them for the next start.
                            return;
                        }
                        pause(&mut stop, Duration::from_millis(500)).await;
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
                pause(&mut stop, Duration::from_millis(50)).await;
                continue;
            }
            let fetch = client.fetch_records(next, 1..fetch_bytes, 250);
            let Some(fetched) = unless_stopped(&mut stop, fetch).await else {
                continue;
            };
            let (records, high_watermark) = match fetched {
                Ok(fetched) => fetched,
                Err(rskafka::client::error::Error::ServerError {
                    protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
                    ..
                }) => {
                    let range = unless_stopped(&mut stop, async {
                        Ok::<_, rskafka::client::error::Error>((
                            client.get_offset(OffsetAt::Earliest).await?,
                            client.get_offset(OffsetAt::Latest).await?,
                        ))
                    })
                    .await;
                    match range {
                        None => continue,
                        Some(Ok((earliest, _))) if earliest > next => {
                            tracing::error!(
                                topic = %self.topic,
                                partition = self.partition,
                                from = next,
                                to = earliest,
                                "Kafka deleted messages before they were consumed (retention): they are lost"
                            );
                            next = earliest;
                            continue;
                        }
                        Some(Ok((earliest, latest))) => self.fail(format!(
                            "offset {next} is outside the partition's offsets {earliest}..{latest}: \
                             the table holds it up to {committed:?} (was the topic deleted and made \
                             again?)"
                        )),
                        Some(Err(error)) => self.fail(format!("reading the partition's offsets: {error}")),
                    }
                    pause(&mut stop, Duration::from_secs(2)).await;
                    continue;
                }
                Err(error) => {
                    self.fail(format!("fetching from offset {next}: {error}"));
                    pause(&mut stop, Duration::from_millis(500)).await;
                    continue;
                }
            };
            let records: Vec<RecordAndOffset> =
                records.into_iter().filter(|r| r.offset >= next).collect();
            match records.last().map(|r| r.offset) {
                Some(last) => {
                    if let Err(error) = self.consume(records).await {
                        // Nothing of the fetch is buffered: fetched again.
                        self.fail(error);
                        pause(&mut stop, Duration::from_millis(500)).await;
                        continue;
                    }
                    consumed = Some(last);
                    next = last + 1;
                    ahead_since.get_or_insert_with(Instant::now);
                    fetch_bytes = self.run.config.fetch_max_bytes;
                }
                // Nothing returned below the high watermark: a record batch
                // larger than the fetch's limit (Kafka sends a first batch
                // whole whatever the limit; tansu sends nothing), fetched
                // again with twice the limit; records of a transaction not
                // committed yet (the client reads committed records only),
                // which come once it commits; or a transaction marker (a
                // control batch, which the client leaves out), stepped over.
                None if high_watermark > next => {
                    if fetch_bytes < WIDEST_FETCH_BYTES {
                        fetch_bytes = fetch_bytes.saturating_mul(2).min(WIDEST_FETCH_BYTES);
                        continue;
                    }
                    fetch_bytes = self.run.config.fetch_max_bytes;
                    // The latest offset, read committed: the last stable one.
                    match unless_stopped(&mut stop, client.get_offset(OffsetAt::Latest)).await {
                        None => continue,
                        Some(Ok(stable)) if next >= stable => {
                            // An open transaction: look again in a moment.
                            pause(&mut stop, Duration::from_millis(200)).await;
                        }
                        Some(Ok(_)) => {
                            tracing::warn!(
                                topic = %self.topic,
                                partition = self.partition,
                                offset = next,
                                "no record at this offset in a fetch of 64 MiB: stepped over (a \
                                 transaction marker, or a record batch larger than the broker \
                                 sends at once)"
                            );
                            next += 1;
                        }
                        Some(Err(error)) => {
                            self.fail(format!("reading the partition's offsets: {error}"));
                            pause(&mut stop, Duration::from_millis(500)).await;
                            continue;
                        }
                    }
                }
                None => {}
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

    /// The partition's client, the table's offset for it, and the first
    /// offset to fetch.
    async fn open(&self) -> Result<(PartitionClient, Option<i64>, i64), String> {
        let client = self
            .client
            .partition_client(&self.topic, self.partition, UnknownTopicHandling::Error)
            .await
            .map_err(|e| format!("opening {}/{}: {e}", self.topic, self.partition))?;
        if let Some((topic, partition)) = &self.dead_letter {
            let dead_letter = self
                .client
                .partition_client(topic.as_str(), *partition, UnknownTopicHandling::Error)
                .await
                .map_err(|e| format!("opening the dead-letter topic's {topic}/{partition}: {e}"))?;
            *self.dead_letter_client.lock() = Some(Arc::new(dead_letter));
        }
        self.run.table.refresh().await.map_err(|e| e.to_string())?;
        let committed = self
            .run
            .table
            .transaction_version(&self.shared.app_id)
            .await
            .map_err(|e| e.to_string())?;
        self.shared.state.lock().committed = committed;
        let next = match committed {
            Some(at) => at + 1,
            None => self.start_offset(&client).await?,
        };
        Ok((client, committed, next))
    }

    /// Where a partition the table holds nothing of starts. From the
    /// latest offset, that offset is committed first (with no rows), so a
    /// crash before the first commit of rows resumes there, not at a later
    /// latest.
    async fn start_offset(&self, client: &PartitionClient) -> Result<i64, String> {
        let offsets = |e| {
            format!(
                "reading the offsets of {}/{}: {e}",
                self.topic, self.partition
            )
        };
        let start_at = if self.from_earliest {
            StartAt::Earliest
        } else {
            self.run.config.start_at
        };
        match start_at {
            StartAt::Earliest => client.get_offset(OffsetAt::Earliest).await.map_err(offsets),
            StartAt::Latest => {
                let latest = client.get_offset(OffsetAt::Latest).await.map_err(offsets)?;
                if latest > 0 {
                    let table = &self.run.table;
                    match table
                        .commit_as(Vec::new(), &self.shared.app_id, latest - 1, |c| c.is_none())
                        .await
                    {
                        Ok(_) => {}
                        // Another consumer started it first: from there.
                        Err(crate::table::Error::Fenced {
                            committed: Some(at),
                            ..
                        }) => return Ok(at + 1),
                        Err(error) => return Err(error.to_string()),
                    }
                }
                Ok(latest)
            }
        }
    }

    /// Decodes fetched messages (on the blocking pool) into the buffer;
    /// the bad ones are counted, logged, copied to the dead-letter topic
    /// when there is one, and skipped. An error (the dead-letter topic
    /// refused them) leaves nothing buffered: the caller fetches again.
    async fn consume(&self, records: Vec<RecordAndOffset>) -> Result<(), String> {
        let count = records.len() as u64;
        let encoding = self.encoding;
        let acceptance = self.run.ingest.acceptance();
        let layout = Arc::clone(&self.run.layout);
        let decoded = tokio::task::spawn_blocking(move || {
            let mut batches = Vec::with_capacity(records.len());
            let mut bad: Vec<Bad> = Vec::new();
            let mut rejections = tracelake_schema::otlp::Rejections::default();
            for RecordAndOffset { record, offset } in records {
                let Some(value) = &record.value else {
                    bad.push(Bad {
                        offset,
                        reason: "empty",
                        message: "no value".to_string(),
                        record,
                    });
                    continue;
                };
                match encoding.batch(value, &layout, acceptance) {
                    Ok((batch, taken)) => {
                        for (reason, n) in taken.reasons {
                            rejections.add_n(reason, n);
                        }
                        batches.push((batch, offset));
                    }
                    Err((reason, message)) => bad.push(Bad {
                        offset,
                        reason,
                        message,
                        record,
                    }),
                }
            }
            (join(batches, MAX_JOINED_BYTES), bad, rejections)
        })
        .await;
        let (joined, bad, rejections) = match decoded {
            Ok((Ok(joined), bad, rejections)) => (joined, bad, rejections),
            Ok((Err(error), ..)) => return Err(format!("joining decoded batches: {error}")),
            Err(error) => return Err(format!("decoding task failed: {error}")),
        };
        if !bad.is_empty() {
            self.to_dead_letter_topic(&bad).await?;
        }
        self.run
            .kafka_metrics
            .messages
            .get_or_create(&self.labels)
            .inc_by(count);
        for Bad {
            offset,
            reason,
            message,
            ..
        } in &bad
        {
            tracing::warn!(
                topic = %self.topic,
                partition = self.partition,
                offset,
                encoding = encoding.name(),
                error = %message,
                dead_letter_topic = self.dead_letter.as_ref().map(|(t, _)| t.as_str()),
                "skipping a Kafka message that does not decode or is too large once decoded"
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
        let accepted: u64 = joined.iter().map(|(b, _)| b.num_rows() as u64).sum();
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
        for (batch, offset) in &joined {
            self.shared.buffer.insert(*offset as u64, batch);
        }
        Ok(())
    }

    /// Copies `bad` to the dead-letter topic (when there is one), each
    /// message with headers saying why and whence
    /// ([`DEAD_LETTER_HEADERS`]). They are there at least once: a restart
    /// before the partition's next commit copies them again.
    async fn to_dead_letter_topic(&self, bad: &[Bad]) -> Result<(), String> {
        let Some((topic, partition)) = &self.dead_letter else {
            return Ok(());
        };
        let Some(client) = self.dead_letter_client.lock().clone() else {
            return Err("the dead-letter topic is not open".into());
        };
        let copies = bad.iter().map(|b| {
            let mut headers = b.record.headers.clone();
            for (name, value) in DEAD_LETTER_HEADERS.iter().zip([
                b.reason.to_string(),
                b.message.clone(),
                self.topic.clone(),
                self.partition.to_string(),
                b.offset.to_string(),
                self.encoding.name().to_string(),
            ]) {
                headers.insert((*name).to_string(), value.into_bytes());
            }
            dead_letter_copy(rskafka::record::Record {
                key: b.record.key.clone(),
                value: b.record.value.clone(),
                headers,
                timestamp: b.record.timestamp,
            })
        });
        let batches = dead_letter_batches(copies);
        for records in batches {
            let n = records.len();
            // gzip: every Kafka client reads it (zstd needs a library many
            // lack).
            client
                .produce(records, rskafka::client::partition::Compression::Gzip)
                .await
                .map_err(|e| {
                    format!(
                        "copying {n} bad messages to the dead-letter topic's {topic}/{partition}: {e}"
                    )
                })?;
        }
        for b in bad {
            self.run
                .kafka_metrics
                .dead_letters
                .get_or_create(&ReasonLabels {
                    topic: self.topic.clone(),
                    reason: b.reason.to_string(),
                })
                .inc();
        }
        Ok(())
    }

    /// Commits the buffered rows, which follow the table's offset
    /// `committed`, with the partition's offset `upto`; returns the
    /// partition's offset in the table afterwards: `upto`, or another
    /// consumer's when it committed this partition meanwhile (the buffer is
    /// then not committed: the caller drops it).
    async fn flush(&self, committed: Option<i64>, upto: i64) -> Result<Option<i64>, String> {
        let table = &self.run.table;
        let buffer = &self.shared.buffer;
        table.refresh().await.map_err(|e| e.to_string())?;
        let now = table
            .transaction_version(&self.shared.app_id)
            .await
            .map_err(|e| e.to_string())?;
        if now != committed {
            // Ours landed before an answer was lost (`now == upto`), or
            // another consumer's did: either way the table decides.
            if now == Some(upto) {
                buffer.take();
                buffer.committed(table.version().await.unwrap_or(0));
            }
            return Ok(now);
        }
        let partitions = buffer.take().map(|s| s.partitions).unwrap_or_default();
        match self.write_and_commit(partitions, committed, upto).await {
            Ok(version) => {
                buffer.committed(version);
                Ok(Some(upto))
            }
            // Another consumer's commit landed after the check above.
            Err(crate::table::Error::Fenced { committed: now, .. }) => {
                if now == Some(upto) {
                    // It holds these very offsets: the rows are in the
                    // table. Kept, they would be committed again with the
                    // next offsets, as the caller takes `upto` for ours.
                    buffer.committed(table.version().await.unwrap_or(0));
                } else {
                    // The caller drops them and fetches after `now`.
                    buffer.restore();
                }
                Ok(now)
            }
            Err(error) => {
                buffer.restore();
                Err(error.to_string())
            }
        }
    }

    /// Writes the rows' files and commits them with the partition's offset
    /// `upto`, only onto a table whose offset for the partition is still
    /// `committed` ([`crate::table::Error::Fenced`] otherwise).
    async fn write_and_commit(
        &self,
        partitions: BTreeMap<crate::buffer::PartitionKey, Vec<RecordBatch>>,
        committed: Option<i64>,
        upto: i64,
    ) -> Result<i64, crate::table::Error> {
        let failed = |message: String| crate::table::Error::Write(message);
        let files = tokio::task::spawn_blocking(move || {
            partitions
                .iter()
                .map(|(key, batches)| write_partition(*key, batches))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
        let mut adds = Vec::with_capacity(files.len());
        let uploaded = Instant::now();
        for file in files {
            let size = file.bytes.len() as u64;
            self.run
                .store
                .put(&Path::from(file.path.as_str()), file.bytes.into())
                .await
                .map_err(|e| failed(format!("uploading {}: {e}", file.path)))?;
            let keys = trace_keys::keys_path(&file.path);
            self.run
                .store
                .put(
                    &Path::from(keys.as_str()),
                    trace_keys::encode(&file.keys).into(),
                )
                .await
                .map_err(|e| failed(format!("uploading {keys}: {e}")))?;
            self.run.metrics.files_written.inc();
            self.run.metrics.rows_written.inc_by(file.rows as u64);
            self.run.metrics.bytes_written.inc_by(size);
            adds.push(file.add);
        }
        crate::faults::hit("kafka.commit").map_err(|e| failed(e.to_string()))?;
        // As for the node's own flushes: the compactor may vacuum files not
        // in the table once they are the grace old.
        if self.run.table.url().scheme() != "file" && uploaded.elapsed() > self.run.vacuum_grace / 2
        {
            return Err(failed(format!(
                "files uploaded {:.0} s ago not committed: vacuum may delete files not in the \
                 table once they are {} s old (--vacuum-grace); they are written again",
                uploaded.elapsed().as_secs_f64(),
                self.run.vacuum_grace.as_secs()
            )));
        }
        let version = self
            .run
            .table
            .commit_as(adds, &self.shared.app_id, upto, |now| now == committed)
            .await?;
        crate::faults::hit("kafka.committed").map_err(|e| failed(e.to_string()))?;
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use tracelake_schema::otlp::Acceptance;

    use super::*;

    #[test]
    fn encodings_parse_by_the_exporters_names() {
        for name in [
            "otlp_proto",
            "otlp_json",
            "zipkin_proto",
            "zipkin_json",
            "jaeger_proto",
            "jaeger_json",
        ] {
            assert_eq!(name.parse::<Encoding>().unwrap().name(), name);
        }
        assert!("otlp".parse::<Encoding>().unwrap_err().contains("unknown"));
    }

    /// A fetch's messages are joined into batches that stay under the
    /// limit, so no column of a buffered batch nears 32-bit offsets however
    /// many large messages a fetch holds; each batch says the offset of
    /// its last message, in order, and a message over the limit on its own
    /// stays alone.
    #[test]
    fn messages_join_into_batches_under_the_limit() {
        use tracelake_schema::opentelemetry_proto::tonic::trace::v1::Span;
        let message = |id: u8, name_bytes: usize| {
            crate::test_spans::batch(vec![Span {
                trace_id: vec![1; 16],
                span_id: vec![id; 8],
                name: "n".repeat(name_bytes),
                start_time_unix_nano: 1,
                end_time_unix_nano: 2,
                ..Default::default()
            }])
        };
        let batches: Vec<(RecordBatch, i64)> = [(1, 10), (2, 10), (3, 1 << 20), (4, 10), (5, 10)]
            .into_iter()
            .zip(10..)
            .map(|((id, bytes), offset)| (message(id, bytes), offset))
            .collect();
        let size = |i: usize| batches[i].0.get_array_memory_size();
        let limit = size(0) + size(1);
        assert!(size(2) > limit && size(3) + size(4) <= limit);
        let joined = join(batches, limit).unwrap();
        let shape: Vec<(Vec<Vec<u8>>, i64)> = joined
            .iter()
            .map(|(batch, offset)| {
                let ids = batch
                    .column_by_name(tracelake_schema::spans::SPAN_ID)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<arrow::array::BinaryArray>()
                    .unwrap()
                    .iter()
                    .map(|id| id.unwrap().to_vec())
                    .collect();
                (ids, *offset)
            })
            .collect();
        let ids = |ids: &[u8]| ids.iter().map(|&i| vec![i; 8]).collect::<Vec<_>>();
        assert_eq!(
            shape,
            vec![(ids(&[1, 2]), 11), (ids(&[3]), 12), (ids(&[4, 5]), 14)]
        );
        assert!(join(Vec::new(), limit).unwrap().is_empty());
    }

    /// A message whose spans would copy their resource past the limit (a
    /// 64 KiB resource over 4,200 spans, 275 MB once decoded, from a
    /// message of 270 kB) is refused whole as too large, like one that
    /// does not decode; the same spans under a small resource are rows.
    #[test]
    fn a_message_too_large_once_decoded_is_a_bad_one() {
        use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use tracelake_schema::opentelemetry_proto::tonic::common::v1::{
            AnyValue, KeyValue, any_value,
        };
        use tracelake_schema::opentelemetry_proto::tonic::resource::v1::Resource;
        use tracelake_schema::opentelemetry_proto::tonic::trace::v1::{
            ResourceSpans, ScopeSpans, Span,
        };
        let message = |resource_bytes: usize| {
            let spans = (1..=4_200u64)
                .map(|i| Span {
                    trace_id: vec![1; 16],
                    span_id: i.to_be_bytes().to_vec(),
                    start_time_unix_nano: 1,
                    end_time_unix_nano: 2,
                    ..Default::default()
                })
                .collect();
            let blob = KeyValue {
                key: "blob".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("r".repeat(resource_bytes))),
                }),
                key_strindex: 0,
            };
            prost::Message::encode_to_vec(&ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![blob],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
            })
        };
        let layout = tracelake_schema::layout::Layout::standard();
        let (reason, error) = Encoding::OtlpProto
            .batch(&message(64 << 10), layout, Acceptance::ANY_TIME)
            .unwrap_err();
        assert_eq!(reason, "too_large");
        assert!(error.contains("too large once decoded"), "{error}");
        let (batch, rejections) = Encoding::OtlpProto
            .batch(&message(16), layout, Acceptance::ANY_TIME)
            .unwrap();
        assert_eq!((batch.num_rows(), rejections.count), (4_200, 0));
        let (reason, _) = Encoding::OtlpJson
            .batch(b"{", layout, Acceptance::ANY_TIME)
            .unwrap_err();
        assert_eq!(reason, "undecodable");
    }

    #[test]
    fn dead_letter_copies_fit_produce_requests() {
        let record = |value_bytes: usize| rskafka::record::Record {
            key: None,
            value: Some(vec![7; value_bytes]),
            headers: Default::default(),
            timestamp: Default::default(),
        };
        let copies = [300_000, 200_000, 100_000, 2_000_000, 10]
            .into_iter()
            .map(|n| dead_letter_copy(record(n)));
        let batches = dead_letter_batches(copies);
        let sizes: Vec<Vec<Option<usize>>> = batches
            .iter()
            .map(|b| b.iter().map(|r| r.value.as_ref().map(Vec::len)).collect())
            .collect();
        assert_eq!(
            sizes,
            vec![
                vec![Some(300_000), Some(200_000)],
                vec![Some(100_000), None, Some(10)],
            ]
        );
        assert_eq!(
            batches[1][1].headers[DEAD_LETTER_DROPPED_VALUE],
            b"2000000".to_vec()
        );
        for batch in &batches {
            let bytes: usize = batch.iter().map(|r| r.approximate_size()).sum();
            assert!(bytes <= DEAD_LETTER_BATCH_BYTES, "{bytes}");
        }
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
