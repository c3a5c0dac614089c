//! Spans schema v3: one row per span, in Delta Lake's type system.
//!
//! Delta has no unsigned integers, no fixed-size binary and stores timestamps
//! in microseconds, so ids are `Binary`, OTLP `uint32`/`fixed32` fields are
//! `Int64`, and the start time is `start_time_unix_nano` (lossless); the
//! microsecond `start_time` that SQL offers is computed from it on read
//! ([`sql_schema`]), not stored. Every column after the ids is nullable so
//! that later schema versions can add columns and still read files written
//! by this one.
//!
//! Attribute sets (span, resource, scope, event, link) use two maps:
//! `*_attributes` maps each key to its value rendered as text (so
//! `span_attributes['http.route']` works in SQL) and `*_attribute_types` holds
//! the type code of every key whose value is not a string (see
//! [`crate::attributes`]); together they are lossless.
//!
//! The span and resource attributes that instrumentation sets most
//! ([`DEDICATED`], [`RESOURCE_DEDICATED`]) have typed columns of their own
//! instead: a value of the column's type is
//! stored there and *not* in the map, so nothing is stored twice; a value of
//! another type stays in the map. The query service rewrites
//! `span_attributes['k']` (`resource_attributes['k']`) of such a key to read
//! its column. A table can have more such columns, for keys its operators
//! choose ([`crate::layout`]).
//!
//! Version 2 (before 2026-12) stored `start_time` too, and copies of ten
//! attributes in typed columns while keeping them in the map; tables of
//! that version are rewritten in place at start ([`crate::upgrade`]).

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field, Fields, SchemaRef, TimeUnit};

use crate::layout::Layout;

/// Version of the layout described here; stored in the table properties and in
/// every Parquet file's key-value metadata under [`SCHEMA_VERSION_KEY`].
pub const SCHEMA_VERSION: u32 = 3;
/// Metadata key under which [`SCHEMA_VERSION`] is recorded.
pub const SCHEMA_VERSION_KEY: &str = "tracelake.schema.version";
/// Metadata key of a Parquet file listing, comma-separated, the top-level
/// columns that hold no value in the file: null, or an empty list or map,
/// in every row. A reader may make them rather than read them; a writer
/// merging files carries the list over (and stores them uncompressed).
pub const EMPTY_COLUMNS_KEY: &str = "tracelake.empty.columns";

/// `rows` rows of a column a file lists under [`EMPTY_COLUMNS_KEY`]: an
/// empty list or map in each row for a list or map column (no writer
/// stores a null one), a null for any other.
pub fn empty_column(data_type: &DataType, rows: usize) -> ArrayRef {
    use arrow_array::cast::AsArray as _;
    use arrow_array::{ListArray, MapArray, new_empty_array, new_null_array};
    use arrow_buffer::OffsetBuffer;
    match data_type {
        DataType::List(item) => Arc::new(ListArray::new(
            Arc::clone(item),
            OffsetBuffer::new_zeroed(rows),
            new_empty_array(item.data_type()),
            None,
        )),
        DataType::Map(entries, sorted) => Arc::new(MapArray::new(
            Arc::clone(entries),
            OffsetBuffer::new_zeroed(rows),
            new_empty_array(entries.data_type()).as_struct().clone(),
            None,
            *sorted,
        )),
        other => new_null_array(other, rows),
    }
}

/// The columns a file's key-value metadata (key, value) lists under
/// [`EMPTY_COLUMNS_KEY`].
pub fn empty_columns<'a>(
    metadata: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> HashSet<&'a str> {
    metadata
        .into_iter()
        .filter(|(key, _)| *key == EMPTY_COLUMNS_KEY)
        .filter_map(|(_, value)| value)
        .flat_map(|value| value.split(','))
        .filter(|c| !c.is_empty())
        .collect()
}

pub const TRACE_ID: &str = "trace_id";
/// The last 8 bytes of `trace_id` as a big-endian signed integer (see
/// [`trace_key`]). Data files are sorted by it and the Delta log keeps its
/// per-file min/max (Delta has no statistics for binary columns), so a
/// lookup by trace id skips every file whose range cannot hold the trace.
pub const TRACE_KEY: &str = "trace_key";
pub const SPAN_ID: &str = "span_id";
pub const PARENT_SPAN_ID: &str = "parent_span_id";
pub const TRACE_STATE: &str = "trace_state";
pub const FLAGS: &str = "flags";
pub const NAME: &str = "name";
pub const KIND: &str = "kind";
pub const SERVICE_NAME: &str = "service_name";
pub const START_TIME: &str = "start_time";
pub const START_TIME_UNIX_NANO: &str = "start_time_unix_nano";
pub const DURATION_NS: &str = "duration_ns";
pub const STATUS_CODE: &str = "status_code";
pub const STATUS_MESSAGE: &str = "status_message";
pub const SPAN_ATTRIBUTES: &str = "span_attributes";
pub const SPAN_ATTRIBUTE_TYPES: &str = "span_attribute_types";
pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
pub const EVENTS: &str = "events";
pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
pub const LINKS: &str = "links";
pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";
pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
pub const RESOURCE_ATTRIBUTE_TYPES: &str = "resource_attribute_types";
pub const RESOURCE_DROPPED_ATTRIBUTES_COUNT: &str = "resource_dropped_attributes_count";
pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
pub const SCOPE_NAME: &str = "scope_name";
pub const SCOPE_VERSION: &str = "scope_version";
pub const SCOPE_ATTRIBUTES: &str = "scope_attributes";
pub const SCOPE_ATTRIBUTE_TYPES: &str = "scope_attribute_types";
pub const SCOPE_DROPPED_ATTRIBUTES_COUNT: &str = "scope_dropped_attributes_count";
pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";
/// Partition column: UTC date of the span's start time.
pub const DATE: &str = "date";
/// Partition column: UTC hour (0-23) of the span's start time.
pub const HOUR: &str = "hour";

/// Partition columns, in path order (`date=YYYY-MM-DD/hour=HH`).
pub const PARTITION_COLUMNS: [&str; 2] = [DATE, HOUR];

// Fields of the `events` and `links` structs.
pub const TIME_UNIX_NANO: &str = "time_unix_nano";
pub const ATTRIBUTES: &str = "attributes";
pub const ATTRIBUTE_TYPES: &str = "attribute_types";

/// Span attributes with a typed column of their own: the keys of the
/// semantic conventions (current and still widely sent older ones) that
/// instrumentation sets most, and that searches filter and group on. The
/// column is named after the key with `.` replaced by `_`.
pub const DEDICATED: &[Dedicated] = &[
    Dedicated::text("http.request.method", "http_request_method"),
    Dedicated::int("http.response.status_code", "http_response_status_code"),
    Dedicated::text("http.route", "http_route"),
    Dedicated::text("url.full", "url_full"),
    Dedicated::text("url.path", "url_path"),
    Dedicated::text("url.scheme", "url_scheme"),
    Dedicated::text("server.address", "server_address"),
    Dedicated::int("server.port", "server_port"),
    Dedicated::text("client.address", "client_address"),
    Dedicated::int("client.port", "client_port"),
    Dedicated::text("network.peer.address", "network_peer_address"),
    Dedicated::int("network.peer.port", "network_peer_port"),
    Dedicated::text("network.protocol.version", "network_protocol_version"),
    Dedicated::text("user_agent.original", "user_agent_original"),
    Dedicated::text("rpc.system", "rpc_system"),
    Dedicated::text("rpc.service", "rpc_service"),
    Dedicated::text("rpc.method", "rpc_method"),
    Dedicated::int("rpc.grpc.status_code", "rpc_grpc_status_code"),
    Dedicated::text("db.system.name", "db_system_name"),
    Dedicated::text("db.namespace", "db_namespace"),
    Dedicated::text("db.operation.name", "db_operation_name"),
    Dedicated::text("db.collection.name", "db_collection_name"),
    Dedicated::text("db.query.text", "db_query_text"),
    Dedicated::text("messaging.system", "messaging_system"),
    Dedicated::text("messaging.operation.type", "messaging_operation_type"),
    Dedicated::text("messaging.destination.name", "messaging_destination_name"),
    Dedicated::text(
        "messaging.consumer.group.name",
        "messaging_consumer_group_name",
    ),
    Dedicated::int(
        "messaging.kafka.message.offset",
        "messaging_kafka_message_offset",
    ),
    Dedicated::text("peer.service", "peer_service"),
    Dedicated::text("error.type", "error_type"),
    Dedicated::text("thread.name", "thread_name"),
    Dedicated::int("thread.id", "thread_id"),
    Dedicated::text("code.function", "code_function"),
    Dedicated::text("code.function.name", "code_function_name"),
    // Older names, still sent by many SDKs and by Zipkin and Jaeger clients.
    Dedicated::text("http.method", "http_method"),
    Dedicated::int("http.status_code", "http_status_code"),
    Dedicated::text("http.url", "http_url"),
    Dedicated::text("http.target", "http_target"),
    Dedicated::text("net.peer.name", "net_peer_name"),
    Dedicated::int("net.peer.port", "net_peer_port"),
    Dedicated::text("db.system", "db_system"),
    Dedicated::text("db.statement", "db_statement"),
];

/// Resource attributes with a typed column of their own, named
/// `resource_` and the key with `.` replaced by `_`: the resource semantic
/// conventions that searches filter on and that few resources share
/// (where, not which instance). Keys of one process (`service.instance.id`,
/// `host.name`, `k8s.pod.name`, `service.version`) cost more as columns
/// than in the map: about 0.4 bytes/span each against 0.75 for the whole
/// map, whose entries zstd finds again as one run per resource
/// (BENCHMARKS.md). `service.name` is not among them: `service_name` is
/// always set (`unknown_service` without it), so the map keeps the key.
pub const RESOURCE_DEDICATED: &[Dedicated] = &[
    Dedicated::text("service.namespace", "resource_service_namespace"),
    Dedicated::text(
        "deployment.environment.name",
        "resource_deployment_environment_name",
    ),
    Dedicated::text("deployment.environment", "resource_deployment_environment"),
    Dedicated::text("k8s.cluster.name", "resource_k8s_cluster_name"),
    Dedicated::text("k8s.namespace.name", "resource_k8s_namespace_name"),
    Dedicated::text("cloud.provider", "resource_cloud_provider"),
    Dedicated::text("cloud.region", "resource_cloud_region"),
];

/// A span attribute stored in a typed column of its own.
#[derive(Debug, Clone, Copy)]
pub struct Dedicated {
    pub key: &'static str,
    pub column: &'static str,
    /// `Int64` column holding integer values (else `Utf8` holding strings).
    pub int: bool,
}

impl Dedicated {
    const fn text(key: &'static str, column: &'static str) -> Self {
        Self {
            key,
            column,
            int: false,
        }
    }

    const fn int(key: &'static str, column: &'static str) -> Self {
        Self {
            key,
            column,
            int: true,
        }
    }

    pub fn data_type(&self) -> DataType {
        if self.int {
            DataType::Int64
        } else {
            DataType::Utf8
        }
    }
}

/// Index in [`DEDICATED`] of span attribute `key`'s column; a `match`, which
/// compiles to comparisons by length first, as this runs for every
/// attribute of every span.
#[inline]
pub fn dedicated_index(key: &str) -> Option<usize> {
    Some(match key {
        "http.request.method" => 0,
        "http.response.status_code" => 1,
        "http.route" => 2,
        "url.full" => 3,
        "url.path" => 4,
        "url.scheme" => 5,
        "server.address" => 6,
        "server.port" => 7,
        "client.address" => 8,
        "client.port" => 9,
        "network.peer.address" => 10,
        "network.peer.port" => 11,
        "network.protocol.version" => 12,
        "user_agent.original" => 13,
        "rpc.system" => 14,
        "rpc.service" => 15,
        "rpc.method" => 16,
        "rpc.grpc.status_code" => 17,
        "db.system.name" => 18,
        "db.namespace" => 19,
        "db.operation.name" => 20,
        "db.collection.name" => 21,
        "db.query.text" => 22,
        "messaging.system" => 23,
        "messaging.operation.type" => 24,
        "messaging.destination.name" => 25,
        "messaging.consumer.group.name" => 26,
        "messaging.kafka.message.offset" => 27,
        "peer.service" => 28,
        "error.type" => 29,
        "thread.name" => 30,
        "thread.id" => 31,
        "code.function" => 32,
        "code.function.name" => 33,
        "http.method" => 34,
        "http.status_code" => 35,
        "http.url" => 36,
        "http.target" => 37,
        "net.peer.name" => 38,
        "net.peer.port" => 39,
        "db.system" => 40,
        "db.statement" => 41,
        _ => return None,
    })
}

/// Index in [`RESOURCE_DEDICATED`] of resource attribute `key`'s column.
#[inline]
pub fn resource_dedicated_index(key: &str) -> Option<usize> {
    Some(match key {
        "service.namespace" => 0,
        "deployment.environment.name" => 1,
        "deployment.environment" => 2,
        "k8s.cluster.name" => 3,
        "k8s.namespace.name" => 4,
        "cloud.provider" => 5,
        "cloud.region" => 6,
        _ => return None,
    })
}

/// The attribute sets with dedicated columns: the span's and the
/// resource's.
#[derive(Debug)]
pub struct DedicatedScope {
    /// The map column of the other keys, and its type-code map.
    pub map: &'static str,
    pub types: &'static str,
    pub columns: &'static [Dedicated],
    index: fn(&str) -> Option<usize>,
}

impl DedicatedScope {
    /// The position of `key`'s column in [`DedicatedScope::columns`].
    #[inline]
    pub fn index(&self, key: &str) -> Option<usize> {
        (self.index)(key)
    }

    pub fn get(&self, key: &str) -> Option<&'static Dedicated> {
        self.index(key).map(|i| &self.columns[i])
    }
}

pub static SPAN_SCOPE: DedicatedScope = DedicatedScope {
    map: SPAN_ATTRIBUTES,
    types: SPAN_ATTRIBUTE_TYPES,
    columns: DEDICATED,
    index: dedicated_index,
};

pub static RESOURCE_SCOPE: DedicatedScope = DedicatedScope {
    map: RESOURCE_ATTRIBUTES,
    types: RESOURCE_ATTRIBUTE_TYPES,
    columns: RESOURCE_DEDICATED,
    index: resource_dedicated_index,
};

/// Both scopes with dedicated columns.
pub static DEDICATED_SCOPES: [&DedicatedScope; 2] = [&SPAN_SCOPE, &RESOURCE_SCOPE];

/// The top-level attribute maps whose keys a data file lists in its Delta
/// `Add` tags ([`map_keys_tag`]), each with its type-code map (whose keys
/// are among the map's).
pub const KEYED_MAPS: [(&str, &str); 3] = [
    (SPAN_ATTRIBUTES, SPAN_ATTRIBUTE_TYPES),
    (RESOURCE_ATTRIBUTES, RESOURCE_ATTRIBUTE_TYPES),
    (SCOPE_ATTRIBUTES, SCOPE_ATTRIBUTE_TYPES),
];

/// The Delta `Add` tag of a data file listing the distinct keys of its
/// attribute map `map` (one of [`KEYED_MAPS`]) as a JSON array of strings.
/// A lookup of any other key in that file is null, so a query need not
/// read the map there. The tag is left out when the file's map has more
/// than [`MAX_TAGGED_KEYS`] keys; a file without it (or written before
/// tracelake kept them) may hold any key.
pub fn map_keys_tag(map: &str) -> String {
    format!("tracelake.mapKeys.{map}")
}

/// Most keys of one map a data file lists ([`map_keys_tag`]): the Delta
/// log carries the list of every file.
pub const MAX_TAGGED_KEYS: usize = 128;

/// The dedicated column of span attribute `key`, if it has one.
pub fn dedicated(key: &str) -> Option<&'static Dedicated> {
    dedicated_index(key).map(|i| &DEDICATED[i])
}

/// Map from key to text value (`Map<Utf8, Utf8>`), with the entry/key/value
/// names Parquet and Delta use.
pub fn attributes_type() -> DataType {
    map_type(DataType::Utf8)
}

/// Map from key to the type code of a non-string value (`Map<Utf8, Int8>`).
pub fn attribute_types_type() -> DataType {
    map_type(DataType::Int8)
}

fn map_type(value: DataType) -> DataType {
    let entries = Fields::from(vec![
        Field::new(MAP_KEY, DataType::Utf8, false),
        Field::new(MAP_VALUE, value, true),
    ]);
    DataType::Map(
        Arc::new(Field::new(MAP_ENTRIES, DataType::Struct(entries), false)),
        false,
    )
}

/// Names of a map column's entries, key and value fields.
pub const MAP_ENTRIES: &str = "key_value";
pub const MAP_KEY: &str = "key";
pub const MAP_VALUE: &str = "value";

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Fields of one element of the `events` list.
pub fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new(TIME_UNIX_NANO, DataType::Int64, true),
        Field::new(NAME, DataType::Utf8, true),
        Field::new(ATTRIBUTES, attributes_type(), true),
        Field::new(ATTRIBUTE_TYPES, attribute_types_type(), true),
        Field::new(DROPPED_ATTRIBUTES_COUNT, DataType::Int64, true),
    ])
}

/// Fields of one element of the `links` list.
pub fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new(TRACE_ID, DataType::Binary, true),
        Field::new(SPAN_ID, DataType::Binary, true),
        Field::new(TRACE_STATE, DataType::Utf8, true),
        Field::new(FLAGS, DataType::Int64, true),
        Field::new(ATTRIBUTES, attributes_type(), true),
        Field::new(ATTRIBUTE_TYPES, attribute_types_type(), true),
        Field::new(DROPPED_ATTRIBUTES_COUNT, DataType::Int64, true),
    ])
}

pub(crate) fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new(
        "element",
        DataType::Struct(fields),
        true,
    )))
}

/// The fields of the standard layout (no configured columns), partition
/// columns last.
pub(crate) fn standard_fields() -> Vec<Field> {
    let mut fields = vec![
        Field::new(TRACE_ID, DataType::Binary, false),
        Field::new(TRACE_KEY, DataType::Int64, false),
        Field::new(SPAN_ID, DataType::Binary, false),
        Field::new(PARENT_SPAN_ID, DataType::Binary, true),
        Field::new(TRACE_STATE, DataType::Utf8, true),
        Field::new(FLAGS, DataType::Int64, true),
        Field::new(NAME, DataType::Utf8, true),
        Field::new(KIND, DataType::Utf8, true),
        Field::new(SERVICE_NAME, DataType::Utf8, true),
        Field::new(START_TIME_UNIX_NANO, DataType::Int64, true),
        Field::new(DURATION_NS, DataType::Int64, true),
        Field::new(STATUS_CODE, DataType::Utf8, true),
        Field::new(STATUS_MESSAGE, DataType::Utf8, true),
    ];
    fields.extend(
        DEDICATED
            .iter()
            .map(|d| Field::new(d.column, d.data_type(), true)),
    );
    fields.extend([
        Field::new(SPAN_ATTRIBUTES, attributes_type(), true),
        Field::new(SPAN_ATTRIBUTE_TYPES, attribute_types_type(), true),
        Field::new(DROPPED_ATTRIBUTES_COUNT, DataType::Int64, true),
        Field::new(EVENTS, list_of(event_fields()), true),
        Field::new(DROPPED_EVENTS_COUNT, DataType::Int64, true),
        Field::new(LINKS, list_of(link_fields()), true),
        Field::new(DROPPED_LINKS_COUNT, DataType::Int64, true),
        Field::new(RESOURCE_ATTRIBUTES, attributes_type(), true),
        Field::new(RESOURCE_ATTRIBUTE_TYPES, attribute_types_type(), true),
        Field::new(RESOURCE_DROPPED_ATTRIBUTES_COUNT, DataType::Int64, true),
        Field::new(RESOURCE_SCHEMA_URL, DataType::Utf8, true),
    ]);
    fields.extend(
        RESOURCE_DEDICATED
            .iter()
            .map(|d| Field::new(d.column, d.data_type(), true)),
    );
    fields.extend([
        Field::new(SCOPE_NAME, DataType::Utf8, true),
        Field::new(SCOPE_VERSION, DataType::Utf8, true),
        Field::new(SCOPE_ATTRIBUTES, attributes_type(), true),
        Field::new(SCOPE_ATTRIBUTE_TYPES, attribute_types_type(), true),
        Field::new(SCOPE_DROPPED_ATTRIBUTES_COUNT, DataType::Int64, true),
        Field::new(SCOPE_SCHEMA_URL, DataType::Utf8, true),
        Field::new(DATE, DataType::Date32, true),
        Field::new(HOUR, DataType::Int32, true),
    ]);
    fields
}

/// The spans schema as stored (the Delta table's, and the rows the
/// collector buffers) in the standard layout, partition columns (`date`,
/// `hour`) last. A table with configured dedicated columns has them too
/// ([`Layout::schema`]).
pub fn spans_schema() -> SchemaRef {
    Arc::clone(Layout::standard().schema())
}

/// The `spans` table of SQL in the standard layout: the stored columns,
/// plus `start_time` (the start in microseconds, as a UTC timestamp) before
/// `start_time_unix_nano`, from which it is computed
/// ([`Layout::sql_schema`]).
pub fn sql_schema() -> SchemaRef {
    Arc::clone(Layout::standard().sql_schema())
}

/// The schema of the data files in the standard layout: the spans schema
/// without the partition columns, whose values live in the Delta log and
/// the file paths ([`Layout::file_schema`]).
pub fn file_schema() -> SchemaRef {
    Arc::clone(Layout::standard().file_schema())
}

/// OTLP span kinds as stored in `kind`, indexed by their OTLP enum number.
pub const SPAN_KINDS: [&str; 6] = [
    "UNSPECIFIED",
    "INTERNAL",
    "SERVER",
    "CLIENT",
    "PRODUCER",
    "CONSUMER",
];

/// OTLP status codes as stored in `status_code`, indexed by enum number.
pub const STATUS_CODES: [&str; 3] = ["UNSET", "OK", "ERROR"];

/// OTLP enum number of a stored `kind` name.
pub fn span_kind_number(name: &str) -> Option<i32> {
    SPAN_KINDS.iter().position(|k| *k == name).map(|i| i as i32)
}

/// OTLP enum number of a stored `status_code` name.
pub fn status_code_number(name: &str) -> Option<i32> {
    STATUS_CODES
        .iter()
        .position(|k| *k == name)
        .map(|i| i as i32)
}

/// The [`TRACE_KEY`] of a trace id: its last 8 bytes (the random part of
/// W3C ids, and the whole of 64-bit Zipkin and Jaeger ids) as a big-endian
/// `i64`; shorter ids are left-padded with zeros.
pub fn trace_key(trace_id: &[u8]) -> i64 {
    let mut low = [0u8; 8];
    let n = trace_id.len().min(8);
    low[8 - n..].copy_from_slice(&trace_id[trace_id.len() - n..]);
    i64::from_be_bytes(low)
}

/// `(date, hour)` partition of a start time in Unix nanoseconds: days since
/// the epoch (Arrow `Date32`) and the UTC hour.
pub fn partition_of(start_time_unix_nano: i64) -> (i32, i32) {
    const HOUR_NS: i64 = 3_600_000_000_000;
    let hours = start_time_unix_nano.div_euclid(HOUR_NS);
    (hours.div_euclid(24) as i32, hours.rem_euclid(24) as i32)
}

/// Whether Parquet's reader failed because a batch's values of one column
/// (strings, binaries, list entries) pass what one array's 32-bit offsets
/// address, 2 GiB: `message` is the reader's error text ("index overflow
/// decoding byte array", "offset ... would overflow list array"), as is or
/// inside an Arrow error's. Fewer rows a batch then read the file; the
/// text is the one thing that tells (not "integer overflow decoding thrift
/// value", a corrupt page header).
pub fn batch_too_large_for_one_array(message: &str) -> bool {
    message.contains("index overflow decoding byte array")
        || message.contains("would overflow list array")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_of_start_time() {
        // 2026-11-21T13:55:00Z is day 20778 since the epoch
        let ns = 1_795_269_300_000_000_000;
        assert_eq!(partition_of(ns), (20778, 13));
        assert_eq!(partition_of(0), (0, 0));
        assert_eq!(partition_of(-1), (-1, 23));
    }

    #[test]
    fn trace_key_is_the_low_half() {
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&42i64.to_be_bytes());
        id[0] = 0xff;
        assert_eq!(trace_key(&id), 42);
        assert_eq!(trace_key(&[0xff; 16]), -1);
        assert_eq!(trace_key(&[1, 2]), 0x0102);
    }

    #[test]
    fn dedicated_index_matches_the_list() {
        for (i, d) in DEDICATED.iter().enumerate() {
            assert_eq!(dedicated_index(d.key), Some(i), "{}", d.key);
            assert_eq!(d.column, d.key.replace('.', "_"));
        }
        assert_eq!(dedicated_index("http.routes"), None);
        for (i, d) in RESOURCE_DEDICATED.iter().enumerate() {
            assert_eq!(resource_dedicated_index(d.key), Some(i), "{}", d.key);
            assert_eq!(d.column, format!("resource_{}", d.key.replace('.', "_")));
        }
        let schema = spans_schema();
        assert_eq!(
            schema.fields().len(),
            schema
                .fields()
                .iter()
                .map(|f| f.name())
                .collect::<std::collections::HashSet<_>>()
                .len(),
            "column names are unique"
        );
        let columns: std::collections::HashSet<_> = DEDICATED.iter().map(|d| d.column).collect();
        assert_eq!(columns.len(), DEDICATED.len());
    }

    #[test]
    fn file_schema_has_no_partition_columns() {
        let file = file_schema();
        assert_eq!(file.fields().len() + 2, spans_schema().fields().len());
        assert!(file.field_with_name(DATE).is_err());
        assert!(file.field_with_name(TRACE_ID).is_ok());
    }
}
