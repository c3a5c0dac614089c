//! OTLP/JSON: a normalising pass in front of the `opentelemetry-proto` serde
//! types, and hand-written responses.
//!
//! The crate follows the spec strictly (lowerCamelCase keys, enums as
//! integers) and silently ignores anything else, which would turn a
//! snake_case body into an empty request. Like the reference Collector we
//! accept snake_case keys, enum names, `null` for defaults and 32-bit
//! integers as strings; and a body that decodes to no spans while it has
//! fields we do not know (a typo in `resourceSpans`, `scopeSpans` or
//! `spans`) is a 400 naming them, not a silent success.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::{Map, Value};

/// Error decoding an OTLP/JSON body.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid JSON: {0}")]
    Syntax(serde_json::Error),
    #[error("{0}")]
    Shape(serde_json::Error),
    #[error("the top-level value must be an object")]
    NotAnObject,
    #[error(
        "no spans decoded; unknown field(s) {0} (expected resourceSpans[].scopeSpans[].spans[])"
    )]
    UnknownFields(String),
}

/// Fields that hold 32-bit integers, which proto3 JSON also allows as strings.
const UINT32_FIELDS: &[&str] = &[
    "droppedAttributesCount",
    "droppedEventsCount",
    "droppedLinksCount",
    "flags",
    "kind",
    "code",
];

pub fn decode_request(body: &[u8]) -> Result<ExportTraceServiceRequest, Error> {
    let mut value: Value = serde_json::from_slice(body).map_err(Error::Syntax)?;
    normalise(&mut value);
    if !value.is_object() {
        return Err(Error::NotAnObject);
    }
    let unknown = unknown_fields(&value);
    let request: ExportTraceServiceRequest = serde_json::from_value(value).map_err(Error::Shape)?;
    let spans = request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum::<usize>();
    if spans == 0 && !unknown.is_empty() {
        return Err(Error::UnknownFields(format!("{unknown:?}")));
    }
    Ok(request)
}

/// Unknown keys on the path to the spans (top level, `ResourceSpans`,
/// `ScopeSpans`), as paths.
fn unknown_fields(value: &Value) -> Vec<String> {
    const LEVELS: [(&str, &[&str]); 3] = [
        ("resourceSpans", &["resourceSpans"]),
        ("scopeSpans", &["resource", "scopeSpans", "schemaUrl"]),
        ("spans", &["scope", "spans", "schemaUrl"]),
    ];
    let mut out = Vec::new();
    let mut level: Vec<(String, &Value)> = vec![(String::new(), value)];
    for (child, known) in LEVELS {
        let mut next = Vec::new();
        for (path, v) in level {
            let Value::Object(map) = v else { continue };
            for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
                out.push(format!("{path}{key}"));
            }
            if let Some(Value::Array(items)) = map.get(child) {
                next.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| (format!("{path}{child}[{i}]."), item)),
                );
            }
        }
        level = next;
    }
    out
}

fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let entries = std::mem::take(map);
            let mut out = Map::with_capacity(entries.len());
            for (key, mut v) in entries {
                if v.is_null() {
                    continue;
                }
                let key = camel_case(key);
                normalise(&mut v);
                if let Value::String(s) = &v
                    && UINT32_FIELDS.contains(&key.as_str())
                    && let Some(n) = enum_or_number(&key, s)
                {
                    v = Value::from(n);
                }
                out.insert(key, v);
            }
            *map = out;
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

fn camel_case(key: String) -> String {
    if !key.contains('_') {
        return key;
    }
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn enum_or_number(key: &str, s: &str) -> Option<i64> {
    if let Ok(n) = s.trim().parse::<i64>() {
        return Some(n);
    }
    match key {
        "kind" => SpanKind::from_str_name(s).map(|k| k as i64),
        "code" => StatusCode::from_str_name(s).map(|c| c as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_enum_names_and_nulls_are_accepted() {
        let body = br#"{"resource_spans":[{"resource":null,"scope_spans":[{"spans":[{
            "trace_id":"5B8EFFF798038103D269B633813FC60C","span_id":"EEE19B7EC3C1B174",
            "parent_span_id":null,"name":"n","kind":"SPAN_KIND_SERVER",
            "start_time_unix_nano":1544712660000000000,"end_time_unix_nano":"1544712661000000000",
            "dropped_attributes_count":"2","status":{"code":"STATUS_CODE_ERROR"}}]}]}]}"#;
        let request = decode_request(body).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, 2);
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.dropped_attributes_count, 2);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
    }

    #[test]
    fn unknown_top_level_fields_are_an_error_not_an_empty_request() {
        let err = decode_request(br#"{"resourceSpanz":[{}]}"#).unwrap_err();
        assert!(err.to_string().contains("resourceSpanz"), "{err}");
        // Deeper typos that leave the request empty are named with a path.
        let err =
            decode_request(br#"{"resourceSpans":[{"scopeSpans":[{"spanz":[{"name":"x"}]}]}]}"#)
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("resourceSpans[0].scopeSpans[0].spanz"),
            "{err}"
        );
        let err = decode_request(br#"{"resourceSpans":[{"scope_spanz":[]}]}"#).unwrap_err();
        assert!(
            err.to_string().contains("resourceSpans[0].scopeSpanz"),
            "{err}"
        );
        // Unknown fields beside real spans are ignored (forward compatible).
        let ok = decode_request(
            br#"{"resourceSpans":[{"future":1,"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x"}]}]}]}"#,
        )
        .unwrap();
        assert_eq!(ok.resource_spans[0].scope_spans[0].spans.len(), 1);
        assert!(decode_request(b"{}").is_ok());
        assert!(decode_request(br#"{"resourceSpans":[]}"#).is_ok());
        assert!(matches!(decode_request(b"[1]"), Err(Error::NotAnObject)));
        assert!(matches!(decode_request(b"{"), Err(Error::Syntax(_))));
    }
}
