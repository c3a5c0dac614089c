//! OTLP/JSON into the `opentelemetry-proto` structs: a normalising pass in
//! front of their serde derives. The receiver decodes with
//! [`decode_into`](super::decode_into), straight into Arrow; this is the
//! reference path its property tests and fuzz target compare with.
//!
//! The crate follows the spec strictly (lowerCamelCase keys, enums as
//! integers) and silently ignores anything else, which would turn a
//! snake_case body into an empty request. Like the reference Collector we
//! accept snake_case keys, enum names, `null` for defaults and 32-bit
//! integers as strings; and a body that decodes to no spans while it has
//! fields we do not know (a typo in `resourceSpans`, `scopeSpans` or
//! `spans`) is a 400 naming them, not a silent success.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
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
    #[error("invalid JSON: not UTF-8 at byte {0}")]
    NotUtf8(usize),
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
    let mut non_finite = Vec::new();
    normalise(&mut value, &mut Vec::new(), &mut non_finite);
    if !value.is_object() {
        return Err(Error::NotAnObject);
    }
    let unknown = unknown_fields(&value);
    let mut request: ExportTraceServiceRequest =
        serde_json::from_value(value).map_err(Error::Shape)?;
    for (path, v) in non_finite {
        if let Some(slot) = double_at(&mut request, &path) {
            *slot = v;
        }
    }
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

/// A step of a path into the request: an object key or an array index.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// Makes the body what the serde types read: camelCase keys, no `null`s,
/// enum names and 32-bit integers in strings as numbers, doubles in strings
/// (proto3 JSON allows `"1.5"`, `"NaN"`, `"Infinity"`, `"-Infinity"`) as
/// numbers. JSON numbers cannot be NaN or infinite, so those become 0 here
/// and their paths are returned in `non_finite`, to be set in the decoded
/// request.
fn normalise(value: &mut Value, path: &mut Vec<Step>, non_finite: &mut Vec<(Vec<Step>, f64)>) {
    match value {
        Value::Object(map) => {
            let entries = std::mem::take(map);
            let mut out = Map::with_capacity(entries.len());
            for (key, mut v) in entries {
                if v.is_null() {
                    continue;
                }
                let key = if key.contains('_') {
                    super::camel_case(&key)
                } else {
                    key
                };
                path.push(Step::Key(key.clone()));
                normalise(&mut v, path, non_finite);
                if let Value::String(s) = &v {
                    if UINT32_FIELDS.contains(&key.as_str())
                        && let Some(n) = enum_or_number(&key, s)
                    {
                        v = Value::from(n);
                    } else if key == "doubleValue"
                        && let Ok(d) = s.trim().parse::<f64>()
                    {
                        // Rust's parser reads NaN, inf and infinity too.
                        if d.is_finite() {
                            v = Value::from(d);
                        } else if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") {
                            non_finite.push((path.clone(), d));
                            v = Value::from(0.0);
                        }
                    }
                }
                path.pop();
                out.insert(key, v);
            }
            *map = out;
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Step::Index(i));
                normalise(item, path, non_finite);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The double value at `path` (as [`normalise`] recorded it) in the decoded
/// request: an attribute of a resource, scope, span, event or link, at any
/// depth of arrays and key-value lists.
fn double_at<'a>(request: &'a mut ExportTraceServiceRequest, path: &[Step]) -> Option<&'a mut f64> {
    use Step::{Index, Key};
    let key = |s: &Step, k: &str| matches!(s, Key(x) if x == k);
    let index = |s: &Step| match s {
        Index(i) => Some(*i),
        Key(_) => None,
    };
    let [k, i, rest @ ..] = path else { return None };
    if !key(k, "resourceSpans") {
        return None;
    }
    let rs = request.resource_spans.get_mut(index(i)?)?;
    let (attributes, rest) = match rest {
        [k, rest @ ..] if key(k, "resource") => (&mut rs.resource.as_mut()?.attributes, rest),
        [k, i, rest @ ..] if key(k, "scopeSpans") => {
            let ss = rs.scope_spans.get_mut(index(i)?)?;
            match rest {
                [k, rest @ ..] if key(k, "scope") => (&mut ss.scope.as_mut()?.attributes, rest),
                [k, i, rest @ ..] if key(k, "spans") => {
                    let span = ss.spans.get_mut(index(i)?)?;
                    match rest {
                        [k, i, rest @ ..] if key(k, "events") => {
                            (&mut span.events.get_mut(index(i)?)?.attributes, rest)
                        }
                        [k, i, rest @ ..] if key(k, "links") => {
                            (&mut span.links.get_mut(index(i)?)?.attributes, rest)
                        }
                        _ => (&mut span.attributes, rest),
                    }
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    let [k, i, rest @ ..] = rest else { return None };
    if !key(k, "attributes") {
        return None;
    }
    let kv = attributes.get_mut(index(i)?)?;
    match rest {
        [k, tail @ ..] if key(k, "value") => any_double(kv.value.as_mut()?, tail),
        _ => None,
    }
}

/// The double inside AnyValue `value` at `path` (`doubleValue`, or deeper
/// through arrays and key-value lists).
fn any_double<'a>(value: &'a mut AnyValue, path: &[Step]) -> Option<&'a mut f64> {
    let key = |s: &Step, k: &str| matches!(s, Step::Key(x) if x == k);
    let index = |s: &Step| match s {
        Step::Index(i) => Some(*i),
        Step::Key(_) => None,
    };
    match (value.value.as_mut()?, path) {
        (Any::DoubleValue(d), [k]) if key(k, "doubleValue") => Some(d),
        (Any::ArrayValue(a), [k, v, i, tail @ ..]) if key(k, "arrayValue") && key(v, "values") => {
            any_double(a.values.get_mut(index(i)?)?, tail)
        }
        (Any::KvlistValue(l), [k, v, i, f, tail @ ..])
            if key(k, "kvlistValue") && key(v, "values") && key(f, "value") =>
        {
            any_double(l.values.get_mut(index(i)?)?.value.as_mut()?, tail)
        }
        _ => None,
    }
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

    #[test]
    fn doubles_in_strings_as_proto3_json_allows() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"r","value":{"doubleValue":"Infinity"}}]},
            "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x",
              "attributes":[{"key":"a","value":{"doubleValue":"NaN"}},{"key":"b","value":{"doubleValue":"1.5"}},
                {"key":"c","value":{"arrayValue":{"values":[{"doubleValue":"-Infinity"}]}}},
                {"key":"d","value":{"kvlistValue":{"values":[{"key":"e","value":{"doubleValue":"NaN"}}]}}}],
              "events":[{"name":"e","attributes":[{"key":"f","value":{"doubleValue":"-Infinity"}}]}]}]}]}]}"#;
        let r = decode_request(body).unwrap();
        let double = |v: &Option<AnyValue>| match v.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Any::DoubleValue(d)) => *d,
            other => panic!("{other:?}"),
        };
        let rs = &r.resource_spans[0];
        assert_eq!(
            double(&rs.resource.as_ref().unwrap().attributes[0].value),
            f64::INFINITY
        );
        let span = &rs.scope_spans[0].spans[0];
        assert!(double(&span.attributes[0].value).is_nan());
        assert_eq!(double(&span.attributes[1].value), 1.5);
        let Some(Any::ArrayValue(a)) = span.attributes[2].value.as_ref().unwrap().value.as_ref()
        else {
            panic!()
        };
        assert_eq!(double(&Some(a.values[0].clone())), f64::NEG_INFINITY);
        let Some(Any::KvlistValue(l)) = span.attributes[3].value.as_ref().unwrap().value.as_ref()
        else {
            panic!()
        };
        assert!(double(&l.values[0].value).is_nan());
        assert_eq!(
            double(&span.events[0].attributes[0].value),
            f64::NEG_INFINITY
        );
        // Other strings stay what they were: an error naming the type.
        let bad = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"doubleValue":"lots"}}]}]}]}]}"#;
        assert!(matches!(decode_request(bad), Err(Error::Shape(_))));
    }
}
