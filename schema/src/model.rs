//! Arrow -> OTLP: reads rows of the spans schema back into the OTLP span model,
//! for the query APIs and for the round-trip guarantee.
//!
//! Columns are found by name, so batches may carry extra columns; types must
//! be the canonical ones of [`crate::spans`] (the query service casts view
//! types back first). A span's attributes are its map's entries followed by
//! its [dedicated](crate::spans::DEDICATED) columns that hold a value. Rows
//! of layout version 2 (whose map held every attribute, and whose
//! same-named columns were copies) are read with [`SpanRows::try_new_v2`].

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, Int64Array, ListArray, MapArray, RecordBatch, StringArray,
    StructArray,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use crate::attributes::{self, DecodeError};
use crate::layout::{KEY_METADATA, SET_METADATA};
use crate::spans::*;
use arrow_schema::DataType;
use std::sync::Arc;

/// Error reading spans back from Arrow.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("column {0} is missing")]
    MissingColumn(&'static str),
    #[error("column {column} has type {actual}, expected {expected}")]
    WrongType {
        column: &'static str,
        actual: String,
        expected: &'static str,
    },
    #[error("row {row}: unknown {column} {value:?}")]
    UnknownEnum {
        row: usize,
        column: &'static str,
        value: String,
    },
    #[error(transparent)]
    Attribute(#[from] DecodeError),
    #[error("{0}")]
    Layout(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Typed views of the columns of one batch in the spans schema.
pub struct SpanRows<'a> {
    trace_id: &'a BinaryArray,
    span_id: &'a BinaryArray,
    parent_span_id: &'a BinaryArray,
    trace_state: &'a StringArray,
    flags: &'a Int64Array,
    name: &'a StringArray,
    kind: &'a StringArray,
    service_name: &'a StringArray,
    start_time_unix_nano: &'a Int64Array,
    duration_ns: &'a Int64Array,
    status_code: &'a StringArray,
    status_message: &'a StringArray,
    attributes: &'a MapArray,
    attribute_types: &'a MapArray,
    dropped_attributes_count: &'a Int64Array,
    events: &'a ListArray,
    dropped_events_count: &'a Int64Array,
    links: &'a ListArray,
    dropped_links_count: &'a Int64Array,
    resource_attributes: &'a MapArray,
    resource_attribute_types: &'a MapArray,
    resource_dropped_attributes_count: &'a Int64Array,
    resource_schema_url: &'a StringArray,
    scope_name: &'a StringArray,
    scope_version: &'a StringArray,
    scope_attributes: &'a MapArray,
    scope_attribute_types: &'a MapArray,
    scope_dropped_attributes_count: &'a Int64Array,
    scope_schema_url: &'a StringArray,
    /// The dedicated attribute columns the batch has (built in, then
    /// configured), with their keys.
    dedicated: Vec<(&'a str, ArrayRef)>,
    resource_dedicated: Vec<(&'a str, ArrayRef)>,
    len: usize,
}

fn column<'a, T: Array + 'static>(
    batch: &'a RecordBatch,
    name: &'static str,
    expected: &'static str,
) -> Result<&'a T> {
    let array = batch
        .column_by_name(name)
        .ok_or(Error::MissingColumn(name))?;
    array
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| Error::WrongType {
            column: name,
            actual: array.data_type().to_string(),
            expected,
        })
}

fn str_at(a: &StringArray, row: usize) -> &str {
    if a.is_null(row) { "" } else { a.value(row) }
}

fn text(a: &StringArray, row: usize) -> String {
    str_at(a, row).to_string()
}

fn bytes(a: &BinaryArray, row: usize) -> Vec<u8> {
    if a.is_null(row) {
        Vec::new()
    } else {
        a.value(row).to_vec()
    }
}

fn uint(a: &Int64Array, row: usize) -> u32 {
    if a.is_null(row) {
        0
    } else {
        a.value(row) as u32
    }
}

impl<'a> SpanRows<'a> {
    /// The rows of `batch`, in the current layout.
    pub fn try_new(batch: &'a RecordBatch) -> Result<Self> {
        let mut rows = Self::try_new_v2(batch)?;
        rows.dedicated = dedicated_columns(batch, DEDICATED)?;
        rows.resource_dedicated = dedicated_columns(batch, RESOURCE_DEDICATED)?;
        configured_columns(batch, &mut rows.dedicated, &mut rows.resource_dedicated)?;
        Ok(rows)
    }

    /// The rows of `batch` in layout version 2: every span attribute in the
    /// map, and the typed attribute columns (copies) ignored.
    pub fn try_new_v2(batch: &'a RecordBatch) -> Result<Self> {
        Ok(Self {
            trace_id: column(batch, TRACE_ID, "Binary")?,
            span_id: column(batch, SPAN_ID, "Binary")?,
            parent_span_id: column(batch, PARENT_SPAN_ID, "Binary")?,
            trace_state: column(batch, TRACE_STATE, "Utf8")?,
            flags: column(batch, FLAGS, "Int64")?,
            name: column(batch, NAME, "Utf8")?,
            kind: column(batch, KIND, "Utf8")?,
            service_name: column(batch, SERVICE_NAME, "Utf8")?,
            start_time_unix_nano: column(batch, START_TIME_UNIX_NANO, "Int64")?,
            duration_ns: column(batch, DURATION_NS, "Int64")?,
            status_code: column(batch, STATUS_CODE, "Utf8")?,
            status_message: column(batch, STATUS_MESSAGE, "Utf8")?,
            attributes: column(batch, SPAN_ATTRIBUTES, "Map")?,
            attribute_types: column(batch, SPAN_ATTRIBUTE_TYPES, "Map")?,
            dropped_attributes_count: column(batch, DROPPED_ATTRIBUTES_COUNT, "Int64")?,
            events: column(batch, EVENTS, "List")?,
            dropped_events_count: column(batch, DROPPED_EVENTS_COUNT, "Int64")?,
            links: column(batch, LINKS, "List")?,
            dropped_links_count: column(batch, DROPPED_LINKS_COUNT, "Int64")?,
            resource_attributes: column(batch, RESOURCE_ATTRIBUTES, "Map")?,
            resource_attribute_types: column(batch, RESOURCE_ATTRIBUTE_TYPES, "Map")?,
            resource_dropped_attributes_count: column(
                batch,
                RESOURCE_DROPPED_ATTRIBUTES_COUNT,
                "Int64",
            )?,
            resource_schema_url: column(batch, RESOURCE_SCHEMA_URL, "Utf8")?,
            scope_name: column(batch, SCOPE_NAME, "Utf8")?,
            scope_version: column(batch, SCOPE_VERSION, "Utf8")?,
            scope_attributes: column(batch, SCOPE_ATTRIBUTES, "Map")?,
            scope_attribute_types: column(batch, SCOPE_ATTRIBUTE_TYPES, "Map")?,
            scope_dropped_attributes_count: column(batch, SCOPE_DROPPED_ATTRIBUTES_COUNT, "Int64")?,
            scope_schema_url: column(batch, SCOPE_SCHEMA_URL, "Utf8")?,
            dedicated: Vec::new(),
            resource_dedicated: Vec::new(),
            len: batch.num_rows(),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn trace_id(&self, row: usize) -> &'a [u8] {
        self.trace_id.value(row)
    }

    pub fn span_id(&self, row: usize) -> &'a [u8] {
        self.span_id.value(row)
    }

    /// Parent span id, `None` for a root.
    pub fn parent_span_id(&self, row: usize) -> Option<&'a [u8]> {
        (!self.parent_span_id.is_null(row)).then(|| self.parent_span_id.value(row))
    }

    pub fn service_name(&self, row: usize) -> &'a str {
        str_at(self.service_name, row)
    }

    pub fn name(&self, row: usize) -> &'a str {
        str_at(self.name, row)
    }

    /// Stored kind name (`SERVER`, ...), empty when null.
    pub fn kind(&self, row: usize) -> &'a str {
        str_at(self.kind, row)
    }

    /// Stored status code name (`UNSET`, `OK`, `ERROR`), empty when null.
    pub fn status_code(&self, row: usize) -> &'a str {
        str_at(self.status_code, row)
    }

    pub fn start_time_unix_nano(&self, row: usize) -> i64 {
        self.start_time_unix_nano.value(row)
    }

    pub fn duration_ns(&self, row: usize) -> i64 {
        self.duration_ns.value(row)
    }

    /// The OTLP span of `row`.
    pub fn span(&self, row: usize) -> Result<Span> {
        let start = self.start_time_unix_nano.value(row) as u64;
        let enum_err = |column: &'static str, value: &str| Error::UnknownEnum {
            row,
            column,
            value: value.to_string(),
        };
        let kind_name = self.kind.value(row);
        let kind = span_kind_number(kind_name).ok_or_else(|| enum_err(KIND, kind_name))?;
        let code_name = self.status_code.value(row);
        let code = status_code_number(code_name).ok_or_else(|| enum_err(STATUS_CODE, code_name))?;
        Ok(Span {
            trace_id: bytes(self.trace_id, row),
            span_id: bytes(self.span_id, row),
            trace_state: text(self.trace_state, row),
            parent_span_id: bytes(self.parent_span_id, row),
            flags: uint(self.flags, row),
            name: text(self.name, row),
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: start.wrapping_add(self.duration_ns.value(row) as u64),
            attributes: self.span_attributes(row)?,
            dropped_attributes_count: uint(self.dropped_attributes_count, row),
            events: self.events(row)?,
            dropped_events_count: uint(self.dropped_events_count, row),
            links: self.links(row)?,
            dropped_links_count: uint(self.dropped_links_count, row),
            status: Some(Status {
                message: text(self.status_message, row),
                code,
            }),
        })
    }

    /// The span attributes of `row`: the map's, then the dedicated columns'.
    pub fn span_attributes(&self, row: usize) -> Result<Vec<KeyValue>> {
        let mut out = attributes::decode(self.attributes, Some(self.attribute_types), row)?;
        add_dedicated(&mut out, &self.dedicated, row);
        Ok(out)
    }

    fn events(&self, row: usize) -> Result<Vec<Event>> {
        let Some(s) = list_row(self.events, row) else {
            return Ok(Vec::new());
        };
        let time = s.column(0).as_primitive::<Int64Type>();
        let name = s.column(1).as_string::<i32>();
        let (attrs, types) = (s.column(2).as_map(), s.column(3).as_map());
        let dropped = s.column(4).as_primitive::<Int64Type>();
        (0..s.len())
            .map(|i| {
                Ok(Event {
                    time_unix_nano: time.value(i) as u64,
                    name: text(name, i),
                    attributes: attributes::decode(attrs, Some(types), i)?,
                    dropped_attributes_count: uint(dropped, i),
                })
            })
            .collect()
    }

    fn links(&self, row: usize) -> Result<Vec<Link>> {
        let Some(s) = list_row(self.links, row) else {
            return Ok(Vec::new());
        };
        let trace_id = s.column(0).as_binary::<i32>();
        let span_id = s.column(1).as_binary::<i32>();
        let trace_state = s.column(2).as_string::<i32>();
        let flags = s.column(3).as_primitive::<Int64Type>();
        let (attrs, types) = (s.column(4).as_map(), s.column(5).as_map());
        let dropped = s.column(6).as_primitive::<Int64Type>();
        (0..s.len())
            .map(|i| {
                Ok(Link {
                    trace_id: bytes(trace_id, i),
                    span_id: bytes(span_id, i),
                    trace_state: text(trace_state, i),
                    attributes: attributes::decode(attrs, Some(types), i)?,
                    dropped_attributes_count: uint(dropped, i),
                    flags: uint(flags, i),
                })
            })
            .collect()
    }

    /// The resource of `row` and its schema URL.
    pub fn resource(&self, row: usize) -> Result<(Resource, String)> {
        let mut attributes = attributes::decode(
            self.resource_attributes,
            Some(self.resource_attribute_types),
            row,
        )?;
        add_dedicated(&mut attributes, &self.resource_dedicated, row);
        Ok((
            Resource {
                attributes,
                dropped_attributes_count: uint(self.resource_dropped_attributes_count, row),
                entity_refs: Vec::new(),
            },
            text(self.resource_schema_url, row),
        ))
    }

    /// The instrumentation scope of `row` and its schema URL.
    pub fn scope(&self, row: usize) -> Result<(InstrumentationScope, String)> {
        Ok((
            InstrumentationScope {
                name: text(self.scope_name, row),
                version: text(self.scope_version, row),
                attributes: attributes::decode(
                    self.scope_attributes,
                    Some(self.scope_attribute_types),
                    row,
                )?,
                dropped_attributes_count: uint(self.scope_dropped_attributes_count, row),
            },
            text(self.scope_schema_url, row),
        ))
    }
}

/// What identifies a row's resource (or scope), borrowed from the columns:
/// rows with equal keys have equal resources, so a reader can decode each
/// resource once ([`SpanRows::resource_key`], [`SpanRows::scope_key`]).
/// Equal resources have equal keys, whichever batches (with whichever
/// dedicated columns) hold their rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey<'a>(Vec<KeyPart<'a>>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyPart<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
}

impl<'a> GroupKey<'a> {
    fn text(&mut self, a: &'a StringArray, row: usize) {
        self.0
            .push(KeyPart::Text((!a.is_null(row)).then(|| a.value(row))));
    }

    fn int(&mut self, a: &'a Int64Array, row: usize) {
        self.0
            .push(KeyPart::Int((!a.is_null(row)).then(|| a.value(row))));
    }

    /// A map's entries at `row`, after their count (or a null).
    fn map(&mut self, map: &'a MapArray, row: usize) {
        if map.is_null(row) {
            self.0.push(KeyPart::Int(None));
            return;
        }
        let offsets = map.value_offsets();
        let (from, to) = (offsets[row] as usize, offsets[row + 1] as usize);
        self.0.push(KeyPart::Int(Some((to - from) as i64)));
        let entries = map.entries();
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1);
        for i in from..to {
            self.0.push(KeyPart::Text(Some(keys.value(i))));
            self.0.push(match values.as_string_opt::<i32>() {
                Some(text) => KeyPart::Text((!text.is_null(i)).then(|| text.value(i))),
                None => {
                    let codes = values.as_primitive::<arrow_array::types::Int8Type>();
                    KeyPart::Int((!codes.is_null(i)).then(|| i64::from(codes.value(i))))
                }
            });
        }
    }

    /// The dedicated columns that hold a value at `row`, after their count,
    /// each value after its key: a column a batch lacks and a null one
    /// give the same parts.
    fn dedicated(&mut self, columns: &'a [(&'a str, ArrayRef)], row: usize) {
        let count = self.0.len();
        self.0.push(KeyPart::Int(Some(0)));
        let mut set = 0;
        for (key, array) in columns {
            if array.is_null(row) {
                continue;
            }
            set += 1;
            self.0.push(KeyPart::Text(Some(key)));
            self.0.push(match array.as_string_opt::<i32>() {
                Some(text) => KeyPart::Text(Some(text.value(row))),
                None => KeyPart::Int(Some(array.as_primitive::<Int64Type>().value(row))),
            });
        }
        self.0[count] = KeyPart::Int(Some(set));
    }
}

impl<'a> SpanRows<'a> {
    /// What identifies the resource of `row` ([`GroupKey`]).
    pub fn resource_key(&self, row: usize) -> GroupKey<'_> {
        let mut key = GroupKey(Vec::with_capacity(32));
        key.map(self.resource_attributes, row);
        key.map(self.resource_attribute_types, row);
        key.dedicated(&self.resource_dedicated, row);
        key.int(self.resource_dropped_attributes_count, row);
        key.text(self.resource_schema_url, row);
        key
    }

    /// What identifies the instrumentation scope of `row` ([`GroupKey`]).
    pub fn scope_key(&self, row: usize) -> GroupKey<'_> {
        let mut key = GroupKey(Vec::with_capacity(8));
        key.text(self.scope_name, row);
        key.text(self.scope_version, row);
        key.map(self.scope_attributes, row);
        key.map(self.scope_attribute_types, row);
        key.int(self.scope_dropped_attributes_count, row);
        key.text(self.scope_schema_url, row);
        key
    }
}

/// The columns of `columns` that `batch` has and that hold a value.
fn dedicated_columns<'a>(
    batch: &RecordBatch,
    columns: &'static [Dedicated],
) -> Result<Vec<(&'a str, ArrayRef)>> {
    let mut out = Vec::new();
    for d in columns {
        if let Some(array) = batch.column_by_name(d.column) {
            if array.data_type() != &d.data_type() {
                return Err(Error::WrongType {
                    column: d.column,
                    actual: array.data_type().to_string(),
                    expected: if d.int { "Int64" } else { "Utf8" },
                });
            }
            if array.null_count() < array.len() {
                out.push((d.key, Arc::clone(array)));
            }
        }
    }
    Ok(out)
}

/// Adds to `span` and `resource` the configured dedicated columns of
/// `batch` that hold a value: those whose field metadata names an attribute
/// set and key ([`crate::layout`]).
fn configured_columns<'a>(
    batch: &'a RecordBatch,
    span: &mut Vec<(&'a str, ArrayRef)>,
    resource: &mut Vec<(&'a str, ArrayRef)>,
) -> Result<()> {
    for (field, array) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        let metadata = field.metadata();
        let Some(set) = metadata.get(SET_METADATA) else {
            continue;
        };
        let to = match set.as_str() {
            "span" => &mut *span,
            "resource" => &mut *resource,
            _ => continue,
        };
        let Some(key) = metadata.get(KEY_METADATA) else {
            continue;
        };
        if !matches!(array.data_type(), DataType::Utf8 | DataType::Int64) {
            return Err(Error::Layout(format!(
                "dedicated column {} has type {}, not Utf8 or Int64",
                field.name(),
                array.data_type()
            )));
        }
        if array.null_count() < array.len() {
            to.push((key.as_str(), Arc::clone(array)));
        }
    }
    Ok(())
}

/// Appends to `out` (the map's attributes) the value of each dedicated
/// column at `row`.
fn add_dedicated(out: &mut Vec<KeyValue>, columns: &[(&str, ArrayRef)], row: usize) {
    let from_map = out.len();
    for (key, array) in columns {
        // A map that SQL already merged with the columns has the key.
        if array.is_null(row) || out[..from_map].iter().any(|kv| kv.key == *key) {
            continue;
        }
        let value = match array.as_string_opt::<i32>() {
            Some(text) => Value::StringValue(text.value(row).to_string()),
            None => Value::IntValue(array.as_primitive::<Int64Type>().value(row)),
        };
        out.push(KeyValue {
            key: key.to_string(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        });
    }
}

fn list_row(list: &ListArray, row: usize) -> Option<StructArray> {
    if list.is_null(row) {
        return None;
    }
    let values = list.value(row);
    Some(values.as_struct().clone())
}

/// Rebuilds an OTLP request from rows in the spans schema. Consecutive rows
/// with the same resource (and scope) share one `ResourceSpans`
/// (`ScopeSpans`), so a request converted to Arrow converts back to itself.
pub fn to_otlp(batches: &[RecordBatch]) -> Result<ExportTraceServiceRequest> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    for batch in batches {
        let rows = SpanRows::try_new(batch)?;
        for row in 0..rows.len() {
            let (resource, resource_url) = rows.resource(row)?;
            let (scope, scope_url) = rows.scope(row)?;
            let span = rows.span(row)?;
            let same_resource = out.last().is_some_and(|rs| {
                rs.resource.as_ref() == Some(&resource) && rs.schema_url == resource_url
            });
            if !same_resource {
                out.push(ResourceSpans {
                    resource: Some(resource),
                    scope_spans: Vec::new(),
                    schema_url: resource_url,
                });
            }
            let rs = out.last_mut().expect("pushed above");
            let same_scope = rs
                .scope_spans
                .last()
                .is_some_and(|ss| ss.scope.as_ref() == Some(&scope) && ss.schema_url == scope_url);
            if !same_scope {
                rs.scope_spans.push(ScopeSpans {
                    scope: Some(scope),
                    spans: Vec::new(),
                    schema_url: scope_url,
                });
            }
            rs.scope_spans
                .last_mut()
                .expect("pushed above")
                .spans
                .push(span);
        }
    }
    Ok(ExportTraceServiceRequest {
        resource_spans: out,
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;

    use super::*;
    use crate::otlp::{Acceptance, SpansBuilder};

    fn kv(key: &str, value: Any) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        }
    }

    /// One batch of one span per resource.
    fn batch(resources: Vec<Vec<KeyValue>>) -> RecordBatch {
        let request = ExportTraceServiceRequest {
            resource_spans: resources
                .into_iter()
                .enumerate()
                .map(|(i, attributes)| ResourceSpans {
                    resource: Some(Resource {
                        attributes,
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span {
                            trace_id: vec![1; 16],
                            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                            start_time_unix_nano: 1,
                            end_time_unix_nano: 2,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                })
                .collect(),
        };
        let mut builder = SpansBuilder::with_capacity(4);
        builder.append_request(&request, &Acceptance::ANY_TIME);
        builder.finish()
    }

    /// Equal resources have equal keys in batches whose dedicated columns
    /// differ; resources that differ in a value, a type or a dedicated
    /// attribute do not.
    #[test]
    fn resource_keys_are_equal_exactly_for_equal_resources() {
        let r = vec![kv("service.name", Any::StringValue("a".into()))];
        let mut s = r.clone();
        s.push(kv("k8s.namespace.name", Any::StringValue("shop".into())));
        let mut as_text = r.clone();
        as_text.push(kv("x", Any::StringValue("1".into())));
        let mut as_int = r.clone();
        as_int.push(kv("x", Any::IntValue(1)));
        // In the first batch the namespace column holds a value; the second
        // has none.
        let first = batch(vec![r.clone(), s, as_text, as_int]);
        let second = batch(vec![r]);
        let (one, two) = (
            SpanRows::try_new(&first).unwrap(),
            SpanRows::try_new(&second).unwrap(),
        );
        assert_eq!(one.resource_dedicated.len(), 1);
        assert!(two.resource_dedicated.is_empty());
        assert_eq!(one.resource_key(0), two.resource_key(0));
        for (a, b) in [(0, 1), (0, 2), (2, 3), (1, 3)] {
            assert_ne!(one.resource_key(a), one.resource_key(b), "{a} {b}");
        }
        assert_eq!(one.scope_key(0), two.scope_key(0));
    }
}
