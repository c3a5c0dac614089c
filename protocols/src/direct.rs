//! The span the direct decoders ([`otlp_proto`](crate::otlp_proto),
//! [`otlp_json`](crate::otlp_json)) fill as they read a request body, then
//! hand to [`SpansBuilder::append_span_columns`], then a scope's and a
//! resource's columns for all their rows: strings and bytes borrowed from
//! the body where the wire format allows it, one scratch reused for every
//! span of a request, so no tree of owned OTLP structs is built.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
use tracelake_schema::otlp::view::{
    AttributeView, EventView, LinkView, ResourceRef, ScopeRef, SpanView, ValueRef,
};
use tracelake_schema::otlp::{Acceptance, Rejections, SpansBuilder};

/// An attribute value as decoded. Arrays and key-value lists (rare, nested
/// to any depth) are the OTLP structs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Absent,
    Empty,
    Str(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Cow<'a, [u8]>),
    Array(ArrayValue),
    KvList(KeyValueList),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Attribute<'a> {
    pub key: Cow<'a, str>,
    pub value: Value<'a>,
}

impl AttributeView for Attribute<'_> {
    fn key(&self) -> &str {
        &self.key
    }

    fn value(&self) -> ValueRef<'_> {
        match &self.value {
            Value::Absent => ValueRef::Absent,
            Value::Empty => ValueRef::Empty,
            Value::Str(s) => ValueRef::Str(s),
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Double(d) => ValueRef::Double(*d),
            Value::Bytes(b) => ValueRef::Bytes(b),
            Value::Array(a) => ValueRef::Array(a),
            Value::KvList(l) => ValueRef::KvList(l),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Event<'a> {
    pub time_unix_nano: u64,
    pub name: Cow<'a, str>,
    pub attributes: Vec<Attribute<'a>>,
    pub dropped_attributes_count: u32,
}

impl<'a> EventView for Event<'a> {
    type Attribute = Attribute<'a>;
    fn time_unix_nano(&self) -> u64 {
        self.time_unix_nano
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn attributes(&self) -> &[Attribute<'a>] {
        &self.attributes
    }
    fn dropped_attributes_count(&self) -> u32 {
        self.dropped_attributes_count
    }
}

/// A trace or span id: borrowed from a protobuf body, or decoded from hex
/// into the id itself (no allocation for ids of up to 16 bytes).
#[derive(Debug, Clone)]
pub(crate) enum Id<'a> {
    Borrowed(&'a [u8]),
    Inline { bytes: [u8; 16], len: u8 },
    Owned(Vec<u8>),
}

impl Default for Id<'_> {
    fn default() -> Self {
        Self::Borrowed(&[])
    }
}

impl std::ops::Deref for Id<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Borrowed(b) => b,
            Self::Inline { bytes, len } => &bytes[..usize::from(*len)],
            Self::Owned(v) => v,
        }
    }
}

impl Id<'_> {
    /// The id written in `hex` (an even number of hex digits).
    pub(crate) fn from_hex(hex: &str) -> Result<Self, hex::FromHexError> {
        let len = hex.len() / 2;
        if len <= 16 && hex.len().is_multiple_of(2) {
            let mut bytes = [0; 16];
            hex::decode_to_slice(hex, &mut bytes[..len])?;
            return Ok(Self::Inline {
                bytes,
                len: len as u8,
            });
        }
        hex::decode(hex).map(Self::Owned)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Link<'a> {
    pub trace_id: Id<'a>,
    pub span_id: Id<'a>,
    pub trace_state: Cow<'a, str>,
    pub flags: u32,
    pub attributes: Vec<Attribute<'a>>,
    pub dropped_attributes_count: u32,
}

impl<'a> LinkView for Link<'a> {
    type Attribute = Attribute<'a>;
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
    fn attributes(&self) -> &[Attribute<'a>] {
        &self.attributes
    }
    fn dropped_attributes_count(&self) -> u32 {
        self.dropped_attributes_count
    }
}

/// One span; [`clear`](Span::clear) keeps the attribute vector's capacity
/// for the next span.
#[derive(Debug, Default)]
pub(crate) struct Span<'a> {
    pub trace_id: Id<'a>,
    pub span_id: Id<'a>,
    pub parent_span_id: Id<'a>,
    pub trace_state: Cow<'a, str>,
    pub flags: u32,
    pub name: Cow<'a, str>,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<Attribute<'a>>,
    pub dropped_attributes_count: u32,
    pub events: Vec<Event<'a>>,
    pub dropped_events_count: u32,
    pub links: Vec<Link<'a>>,
    pub dropped_links_count: u32,
    pub status: Option<(i32, Cow<'a, str>)>,
}

impl Span<'_> {
    pub(crate) fn clear(&mut self) {
        let mut attributes = std::mem::take(&mut self.attributes);
        attributes.clear();
        *self = Self {
            attributes,
            ..Self::default()
        };
    }
}

impl<'a> SpanView for Span<'a> {
    type Attribute = Attribute<'a>;
    type Event = Event<'a>;
    type Link = Link<'a>;
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
    fn attributes(&self) -> &[Attribute<'a>] {
        &self.attributes
    }
    fn dropped_attributes_count(&self) -> u32 {
        self.dropped_attributes_count
    }
    fn events(&self) -> &[Event<'a>] {
        &self.events
    }
    fn dropped_events_count(&self) -> u32 {
        self.dropped_events_count
    }
    fn links(&self) -> &[Link<'a>] {
        &self.links
    }
    fn dropped_links_count(&self) -> u32 {
        self.dropped_links_count
    }
    fn status(&self) -> Option<(i32, &str)> {
        self.status.as_ref().map(|(c, m)| (*c, m.as_ref()))
    }
}

/// A resource or an instrumentation scope, as decoded.
#[derive(Debug, Default)]
pub(crate) struct Owner<'a> {
    pub name: Cow<'a, str>,
    pub version: Cow<'a, str>,
    pub attributes: Vec<Attribute<'a>>,
    pub dropped_attributes_count: u32,
    pub schema_url: Cow<'a, str>,
}

impl<'a> Owner<'a> {
    pub(crate) fn as_resource(&self) -> ResourceRef<'_, Attribute<'a>> {
        ResourceRef {
            attributes: &self.attributes,
            dropped_attributes_count: self.dropped_attributes_count,
            schema_url: &self.schema_url,
        }
    }

    pub(crate) fn as_scope(&self) -> ScopeRef<'_, Attribute<'a>> {
        ScopeRef {
            name: &self.name,
            version: &self.version,
            attributes: &self.attributes,
            dropped_attributes_count: self.dropped_attributes_count,
            schema_url: &self.schema_url,
        }
    }
}

/// Where a direct decoder writes: the builder, the acceptance window and
/// the count of what was rejected.
pub struct Sink<'b> {
    pub builder: &'b mut SpansBuilder,
    pub acceptance: Acceptance,
    pub rejections: Rejections,
}

impl<'b> Sink<'b> {
    pub fn new(builder: &'b mut SpansBuilder, acceptance: Acceptance) -> Self {
        Self {
            builder,
            acceptance,
            rejections: Rejections::default(),
        }
    }

    /// A span's own columns; its scope's and resource's come after, for
    /// all the rows of each at once.
    pub(crate) fn span_columns(&mut self, span: &Span<'_>) {
        if let Err(r) = self.builder.append_span_columns(span, &self.acceptance) {
            self.rejections.add(r);
        }
    }
}
