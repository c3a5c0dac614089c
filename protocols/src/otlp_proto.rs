//! OTLP protobuf (`ExportTraceServiceRequest`) decoded straight into the
//! Arrow builders: a protobuf wire reader over the body that borrows every
//! string and id from it and hands each span to
//! [`SpansBuilder::append_span_columns`](tracelake_schema::otlp::SpansBuilder::append_span_columns),
//! then a scope's and a resource's columns for all their rows at once,
//! with no `opentelemetry-proto` structs in between (the nested array and
//! key-value-list attribute values, which are rare, excepted).
//!
//! It accepts and refuses exactly what `prost` decoding followed by
//! `SpansBuilder::append_request` does, and writes the same rows (the
//! property test and the `otlp_proto` fuzz target compare the two):
//! unknown fields (groups included) are skipped, a singular message field
//! that occurs twice is merged into the first as protobuf requires, the
//! last of a repeated scalar wins, strings must be UTF-8, and a length
//! past the end of its message is an error. One difference, in bodies no
//! exporter writes: prost counts one nesting budget of 100 for the whole
//! request, this reader gives the groups it skips a budget of 100 of their
//! own and hands nested attribute values to prost with a fresh one, so a
//! request nested 95-100 levels deep that prost refuses can be taken here
//! (depth stays bounded either way).
//!
//! PERFORMANCE-CRITICAL: every OTLP/HTTP protobuf and OTLP/gRPC span
//! passes through here.
//!
//! Field numbers are those of opentelemetry-proto's `trace/v1`,
//! `common/v1` and `resource/v1` messages.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{ArrayValue, EntityRef, KeyValueList};
use prost::Message as _;

use crate::direct::{Attribute, Event, Id, Link, Owner, Sink, Span, Value};

/// Why a body is not an `ExportTraceServiceRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid protobuf: {what} at byte {offset}")]
pub struct Error {
    what: &'static str,
    offset: usize,
}

type Result<T> = std::result::Result<T, Error>;

/// Decodes `body` and appends its spans to `sink`. On error the builder
/// may hold some of the request's rows: callers drop it.
pub fn decode_into(body: &[u8], sink: &mut Sink<'_>) -> Result<()> {
    let mut r = Reader::new(body, 0);
    let mut span = Span::default();
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => {
                r.expect(wire, LEN)?;
                resource_spans(r.message()?, sink, &mut span)?;
            }
            _ => r.skip(field, wire)?,
        }
    }
    Ok(())
}

// Wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const SGROUP: u8 = 3;
const EGROUP: u8 = 4;
const I32: u8 = 5;

/// Nesting allowed for groups being skipped (prost's recursion limit).
const MAX_DEPTH: u32 = 100;

/// A protobuf message: its bytes and where they start in the body (for
/// error offsets).
#[derive(Clone, Copy)]
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn err(&self, what: &'static str) -> Error {
        Error {
            what,
            offset: self.base + self.pos,
        }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            // The tenth byte may carry only the top bit of a u64.
            if i == 9 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    /// The next field's number and wire type, `None` at the end.
    fn key(&mut self) -> Result<Option<(u32, u8)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(self.err("field key overflows 32 bits"));
        }
        let wire = (key & 7) as u8;
        if wire > I32 {
            return Err(self.err("invalid wire type"));
        }
        let field = (key >> 3) as u32;
        if field == 0 {
            return Err(self.err("field number 0"));
        }
        Ok(Some((field, wire)))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.varint()?;
        let rest = self.buf.len() - self.pos;
        if len > rest as u64 {
            return Err(self.err("length past the end of the message"));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn message(&mut self) -> Result<Reader<'a>> {
        let bytes = self.bytes()?;
        Ok(Reader::new(bytes, self.base + self.pos - bytes.len()))
    }

    fn str(&mut self) -> Result<&'a str> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| self.err("string is not UTF-8"))
    }

    fn fixed64(&mut self) -> Result<u64> {
        let Some(b) = self.buf.get(self.pos..self.pos + 8) else {
            return Err(self.err("truncated fixed64"));
        };
        self.pos += 8;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn fixed32(&mut self) -> Result<u32> {
        let Some(b) = self.buf.get(self.pos..self.pos + 4) else {
            return Err(self.err("truncated fixed32"));
        };
        self.pos += 4;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    /// Skips the value of a field the decoder does not read.
    fn skip(&mut self, field: u32, wire: u8) -> Result<()> {
        self.skip_depth(field, wire, MAX_DEPTH)
    }

    fn skip_depth(&mut self, field: u32, wire: u8, depth: u32) -> Result<()> {
        match wire {
            VARINT => {
                self.varint()?;
            }
            I64 => {
                self.fixed64()?;
            }
            LEN => {
                self.bytes()?;
            }
            I32 => {
                self.fixed32()?;
            }
            SGROUP => {
                if depth == 0 {
                    return Err(self.err("groups nested too deep"));
                }
                loop {
                    let Some((f, w)) = self.key()? else {
                        return Err(self.err("group without its end"));
                    };
                    if w == EGROUP {
                        if f != field {
                            return Err(self.err("group ends with another field number"));
                        }
                        break;
                    }
                    self.skip_depth(f, w, depth - 1)?;
                }
            }
            _ => return Err(self.err("unexpected end of group")),
        }
        Ok(())
    }

    /// Checks that `field` has wire type `expected`, as prost does.
    fn expect(&self, wire: u8, expected: u8) -> Result<()> {
        if wire == expected {
            Ok(())
        } else {
            Err(self.err("wrong wire type for the field"))
        }
    }
}

fn resource_spans<'a>(mut rs: Reader<'a>, sink: &mut Sink<'_>, span: &mut Span<'a>) -> Result<()> {
    // The resource first, wherever it is: every span row carries it.
    let mut resource = Owner::default();
    let mut pass = rs;
    while let Some((field, wire)) = pass.key()? {
        match field {
            1 => {
                pass.expect(wire, LEN)?;
                owner(pass.message()?, &mut resource, true)?;
            }
            3 => {
                pass.expect(wire, LEN)?;
                resource.schema_url = Cow::Borrowed(pass.str()?);
            }
            _ => pass.skip(field, wire)?,
        }
    }
    let first_row = sink.builder.len();
    while let Some((field, wire)) = rs.key()? {
        match field {
            2 => {
                rs.expect(wire, LEN)?;
                scope_spans(rs.message()?, sink, span)?;
            }
            _ => rs.skip(field, wire)?,
        }
    }
    let rows = sink.builder.len() - first_row;
    sink.builder
        .append_resource_columns(&resource.as_resource(), rows);
    Ok(())
}

fn scope_spans<'a>(mut ss: Reader<'a>, sink: &mut Sink<'_>, span: &mut Span<'a>) -> Result<()> {
    let mut scope = Owner::default();
    let mut pass = ss;
    while let Some((field, wire)) = pass.key()? {
        match field {
            1 => {
                pass.expect(wire, LEN)?;
                owner(pass.message()?, &mut scope, false)?;
            }
            3 => {
                pass.expect(wire, LEN)?;
                scope.schema_url = Cow::Borrowed(pass.str()?);
            }
            _ => pass.skip(field, wire)?,
        }
    }
    let first_row = sink.builder.len();
    while let Some((field, wire)) = ss.key()? {
        match field {
            2 => {
                ss.expect(wire, LEN)?;
                span.clear();
                read_span(ss.message()?, span)?;
                sink.span_columns(span);
            }
            _ => ss.skip(field, wire)?,
        }
    }
    let rows = sink.builder.len() - first_row;
    sink.builder.append_scope_columns(&scope.as_scope(), rows);
    Ok(())
}

/// A `Resource` (attributes 1, dropped 2) or an `InstrumentationScope`
/// (name 1, version 2, attributes 3, dropped 4), merged into `out`.
fn owner<'a>(mut m: Reader<'a>, out: &mut Owner<'a>, resource: bool) -> Result<()> {
    while let Some((field, wire)) = m.key()? {
        match (resource, field) {
            (true, 1) | (false, 3) => {
                m.expect(wire, LEN)?;
                out.attributes.push(key_value(m.message()?)?);
            }
            (true, 2) | (false, 4) => {
                m.expect(wire, VARINT)?;
                out.dropped_attributes_count = m.varint()? as u32;
            }
            (false, 1) => {
                m.expect(wire, LEN)?;
                out.name = Cow::Borrowed(m.str()?);
            }
            (false, 2) => {
                m.expect(wire, LEN)?;
                out.version = Cow::Borrowed(m.str()?);
            }
            (true, 3) => {
                // Entity references: not stored, but checked as prost does.
                m.expect(wire, LEN)?;
                let at = m;
                EntityRef::decode(m.bytes()?).map_err(|_| at.err("invalid entity reference"))?;
            }
            _ => m.skip(field, wire)?,
        }
    }
    Ok(())
}

fn read_span<'a>(mut m: Reader<'a>, s: &mut Span<'a>) -> Result<()> {
    while let Some((field, wire)) = m.key()? {
        match field {
            1 => {
                m.expect(wire, LEN)?;
                s.trace_id = Id::Borrowed(m.bytes()?);
            }
            2 => {
                m.expect(wire, LEN)?;
                s.span_id = Id::Borrowed(m.bytes()?);
            }
            3 => {
                m.expect(wire, LEN)?;
                s.trace_state = Cow::Borrowed(m.str()?);
            }
            4 => {
                m.expect(wire, LEN)?;
                s.parent_span_id = Id::Borrowed(m.bytes()?);
            }
            5 => {
                m.expect(wire, LEN)?;
                s.name = Cow::Borrowed(m.str()?);
            }
            6 => {
                m.expect(wire, VARINT)?;
                s.kind = m.varint()? as i32;
            }
            7 => {
                m.expect(wire, I64)?;
                s.start_time_unix_nano = m.fixed64()?;
            }
            8 => {
                m.expect(wire, I64)?;
                s.end_time_unix_nano = m.fixed64()?;
            }
            9 => {
                m.expect(wire, LEN)?;
                s.attributes.push(key_value(m.message()?)?);
            }
            10 => {
                m.expect(wire, VARINT)?;
                s.dropped_attributes_count = m.varint()? as u32;
            }
            11 => {
                m.expect(wire, LEN)?;
                s.events.push(event(m.message()?)?);
            }
            12 => {
                m.expect(wire, VARINT)?;
                s.dropped_events_count = m.varint()? as u32;
            }
            13 => {
                m.expect(wire, LEN)?;
                s.links.push(link(m.message()?)?);
            }
            14 => {
                m.expect(wire, VARINT)?;
                s.dropped_links_count = m.varint()? as u32;
            }
            15 => {
                m.expect(wire, LEN)?;
                let (code, message) = s.status.get_or_insert((0, Cow::Borrowed("")));
                status(m.message()?, code, message)?;
            }
            16 => {
                m.expect(wire, I32)?;
                s.flags = m.fixed32()?;
            }
            _ => m.skip(field, wire)?,
        }
    }
    Ok(())
}

/// `Status`: message 2, code 3 (merged into what an earlier occurrence set).
fn status<'a>(mut m: Reader<'a>, code: &mut i32, message: &mut Cow<'a, str>) -> Result<()> {
    while let Some((field, wire)) = m.key()? {
        match field {
            2 => {
                m.expect(wire, LEN)?;
                *message = Cow::Borrowed(m.str()?);
            }
            3 => {
                m.expect(wire, VARINT)?;
                *code = m.varint()? as i32;
            }
            _ => m.skip(field, wire)?,
        }
    }
    Ok(())
}

fn event<'a>(mut m: Reader<'a>) -> Result<Event<'a>> {
    let mut e = Event::default();
    while let Some((field, wire)) = m.key()? {
        match field {
            1 => {
                m.expect(wire, I64)?;
                e.time_unix_nano = m.fixed64()?;
            }
            2 => {
                m.expect(wire, LEN)?;
                e.name = Cow::Borrowed(m.str()?);
            }
            3 => {
                m.expect(wire, LEN)?;
                e.attributes.push(key_value(m.message()?)?);
            }
            4 => {
                m.expect(wire, VARINT)?;
                e.dropped_attributes_count = m.varint()? as u32;
            }
            _ => m.skip(field, wire)?,
        }
    }
    Ok(e)
}

fn link<'a>(mut m: Reader<'a>) -> Result<Link<'a>> {
    let mut l = Link::default();
    while let Some((field, wire)) = m.key()? {
        match field {
            1 => {
                m.expect(wire, LEN)?;
                l.trace_id = Id::Borrowed(m.bytes()?);
            }
            2 => {
                m.expect(wire, LEN)?;
                l.span_id = Id::Borrowed(m.bytes()?);
            }
            3 => {
                m.expect(wire, LEN)?;
                l.trace_state = Cow::Borrowed(m.str()?);
            }
            4 => {
                m.expect(wire, LEN)?;
                l.attributes.push(key_value(m.message()?)?);
            }
            5 => {
                m.expect(wire, VARINT)?;
                l.dropped_attributes_count = m.varint()? as u32;
            }
            6 => {
                m.expect(wire, I32)?;
                l.flags = m.fixed32()?;
            }
            _ => m.skip(field, wire)?,
        }
    }
    Ok(l)
}

/// `KeyValue`: key 1, value 2 (`AnyValue`, merged when repeated).
fn key_value<'a>(mut m: Reader<'a>) -> Result<Attribute<'a>> {
    let mut kv = Attribute {
        key: Cow::Borrowed(""),
        value: Value::Absent,
    };
    while let Some((field, wire)) = m.key()? {
        match field {
            1 => {
                m.expect(wire, LEN)?;
                kv.key = Cow::Borrowed(m.str()?);
            }
            2 => {
                m.expect(wire, LEN)?;
                if kv.value == Value::Absent {
                    kv.value = Value::Empty;
                }
                any_value(m.message()?, &mut kv.value)?;
            }
            3 => {
                // Profiles-only key string-table index: not stored.
                m.expect(wire, VARINT)?;
                m.varint()?;
            }
            _ => m.skip(field, wire)?,
        }
    }
    Ok(kv)
}

/// `AnyValue`'s oneof: the last field set wins; a message field of the
/// same kind as the current value is merged into it.
fn any_value<'a>(mut m: Reader<'a>, value: &mut Value<'a>) -> Result<()> {
    while let Some((field, wire)) = m.key()? {
        match field {
            1 => {
                m.expect(wire, LEN)?;
                *value = Value::Str(Cow::Borrowed(m.str()?));
            }
            2 => {
                m.expect(wire, VARINT)?;
                *value = Value::Bool(m.varint()? != 0);
            }
            3 => {
                m.expect(wire, VARINT)?;
                *value = Value::Int(m.varint()? as i64);
            }
            4 => {
                m.expect(wire, I64)?;
                *value = Value::Double(f64::from_bits(m.fixed64()?));
            }
            5 => {
                m.expect(wire, LEN)?;
                let at = m;
                let bytes = m.bytes()?;
                let mut array = match std::mem::replace(value, Value::Empty) {
                    Value::Array(a) => a,
                    _ => ArrayValue::default(),
                };
                array
                    .merge(bytes)
                    .map_err(|_| at.err("invalid array value"))?;
                *value = Value::Array(array);
            }
            6 => {
                m.expect(wire, LEN)?;
                let at = m;
                let bytes = m.bytes()?;
                let mut list = match std::mem::replace(value, Value::Empty) {
                    Value::KvList(l) => l,
                    _ => KeyValueList::default(),
                };
                list.merge(bytes)
                    .map_err(|_| at.err("invalid key-value list value"))?;
                *value = Value::KvList(list);
            }
            7 => {
                m.expect(wire, LEN)?;
                *value = Value::Bytes(Cow::Borrowed(m.bytes()?));
            }
            8 => {
                // Profiles-only string-table index: stored as no value, as
                // the prost path does.
                m.expect(wire, VARINT)?;
                m.varint()?;
                *value = Value::Empty;
            }
            _ => m.skip(field, wire)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
