//! What the in-process tests share: one small trace (`frontend` calls
//! `payments`, whose server span fails) as the live rows of an engine with
//! no table.

use std::sync::Arc;
use std::time::Duration;

use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_schema::opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use tracelake_schema::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use tracelake_schema::opentelemetry_proto::tonic::resource::v1::Resource;
use tracelake_schema::opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status,
};
use tracelake_schema::otlp::{Acceptance, SpansBuilder};

use crate::{ExecutorConfig, LiveSnapshot, LiveSpans, QueryConfig, QueryEngine};

/// A minute ago, on a whole millisecond (Zipkin and Jaeger speak µs).
fn base() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (now - 60_000_000_000) / 1_000_000 * 1_000_000
}

pub(crate) const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn kv(key: &str, value: Any) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

/// `frontend` GET /checkout (SERVER, 100 ms) calls `payments` charge
/// (CLIENT 40 ms, then its SERVER side 30 ms, which fails).
fn request(t0: u64) -> ExportTraceServiceRequest {
    let trace = hex::decode(TRACE).unwrap();
    let span = |id: u64, parent: u64, name: &str, kind: i32, start: u64, ms: u64| Span {
        trace_id: trace.clone(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            parent.to_be_bytes().to_vec()
        },
        name: name.into(),
        kind,
        start_time_unix_nano: t0 + start * 1_000_000,
        end_time_unix_nano: t0 + (start + ms) * 1_000_000,
        ..Default::default()
    };
    let mut root = span(1, 0, "GET /checkout", 2, 0, 100);
    root.attributes = vec![kv("http.route", Any::StringValue("/checkout".into()))];
    let mut client = span(2, 1, "charge", 3, 10, 40);
    // Two keys with dedicated columns (an integer and a text one).
    client.attributes = vec![
        kv("server.port", Any::IntValue(443)),
        kv("peer.service", Any::StringValue("payments".into())),
    ];
    let mut server = span(3, 2, "charge", 2, 15, 30);
    server.status = Some(Status {
        code: 2,
        message: "card declined".into(),
    });
    // A dedicated key whose value has another type than its column's.
    server.attributes = vec![
        kv("amount", Any::IntValue(42)),
        kv("http.response.status_code", Any::StringValue("402".into())),
    ];
    // A resource attribute with a column of its own, and one without.
    let resource = |name: &str| Resource {
        attributes: vec![
            kv("service.name", Any::StringValue(name.into())),
            kv("k8s.namespace.name", Any::StringValue("shop".into())),
            kv("team", Any::StringValue(format!("{name}-team"))),
        ],
        ..Default::default()
    };
    let scope_spans = |spans| ScopeSpans {
        spans,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(resource("frontend")),
                scope_spans: vec![scope_spans(vec![root, client])],
                ..Default::default()
            },
            ResourceSpans {
                resource: Some(resource("payments")),
                scope_spans: vec![scope_spans(vec![server])],
                ..Default::default()
            },
        ],
    }
}

struct Live(Vec<arrow::array::RecordBatch>);

#[async_trait::async_trait]
impl LiveSpans for Live {
    async fn snapshot(&self, _trace_id: Option<&[u8; 16]>) -> Vec<LiveSnapshot> {
        vec![LiveSnapshot {
            writer: None,
            groups: vec![(1, self.0.clone())],
        }]
    }
}

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) engine: Arc<QueryEngine>,
    /// When the trace starts, Unix nanoseconds.
    pub(crate) t0: u64,
}

/// An engine over the trace of [`request`], a minute old, as live rows.
pub(crate) fn fixture() -> Fixture {
    let t0 = base();
    let mut builder = SpansBuilder::default();
    let rejected = builder.append_request(&request(t0), &Acceptance::ANY_TIME);
    assert_eq!(rejected.count, 0, "{}", rejected.message());
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path()).unwrap();
    let config = QueryConfig {
        executor: ExecutorConfig {
            timeout: Duration::from_secs(30),
            ..ExecutorConfig::default()
        },
        memory_limit_bytes: 1 << 30,
        trace_metadata_bytes: crate::trace_index::DEFAULT_METADATA_BUDGET,
        max_result_rows: 1000,
        distributed: None,
    };
    let live: Arc<dyn LiveSpans> = Arc::new(Live(vec![builder.finish()]));
    let engine = Arc::new(QueryEngine::new(url, Some(live), config).unwrap());
    Fixture {
        _dir: dir,
        engine,
        t0,
    }
}

/// The `Add` action of a data file at `path` (partition 2024-10-01, hour
/// 5) of `size` bytes, for tests that build a Delta log by hand.
pub(crate) fn add(path: &str, size: i64) -> deltalake::kernel::Action {
    use tracelake_schema::spans::{DATE, HOUR};
    deltalake::kernel::Action::Add(deltalake::kernel::Add {
        path: path.to_string(),
        partition_values: [(DATE, "2024-10-01"), (HOUR, "5")]
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .into(),
        size,
        modification_time: 0,
        data_change: true,
        stats: None,
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    })
}

/// Commits `actions` (an append) after `table`'s version of the table at
/// `url`; the table as it is after.
pub(crate) async fn commit(
    url: &url::Url,
    table: &deltalake::DeltaTable,
    actions: Vec<deltalake::kernel::Action>,
) -> deltalake::DeltaTable {
    use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
    use deltalake::protocol::{DeltaOperation, SaveMode};
    use tracelake_schema::spans::{DATE, HOUR};
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: Some(vec![DATE.into(), HOUR.into()]),
        predicate: None,
    };
    CommitBuilder::from(CommitProperties::default())
        .with_actions(actions)
        .build(
            Some(table.snapshot().unwrap()),
            table.log_store(),
            operation,
        )
        .await
        .unwrap();
    deltalake::DeltaTable::try_from_url(url.clone())
        .await
        .unwrap()
}
