//! OTLP/JSON straight into the Arrow builders: one streaming pass of
//! `serde_json` over the body, each span read into a reused scratch
//! (strings borrowed from the body unless they hold escapes) and written
//! with [`SpansBuilder::append_span_columns`]; a scope's and a resource's
//! columns are written for all their rows when their object ends, because
//! JSON fields come in any order (protojson writes `schemaUrl` after the
//! spans).
//!
//! It takes what [`decode_request`](super::decode_request) (the reference:
//! a normalising pass over a `serde_json::Value`, then the serde derives of
//! `opentelemetry-proto`) takes, with the Collector's leniency — snake_case
//! keys, `null` for defaults, enum names, 32- and 64-bit integers as
//! strings, doubles as strings (`"NaN"`, `"Infinity"`, `"-Infinity"`) —
//! and writes the same rows (property test and fuzz target). Where they
//! differ, in bodies no exporter writes: a field that holds spans
//! (`resourceSpans`, `scopeSpans`, `spans`) repeated in one object is an
//! error here (the reference keeps the last); where one object holds
//! several values for one field (a key repeated, or spelled both in
//! snake_case and camelCase, or several value kinds in one `AnyValue`) the
//! last in the body wins here, the last in key order there (its
//! `serde_json::Map` sorts keys), and a repeated key whose last value is
//! `null` keeps the earlier value here; messages written as JSON arrays of
//! their fields are refused here; `entityRefs` (not stored) and
//! `keyStrindex` are skipped without checking their shape, and a skipped
//! field's strings without checking their escapes (a lone surrogate,
//! `"\ud800"`, which the reference refuses).
//!
//! PERFORMANCE-CRITICAL: every OTLP/HTTP JSON span passes through here.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde::de::{
    self, DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

use super::Error;
use crate::direct::{Attribute, Event, Id, Link, Owner, Sink, Span, Value};

/// Decodes `body` and appends its spans to `sink`. On error the builder may
/// hold part of the request's rows: callers drop it.
pub fn decode_into(body: &[u8], sink: &mut Sink<'_>) -> Result<(), Error> {
    let mut state = State {
        sink,
        unknown: Vec::new(),
        spans: 0,
        not_an_object: false,
    };
    // JSON is UTF-8 as a whole: checked here in one pass over the body,
    // then each string is taken as it is (`from_str`), where `from_slice`
    // checked every string on its own, a call per key and value (15 % of
    // this decoder's instructions).
    let text = std::str::from_utf8(body).map_err(|e| Error::NotUtf8(e.valid_up_to()))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let result = Top(&mut state).deserialize(&mut de).and_then(|()| de.end());
    if let Err(e) = result {
        if state.not_an_object {
            return Err(Error::NotAnObject);
        }
        return Err(match e.classify() {
            serde_json::error::Category::Data => Error::Shape(e),
            _ => Error::Syntax(e),
        });
    }
    if state.spans == 0 && !state.unknown.is_empty() {
        return Err(Error::UnknownFields(format!("{:?}", state.unknown)));
    }
    Ok(())
}

/// Unknown keys named in an error, at most: a body of a million unknown
/// keys must not make a million strings.
const MAX_UNKNOWN: usize = 16;

struct State<'s, 'b> {
    sink: &'s mut Sink<'b>,
    /// Unknown keys on the path to the spans, as paths (the first
    /// [`MAX_UNKNOWN`]).
    unknown: Vec<String>,
    /// Spans read, accepted or not.
    spans: u64,
    not_an_object: bool,
}

impl State<'_, '_> {
    /// Skips the value of an unknown key and notes the key's `path` unless
    /// the value is `null` (which means absent, as in the reference path).
    fn unknown<'de, A: MapAccess<'de>>(
        &mut self,
        map: &mut A,
        path: impl FnOnce() -> String,
    ) -> Result<(), A::Error> {
        let value: Option<IgnoredAny> = map.next_value()?;
        if value.is_some() && self.unknown.len() < MAX_UNKNOWN {
            self.unknown.push(path());
        }
        Ok(())
    }
}

/// An object key, in the camelCase of the proto3 JSON mapping.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let key = d.deserialize_str(StrVisitor)?;
        Ok(Key(if key.contains('_') {
            Cow::Owned(super::camel_case(&key))
        } else {
            key
        }))
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A field's value, `None` when it is `null`.
fn opt<'de, A, T>(
    map: &mut A,
    seed: impl DeserializeSeed<'de, Value = T>,
) -> Result<Option<T>, A::Error>
where
    A: MapAccess<'de>,
{
    struct Opt<S>(S);

    impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Opt<S> {
        type Value = Option<S::Value>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_option(self)
        }
    }

    impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Opt<S> {
        type Value = Option<S::Value>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a value or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            self.0.deserialize(d).map(Some)
        }
    }

    map.next_value_seed(Opt(seed))
}

/// A string field.
struct Str;

impl<'de> DeserializeSeed<'de> for Str {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(StrVisitor)
    }
}

/// A hex-encoded id (`traceId`, `spanId`, `parentSpanId`).
struct Hex;

impl<'de> DeserializeSeed<'de> for Hex {
    type Value = Id<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let s = d.deserialize_str(StrVisitor)?;
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(&s);
        Id::from_hex(digits).map_err(D::Error::custom)
    }
}

/// What a JSON number or string field holds, before its type's rules.
enum Scalar<'de> {
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'de, str>),
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a string")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::U64(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::I64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::F64(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
}

/// The 32-bit integer fields (`flags`, the dropped counts, `kind`,
/// `code`): a number, or a string holding a number or (`kind`, `code`) an
/// enum name.
#[derive(Clone, Copy)]
enum Int32 {
    Unsigned,
    Kind,
    Code,
}

fn int32<'de, A: MapAccess<'de>>(map: &mut A, ty: Int32) -> Result<Option<i64>, A::Error> {
    let Some(v) = opt(map, ScalarSeed)? else {
        return Ok(None);
    };
    let n = match v {
        Scalar::U64(n) => i64::try_from(n).ok(),
        Scalar::I64(n) => Some(n),
        Scalar::F64(_) => None,
        Scalar::Str(s) => s.trim().parse::<i64>().ok().or_else(|| match ty {
            Int32::Unsigned => None,
            Int32::Kind => SpanKind::from_str_name(&s).map(|k| k as i64),
            Int32::Code => StatusCode::from_str_name(&s).map(|c| c as i64),
        }),
    };
    let in_range = match ty {
        Int32::Unsigned => n.filter(|n| u32::try_from(*n).is_ok()),
        Int32::Kind | Int32::Code => n.filter(|n| i32::try_from(*n).is_ok()),
    };
    in_range
        .map(Some)
        .ok_or_else(|| A::Error::custom("expected a 32-bit integer (or its enum name)"))
}

fn u32_field<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<u32>, A::Error> {
    Ok(int32(map, Int32::Unsigned)?.map(|n| n as u32))
}

/// A fixed64 time: a number or a string holding one.
fn time<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<u64>, A::Error> {
    let Some(v) = opt(map, ScalarSeed)? else {
        return Ok(None);
    };
    match v {
        Scalar::U64(n) => Ok(Some(n)),
        Scalar::I64(n) => u64::try_from(n)
            .map(Some)
            .map_err(|_| A::Error::custom(format!("time {n} is negative"))),
        Scalar::F64(_) => Err(A::Error::custom("a time must be an integer")),
        Scalar::Str(s) => s.parse::<u64>().map(Some).map_err(A::Error::custom),
    }
}

/// The top-level object.
struct Top<'x, 's, 'b>(&'x mut State<'s, 'b>);

impl<'de> DeserializeSeed<'de> for Top<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an ExportTraceServiceRequest object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(Key(key)) = map.next_key()? {
            if key == "resourceSpans" {
                if seen {
                    return Err(A::Error::duplicate_field("resourceSpans"));
                }
                seen = true;
                opt(&mut map, List(EachResource(&mut *self.0)))?;
            } else {
                self.0.unknown(&mut map, || key.into_owned())?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Read to its end, so that a syntax error is reported as one.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.not_an_object()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_an_object()
    }
}

impl Top<'_, '_, '_> {
    fn not_an_object<E: de::Error>(self) -> Result<(), E> {
        self.0.not_an_object = true;
        Err(E::custom("the top-level value must be an object"))
    }
}

/// The seed of each element of a JSON array of objects that hold spans.
trait Each<'de> {
    fn seed(&mut self, index: usize) -> impl DeserializeSeed<'de, Value = ()> + '_;
}

/// A JSON array, each element read by the seed `E` makes for it.
struct List<E>(E);

impl<'de, E: Each<'de>> DeserializeSeed<'de> for List<E> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, E: Each<'de>> Visitor<'de> for List<E> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq.next_element_seed(self.0.seed(i))?.is_some() {
            i += 1;
        }
        Ok(())
    }
}

struct EachResource<'x, 's, 'b>(&'x mut State<'s, 'b>);

impl<'de> Each<'de> for EachResource<'_, '_, '_> {
    fn seed(&mut self, index: usize) -> impl DeserializeSeed<'de, Value = ()> + '_ {
        ResourceSpans(&mut *self.0, index)
    }
}

struct EachScope<'x, 's, 'b>(&'x mut State<'s, 'b>, usize);

impl<'de> Each<'de> for EachScope<'_, '_, '_> {
    fn seed(&mut self, index: usize) -> impl DeserializeSeed<'de, Value = ()> + '_ {
        ScopeSpans(&mut *self.0, self.1, index)
    }
}

struct EachSpan<'x, 's, 'b, 'de> {
    state: &'x mut State<'s, 'b>,
    span: &'x mut Span<'de>,
}

impl<'de> Each<'de> for EachSpan<'_, '_, '_, 'de> {
    fn seed(&mut self, _: usize) -> impl DeserializeSeed<'de, Value = ()> + '_ {
        SpanSeed {
            state: &mut *self.state,
            span: &mut *self.span,
        }
    }
}

/// `resourceSpans[index]`.
struct ResourceSpans<'x, 's, 'b>(&'x mut State<'s, 'b>, usize);

impl<'de> DeserializeSeed<'de> for ResourceSpans<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ResourceSpans<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a ResourceSpans object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Self(state, index) = self;
        let first_row = state.sink.builder.len();
        let mut resource = Owner::default();
        let mut seen = false;
        while let Some(Key(key)) = map.next_key()? {
            match key.as_ref() {
                "resource" => {
                    // The last occurrence wins, as in a JSON object.
                    resource = Owner {
                        schema_url: std::mem::take(&mut resource.schema_url),
                        ..Owner::default()
                    };
                    opt(&mut map, OwnerSeed::resource(&mut resource))?;
                }
                "scopeSpans" => {
                    if seen {
                        return Err(A::Error::duplicate_field("scopeSpans"));
                    }
                    seen = true;
                    opt(&mut map, List(EachScope(&mut *state, index)))?;
                }
                "schemaUrl" => resource.schema_url = opt(&mut map, Str)?.unwrap_or_default(),
                _ => state.unknown(&mut map, || format!("resourceSpans[{index}].{key}"))?,
            }
        }
        let rows = state.sink.builder.len() - first_row;
        state
            .sink
            .builder
            .append_resource_columns(&resource.as_resource(), rows);
        Ok(())
    }
}

/// `resourceSpans[.0].scopeSpans[.1]`.
struct ScopeSpans<'x, 's, 'b>(&'x mut State<'s, 'b>, usize, usize);

impl<'de> DeserializeSeed<'de> for ScopeSpans<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ScopeSpans<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a ScopeSpans object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Self(state, r, index) = self;
        let first_row = state.sink.builder.len();
        let mut scope = Owner::default();
        let mut seen = false;
        let mut span = Span::default();
        while let Some(Key(key)) = map.next_key()? {
            match key.as_ref() {
                "scope" => {
                    scope = Owner {
                        schema_url: std::mem::take(&mut scope.schema_url),
                        ..Owner::default()
                    };
                    opt(&mut map, OwnerSeed::scope(&mut scope))?;
                }
                "spans" => {
                    if seen {
                        return Err(A::Error::duplicate_field("spans"));
                    }
                    seen = true;
                    opt(
                        &mut map,
                        List(EachSpan {
                            state: &mut *state,
                            span: &mut span,
                        }),
                    )?;
                }
                "schemaUrl" => scope.schema_url = opt(&mut map, Str)?.unwrap_or_default(),
                _ => state.unknown(&mut map, || {
                    format!("resourceSpans[{r}].scopeSpans[{index}].{key}")
                })?,
            }
        }
        let rows = state.sink.builder.len() - first_row;
        state
            .sink
            .builder
            .append_scope_columns(&scope.as_scope(), rows);
        Ok(())
    }
}

/// A `Resource` or an `InstrumentationScope` object.
struct OwnerSeed<'x, 'de> {
    out: &'x mut Owner<'de>,
    resource: bool,
}

impl<'x, 'de> OwnerSeed<'x, 'de> {
    fn resource(out: &'x mut Owner<'de>) -> Self {
        Self {
            out,
            resource: true,
        }
    }

    fn scope(out: &'x mut Owner<'de>) -> Self {
        Self {
            out,
            resource: false,
        }
    }
}

impl<'de> DeserializeSeed<'de> for OwnerSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OwnerSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Resource or InstrumentationScope object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        while let Some(Key(key)) = map.next_key()? {
            match key.as_ref() {
                "attributes" => attributes(&mut map, &mut out.attributes)?,
                "droppedAttributesCount" => {
                    out.dropped_attributes_count = u32_field(&mut map)?.unwrap_or_default();
                }
                "name" if !self.resource => out.name = opt(&mut map, Str)?.unwrap_or_default(),
                "version" if !self.resource => {
                    out.version = opt(&mut map, Str)?.unwrap_or_default();
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// An `attributes` list, replacing what an earlier occurrence set.
fn attributes<'de, A: MapAccess<'de>>(
    map: &mut A,
    out: &mut Vec<Attribute<'de>>,
) -> Result<(), A::Error> {
    out.clear();
    opt(map, AttributesSeed(out))?;
    Ok(())
}

struct AttributesSeed<'x, 'de>(&'x mut Vec<Attribute<'de>>);

impl<'de> DeserializeSeed<'de> for AttributesSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for AttributesSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of KeyValue objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(kv) = seq.next_element_seed(KeyValueSeed)? {
            self.0.push(kv);
        }
        Ok(())
    }
}

/// A `KeyValue` object: `key` is required, `value` optional.
struct KeyValueSeed;

impl<'de> DeserializeSeed<'de> for KeyValueSeed {
    type Value = Attribute<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KeyValueSeed {
    type Value = Attribute<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a KeyValue object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut key = None;
        let mut value = Value::Absent;
        while let Some(Key(k)) = map.next_key()? {
            match k.as_ref() {
                "key" => {
                    if let Some(k) = opt(&mut map, Str)? {
                        key = Some(k);
                    }
                }
                "value" => value = opt(&mut map, AnyValueSeed)?.unwrap_or(Value::Absent),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let key = key.ok_or_else(|| A::Error::missing_field("key"))?;
        Ok(Attribute { key, value })
    }
}

/// An `AnyValue` object: the last of its value fields wins; none is an
/// empty value.
struct AnyValueSeed;

impl<'de> DeserializeSeed<'de> for AnyValueSeed {
    type Value = Value<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AnyValueSeed {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AnyValue object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut value = Value::Empty;
        while let Some(Key(k)) = map.next_key()? {
            let v = match k.as_ref() {
                "stringValue" => opt(&mut map, Str)?.map(Value::Str),
                "boolValue" => opt(&mut map, Bool)?.map(Value::Bool),
                "intValue" => match opt(&mut map, ScalarSeed)? {
                    None => None,
                    Some(Scalar::I64(n)) => Some(Value::Int(n)),
                    Some(Scalar::U64(n)) if i64::try_from(n).is_ok() => Some(Value::Int(n as i64)),
                    Some(Scalar::Str(s)) => {
                        Some(Value::Int(s.parse::<i64>().map_err(A::Error::custom)?))
                    }
                    Some(_) => return Err(A::Error::custom("intValue must be an i64 or a string")),
                },
                "doubleValue" => match opt(&mut map, ScalarSeed)? {
                    None => None,
                    Some(Scalar::U64(n)) => Some(Value::Double(n as f64)),
                    Some(Scalar::I64(n)) => Some(Value::Double(n as f64)),
                    Some(Scalar::F64(d)) => Some(Value::Double(d)),
                    Some(Scalar::Str(s)) => Some(Value::Double(double(&s).ok_or_else(|| {
                        A::Error::custom(format!("doubleValue {s:?} is not a number"))
                    })?)),
                },
                "bytesValue" => match opt(&mut map, Str)? {
                    None => None,
                    Some(s) => Some(Value::Bytes(Cow::Owned(
                        BASE64.decode(s.as_bytes()).map_err(A::Error::custom)?,
                    ))),
                },
                "arrayValue" => opt(&mut map, Values(false))?.map(|v| match v {
                    Nested::Array(a) => Value::Array(a),
                    Nested::List(l) => Value::KvList(l),
                }),
                "kvlistValue" => opt(&mut map, Values(true))?.map(|v| match v {
                    Nested::Array(a) => Value::Array(a),
                    Nested::List(l) => Value::KvList(l),
                }),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    None
                }
            };
            if let Some(v) = v {
                value = v;
            }
        }
        Ok(value)
    }
}

/// A double in a string, as proto3 JSON allows.
fn double(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => s.trim().parse::<f64>().ok().filter(|d| d.is_finite()),
    }
}

struct Bool;

impl<'de> DeserializeSeed<'de> for Bool {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        <bool as serde::Deserialize>::deserialize(d)
    }
}

enum Nested {
    Array(ArrayValue),
    List(KeyValueList),
}

/// `{"values": [...]}` of an `arrayValue` (`AnyValue`s) or a `kvlistValue`
/// (`KeyValue`s); `values` is required.
struct Values(bool);

impl<'de> DeserializeSeed<'de> for Values {
    type Value = Nested;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Nested, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Values {
    type Value = Nested;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Nested, A::Error> {
        let mut out = None;
        while let Some(Key(k)) = map.next_key()? {
            if k == "values" {
                if let Some(v) = opt(&mut map, NestedList(self.0))? {
                    out = Some(v);
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        out.ok_or_else(|| A::Error::missing_field("values"))
    }
}

struct NestedList(bool);

impl<'de> DeserializeSeed<'de> for NestedList {
    type Value = Nested;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Nested, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for NestedList {
    type Value = Nested;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Nested, A::Error> {
        if self.0 {
            let mut values = Vec::new();
            while let Some(kv) = seq.next_element_seed(KeyValueSeed)? {
                values.push(KeyValue {
                    key: kv.key.into_owned(),
                    value: owned(kv.value).map(|value| AnyValue { value }),
                    key_strindex: 0,
                });
            }
            Ok(Nested::List(KeyValueList { values }))
        } else {
            let mut values = Vec::new();
            while let Some(v) = seq.next_element_seed(AnyValueSeed)? {
                values.push(AnyValue {
                    value: owned(v).flatten(),
                });
            }
            Ok(Nested::Array(ArrayValue { values }))
        }
    }
}

/// A decoded value as the OTLP struct: `None` when absent, `Some(None)`
/// when empty.
fn owned(v: Value<'_>) -> Option<Option<Any>> {
    Some(Some(match v {
        Value::Absent => return None,
        Value::Empty => return Some(None),
        Value::Str(s) => Any::StringValue(s.into_owned()),
        Value::Bool(b) => Any::BoolValue(b),
        Value::Int(i) => Any::IntValue(i),
        Value::Double(d) => Any::DoubleValue(d),
        Value::Bytes(b) => Any::BytesValue(b.into_owned()),
        Value::Array(a) => Any::ArrayValue(a),
        Value::KvList(l) => Any::KvlistValue(l),
    }))
}

/// One span: read into the scratch, then written (or counted as rejected).
struct SpanSeed<'x, 's, 'b, 'de> {
    state: &'x mut State<'s, 'b>,
    span: &'x mut Span<'de>,
}

impl<'de> DeserializeSeed<'de> for SpanSeed<'_, '_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SpanSeed<'_, '_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Span object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let s = self.span;
        s.clear();
        while let Some(Key(k)) = map.next_key()? {
            match k.as_ref() {
                "traceId" => s.trace_id = opt(&mut map, Hex)?.unwrap_or_default(),
                "spanId" => s.span_id = opt(&mut map, Hex)?.unwrap_or_default(),
                "parentSpanId" => {
                    s.parent_span_id = opt(&mut map, Hex)?.unwrap_or_default();
                }
                "traceState" => s.trace_state = opt(&mut map, Str)?.unwrap_or_default(),
                "flags" => s.flags = u32_field(&mut map)?.unwrap_or_default(),
                "name" => s.name = opt(&mut map, Str)?.unwrap_or_default(),
                "kind" => s.kind = int32(&mut map, Int32::Kind)?.unwrap_or_default() as i32,
                "startTimeUnixNano" => s.start_time_unix_nano = time(&mut map)?.unwrap_or_default(),
                "endTimeUnixNano" => s.end_time_unix_nano = time(&mut map)?.unwrap_or_default(),
                "attributes" => attributes(&mut map, &mut s.attributes)?,
                "droppedAttributesCount" => {
                    s.dropped_attributes_count = u32_field(&mut map)?.unwrap_or_default();
                }
                "events" => s.events = opt(&mut map, Many(EventSeed))?.unwrap_or_default(),
                "droppedEventsCount" => {
                    s.dropped_events_count = u32_field(&mut map)?.unwrap_or_default();
                }
                "links" => s.links = opt(&mut map, Many(LinkSeed))?.unwrap_or_default(),
                "droppedLinksCount" => {
                    s.dropped_links_count = u32_field(&mut map)?.unwrap_or_default();
                }
                "status" => s.status = opt(&mut map, StatusSeed)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        self.state.spans += 1;
        self.state.sink.span_columns(s);
        Ok(())
    }
}

struct StatusSeed;

impl<'de> DeserializeSeed<'de> for StatusSeed {
    type Value = (i32, Cow<'de, str>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for StatusSeed {
    type Value = (i32, Cow<'de, str>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Status object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut code, mut message) = (0, Cow::Borrowed(""));
        while let Some(Key(k)) = map.next_key()? {
            match k.as_ref() {
                "code" => code = int32(&mut map, Int32::Code)?.unwrap_or_default() as i32,
                "message" => message = opt(&mut map, Str)?.unwrap_or_default(),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((code, message))
    }
}

/// A JSON array read element by element with the seed `S` (events, links).
struct Many<S>(S);

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for Many<S> {
    type Value = Vec<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for Many<S> {
    type Value = Vec<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element_seed(self.0)? {
            out.push(item);
        }
        Ok(out)
    }
}

#[derive(Clone, Copy)]
struct EventSeed;

impl<'de> DeserializeSeed<'de> for EventSeed {
    type Value = Event<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventSeed {
    type Value = Event<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an Event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut e = Event::default();
        while let Some(Key(k)) = map.next_key()? {
            match k.as_ref() {
                "timeUnixNano" => e.time_unix_nano = time(&mut map)?.unwrap_or_default(),
                "name" => e.name = opt(&mut map, Str)?.unwrap_or_default(),
                "attributes" => attributes(&mut map, &mut e.attributes)?,
                "droppedAttributesCount" => {
                    e.dropped_attributes_count = u32_field(&mut map)?.unwrap_or_default();
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(e)
    }
}

#[derive(Clone, Copy)]
struct LinkSeed;

impl<'de> DeserializeSeed<'de> for LinkSeed {
    type Value = Link<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LinkSeed {
    type Value = Link<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Link object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut l = Link::default();
        while let Some(Key(k)) = map.next_key()? {
            match k.as_ref() {
                "traceId" => l.trace_id = opt(&mut map, Hex)?.unwrap_or_default(),
                "spanId" => l.span_id = opt(&mut map, Hex)?.unwrap_or_default(),
                "traceState" => l.trace_state = opt(&mut map, Str)?.unwrap_or_default(),
                "attributes" => attributes(&mut map, &mut l.attributes)?,
                "droppedAttributesCount" => {
                    l.dropped_attributes_count = u32_field(&mut map)?.unwrap_or_default();
                }
                "flags" => l.flags = u32_field(&mut map)?.unwrap_or_default(),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests;
