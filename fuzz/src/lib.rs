//! What every fuzz target does with a request its decoder accepted: what the
//! collector does with it (`collector/src/ingest.rs`), then reads the rows
//! back the way the query APIs do.
//!
//! A decoder may refuse any input, but must not panic, and whatever it
//! accepts must go through the Arrow writer and come back readable.

use tracelake_schema::model;
use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_schema::opentelemetry_proto::tonic::trace::v1::Span;
use tracelake_schema::otlp::{self, Acceptance, SpansBuilder};

/// Writes `request` into a spans batch and reads the batch back.
///
/// Panics when spans are lost or changed on the way: unless the request is
/// refused whole as too large once decoded, every span is either written or
/// counted as rejected, and each written span reads back with its
/// ids, name and times.
pub fn store(request: &ExportTraceServiceRequest) {
    let spans: Vec<&Span> = request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let mut builder = SpansBuilder::with_capacity(spans.len());
    let rejections = builder.append_request(request, &Acceptance::ANY_TIME);
    let rows = builder.len();
    let Ok(batch) = builder.try_finish() else {
        // Too large once decoded: refused whole, as ingest does.
        return;
    };
    assert_eq!(
        rows as u64 + rejections.count,
        spans.len() as u64,
        "every span is written or rejected"
    );
    assert_eq!(batch.num_rows(), rows);
    assert!(builder.is_empty(), "finish resets the builder");

    let back = model::to_otlp(&[batch]).expect("a written batch reads back");
    let accepted = spans
        .iter()
        .filter(|s| otlp::validate(**s, &Acceptance::ANY_TIME).is_ok());
    let read = back
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans);
    let mut n = 0;
    for (i, (a, b)) in accepted.zip(read).enumerate() {
        n += 1;
        assert_eq!(a.trace_id, b.trace_id, "span {i}: trace_id");
        assert_eq!(a.span_id, b.span_id, "span {i}: span_id");
        assert_eq!(a.name, b.name, "span {i}: name");
        assert_eq!(
            (a.start_time_unix_nano, a.end_time_unix_nano),
            (b.start_time_unix_nano, b.end_time_unix_nano),
            "span {i}: times"
        );
    }
    assert_eq!(n, rows, "every written span reads back");
}

/// Whether an OTLP/JSON body gives one field several values in one object:
/// a key repeated, or spelled both in snake_case and camelCase, or several
/// value kinds set in one `AnyValue`. The direct decoder and the reference
/// path are documented to differ there (the last in the body against the
/// last in key order), so the differential target compares only other
/// bodies.
pub fn json_ambiguous(data: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(data);
    serde::de::DeserializeSeed::deserialize(Ambiguity, &mut de)
        .map(|(ambiguous, _)| ambiguous)
        .unwrap_or(false)
}

/// Reads a JSON value; yields (ambiguous somewhere inside, is null).
struct Ambiguity;

const VALUE_KINDS: [&str; 7] = [
    "stringValue",
    "boolValue",
    "intValue",
    "doubleValue",
    "arrayValue",
    "kvlistValue",
    "bytesValue",
];

impl<'de> serde::de::DeserializeSeed<'de> for Ambiguity {
    type Value = (bool, bool);

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(bool, bool), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Ambiguity {
    type Value = (bool, bool);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(bool, bool), A::Error> {
        let mut keys = std::collections::HashSet::new();
        let (mut ambiguous, mut kinds) = (false, 0);
        while let Some(key) = map.next_key::<String>()? {
            let key = tracelake_protocols::otlp_json::camel_case(&key);
            let (inner, null) = map.next_value_seed(Ambiguity)?;
            ambiguous |= inner || !keys.insert(key.clone());
            if !null && VALUE_KINDS.contains(&key.as_str()) {
                kinds += 1;
            }
        }
        Ok((ambiguous || kinds > 1, false))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(bool, bool), A::Error> {
        let mut ambiguous = false;
        while let Some((inner, _)) = seq.next_element_seed(Ambiguity)? {
            ambiguous |= inner;
        }
        Ok((ambiguous, false))
    }

    fn visit_unit<E>(self) -> Result<(bool, bool), E> {
        Ok((false, true))
    }

    fn visit_bool<E>(self, _: bool) -> Result<(bool, bool), E> {
        Ok((false, false))
    }

    fn visit_i64<E>(self, _: i64) -> Result<(bool, bool), E> {
        Ok((false, false))
    }

    fn visit_u64<E>(self, _: u64) -> Result<(bool, bool), E> {
        Ok((false, false))
    }

    fn visit_f64<E>(self, _: f64) -> Result<(bool, bool), E> {
        Ok((false, false))
    }

    fn visit_str<E>(self, _: &str) -> Result<(bool, bool), E> {
        Ok((false, false))
    }
}
