//! What [`SpansBuilder`](super::SpansBuilder) reads a span through: borrowed
//! views, so that a decoder can hand over a span it decoded into a reused
//! scratch (strings borrowed from the request body) as well as a decoded
//! `opentelemetry-proto` span. One writer, whatever the source.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};

/// An attribute value, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// A `KeyValue` without an `AnyValue`.
    Absent,
    /// An `AnyValue` with no value set.
    Empty,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(&'a ArrayValue),
    KvList(&'a KeyValueList),
}

/// One key-value of an attribute set.
pub trait AttributeView {
    fn key(&self) -> &str;
    fn value(&self) -> ValueRef<'_>;
}

/// A span event.
pub trait EventView {
    type Attribute: AttributeView;
    fn time_unix_nano(&self) -> u64;
    fn name(&self) -> &str;
    fn attributes(&self) -> &[Self::Attribute];
    fn dropped_attributes_count(&self) -> u32;
}

/// A span link.
pub trait LinkView {
    type Attribute: AttributeView;
    fn trace_id(&self) -> &[u8];
    fn span_id(&self) -> &[u8];
    fn trace_state(&self) -> &str;
    fn flags(&self) -> u32;
    fn attributes(&self) -> &[Self::Attribute];
    fn dropped_attributes_count(&self) -> u32;
}

/// A span, with OTLP's field meanings (empty means absent).
pub trait SpanView {
    type Attribute: AttributeView;
    type Event: EventView<Attribute = Self::Attribute>;
    type Link: LinkView<Attribute = Self::Attribute>;
    fn trace_id(&self) -> &[u8];
    fn span_id(&self) -> &[u8];
    fn parent_span_id(&self) -> &[u8];
    fn trace_state(&self) -> &str;
    fn flags(&self) -> u32;
    fn name(&self) -> &str;
    fn kind(&self) -> i32;
    fn start_time_unix_nano(&self) -> u64;
    fn end_time_unix_nano(&self) -> u64;
    fn attributes(&self) -> &[Self::Attribute];
    fn dropped_attributes_count(&self) -> u32;
    fn events(&self) -> &[Self::Event];
    fn dropped_events_count(&self) -> u32;
    fn links(&self) -> &[Self::Link];
    fn dropped_links_count(&self) -> u32;
    /// Status code and message; `None` when the span has no status.
    fn status(&self) -> Option<(i32, &str)>;
}

/// The resource of a group of spans.
#[derive(Debug)]
pub struct ResourceRef<'a, A> {
    pub attributes: &'a [A],
    pub dropped_attributes_count: u32,
    pub schema_url: &'a str,
}

/// The instrumentation scope of a group of spans.
#[derive(Debug)]
pub struct ScopeRef<'a, A> {
    pub name: &'a str,
    pub version: &'a str,
    pub attributes: &'a [A],
    pub dropped_attributes_count: u32,
    pub schema_url: &'a str,
}

/// What the spans of one resource and scope share.
///
/// Each context made has an id of its own, so a
/// [`SpansBuilder`](crate::otlp::SpansBuilder) given the same context for
/// span after span works out once where the resource's attributes go
/// (dedicated columns, map) and writes every row from that. The fields are
/// fixed when the context is made, so the id always stands for the same
/// resource and scope.
#[derive(Debug)]
pub struct Context<'a, A> {
    pub(crate) resource: ResourceRef<'a, A>,
    pub(crate) scope: ScopeRef<'a, A>,
    pub(crate) id: u64,
}

impl<'a, A> Context<'a, A> {
    pub fn new(resource: ResourceRef<'a, A>, scope: ScopeRef<'a, A>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            resource,
            scope,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// The `service.name` resource attribute, if it is a string.
pub fn service_name<A: AttributeView>(resource_attributes: &[A]) -> Option<&str> {
    resource_attributes
        .iter()
        .find(|kv| kv.key() == "service.name")
        .and_then(|kv| match kv.value() {
            ValueRef::Str(s) => Some(s),
            _ => None,
        })
}

impl AttributeView for KeyValue {
    fn key(&self) -> &str {
        &self.key
    }

    fn value(&self) -> ValueRef<'_> {
        let Some(value) = &self.value else {
            return ValueRef::Absent;
        };
        match &value.value {
            Some(Value::StringValue(s)) => ValueRef::Str(s),
            Some(Value::BoolValue(b)) => ValueRef::Bool(*b),
            Some(Value::IntValue(i)) => ValueRef::Int(*i),
            Some(Value::DoubleValue(d)) => ValueRef::Double(*d),
            Some(Value::BytesValue(b)) => ValueRef::Bytes(b),
            Some(Value::ArrayValue(a)) => ValueRef::Array(a),
            Some(Value::KvlistValue(l)) => ValueRef::KvList(l),
            // Profiles-only string-table reference: the spec says to treat
            // it as absent for other signals.
            Some(Value::StringValueStrindex(_)) | None => ValueRef::Empty,
        }
    }
}

impl EventView for Event {
    type Attribute = KeyValue;
    fn time_unix_nano(&self) -> u64 {
        self.time_unix_nano
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }
    fn dropped_attributes_count(&self) -> u32 {
        self.dropped_attributes_count
    }
}

impl LinkView for Link {
    type Attribute = KeyValue;
    fn trace_id(&self) -> &[u8] {
        &self.trace_id
    }
    fn span_id(&self) -> &[u8] {
        &self.span_id
    }
    fn trace_state(&self) -> &str {
        &self.trace_state
    }
    fn flags(&self) -> u32 {
        self.flags
    }
    fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }
    fn dropped_attributes_count(&self) -> u32 {
        self.dropped_attributes_count
    }
}

impl SpanView for Span {
    type Attribute = KeyValue;
    type Event = Event;
    type Link = Link;
    fn trace_id(&self) -> &[u8] {
        &self.trace_id
    }
    fn span_id(&self) -> &[u8] {
        &self.span_id
    }
    fn parent_span_id(&self) -> &[u8] {
        &self.parent_span_id
    }
    fn trace_state(&self) -> &str {
        &self.trace_state
    }
    fn flags(&self) -> u32 {
        self.flags
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> i32 {
        self.kind
    }
    fn start_time_unix_nano(&self) -> u64 {
        self.start_time_unix_nano
    }
    fn end_time_unix_nano(&self) -> u64 {
        self.end_time_unix_nano
    }
    fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }
    fn dropped_attributes_count(&self) -> u32 {
        self.dropped_attributes_count
    }
    fn events(&self) -> &[Event] {
        &self.events
    }
    fn dropped_events_count(&self) -> u32 {
        self.dropped_events_count
    }
    fn links(&self) -> &[Link] {
        &self.links
    }
    fn dropped_links_count(&self) -> u32 {
        self.dropped_links_count
    }
    fn status(&self) -> Option<(i32, &str)> {
        self.status.as_ref().map(|s| (s.code, s.message.as_str()))
    }
}
