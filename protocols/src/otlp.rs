//! What every protocol's mapping to and from OTLP shares: building the
//! request (spans grouped by resource, then by instrumentation scope),
//! attribute constructors, attribute values as text and JSON, and trace ids
//! in the hex form Zipkin and Jaeger use.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde_json::{Value, json};

/// A string attribute.
pub fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Any::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

/// An integer attribute.
pub fn int_kv(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Any::IntValue(value)),
        }),
        key_strindex: 0,
    }
}

/// An instrumentation scope's name and version: the key spans are grouped
/// by inside a resource.
pub type ScopeKey = (String, String);

/// Spans grouped into an OTLP request: one `ResourceSpans` per resource key
/// `K` (in `K`'s order), inside it one `ScopeSpans` per scope (by name, then
/// version), spans in the order they were pushed.
#[derive(Debug)]
pub struct RequestBuilder<K> {
    resources: BTreeMap<K, (Vec<KeyValue>, Scopes)>,
}

/// A resource's spans by scope.
type Scopes = BTreeMap<ScopeKey, Vec<Span>>;

impl<K: Ord> Default for RequestBuilder<K> {
    fn default() -> Self {
        Self {
            resources: BTreeMap::new(),
        }
    }
}

impl<K: Ord> RequestBuilder<K> {
    /// Adds `span` under the resource `key` (whose attributes `resource`
    /// makes, the first time the key is seen) and the scope `scope`.
    pub fn push(
        &mut self,
        key: K,
        resource: impl FnOnce(&K) -> Vec<KeyValue>,
        scope: ScopeKey,
        span: Span,
    ) {
        let (_, scopes) = self.resources.entry(key).or_insert_with_key(|k| {
            let attributes = resource(k);
            (attributes, BTreeMap::new())
        });
        scopes.entry(scope).or_default().push(span);
    }

    pub fn finish(self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: self
                .resources
                .into_values()
                .map(|(attributes, scopes)| ResourceSpans {
                    resource: Some(Resource {
                        attributes,
                        dropped_attributes_count: 0,
                        entity_refs: Vec::new(),
                    }),
                    scope_spans: scopes
                        .into_iter()
                        .map(|((name, version), spans)| ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name,
                                version,
                                attributes: Vec::new(),
                                dropped_attributes_count: 0,
                            }),
                            spans,
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        }
    }
}

/// An attribute value as text (Zipkin tags, Jaeger's string fallback):
/// strings as they are, booleans `true`/`false`, numbers in decimal, bytes
/// base64, arrays and maps JSON.
pub fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None | Some(Any::StringValueStrindex(_)) => String::new(),
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(Any::BytesValue(b)) => BASE64.encode(b),
        Some(Any::ArrayValue(_) | Any::KvlistValue(_)) => json_value(value).to_string(),
    }
}

/// An attribute value as plain JSON (bytes as base64).
pub fn json_value(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        None | Some(Any::StringValueStrindex(_)) => Value::Null,
        Some(Any::StringValue(s)) => json!(s),
        Some(Any::BoolValue(b)) => json!(b),
        Some(Any::IntValue(i)) => json!(i),
        Some(Any::DoubleValue(d)) => json!(d),
        Some(Any::BytesValue(b)) => json!(BASE64.encode(b)),
        Some(Any::ArrayValue(a)) => a.values.iter().map(|v| json_value(Some(v))).collect(),
        Some(Any::KvlistValue(kv)) => attributes_object(&kv.values),
    }
}

/// Attributes as one JSON object (a repeated key keeps its last value).
pub fn attributes_object(attrs: &[KeyValue]) -> Value {
    Value::Object(
        attrs
            .iter()
            .map(|kv| (kv.key.clone(), json_value(kv.value.as_ref())))
            .collect(),
    )
}

/// Lowercase hex trace id, 16 digits when the high half is zero (the form
/// Zipkin and Jaeger use for 64-bit ids).
pub fn trace_id_hex(id: &[u8]) -> String {
    if id.len() == 16 && id[..8].iter().all(|&b| b == 0) {
        hex::encode(&id[8..])
    } else {
        hex::encode(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(name: &str) -> Span {
        Span {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn spans_are_grouped_by_resource_then_scope() {
        let mut b = RequestBuilder::default();
        let res = |k: &&str| vec![string_kv("service.name", k)];
        b.push("b", res, ("s2".into(), String::new()), span("1"));
        b.push("a", res, ("s1".into(), String::new()), span("2"));
        b.push("b", res, ("s1".into(), "v".into()), span("3"));
        b.push("b", res, ("s2".into(), String::new()), span("4"));
        let r = b.finish();
        // (service, [(scope, [span names])])
        type Shape = Vec<(String, Vec<(String, Vec<String>)>)>;
        let shape: Shape = r
            .resource_spans
            .iter()
            .map(|rs| {
                (
                    value_text(rs.resource.as_ref().unwrap().attributes[0].value.as_ref()),
                    rs.scope_spans
                        .iter()
                        .map(|ss| {
                            (
                                ss.scope.as_ref().unwrap().name.clone(),
                                ss.spans.iter().map(|s| s.name.clone()).collect(),
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        let s = |v: &str| v.to_string();
        assert_eq!(
            shape,
            vec![
                (s("a"), vec![(s("s1"), vec![s("2")])]),
                (
                    s("b"),
                    vec![(s("s1"), vec![s("3")]), (s("s2"), vec![s("1"), s("4")])]
                ),
            ]
        );
    }

    #[test]
    fn sixty_four_bit_trace_ids_are_sixteen_digits() {
        let mut id = [0u8; 16];
        id[15] = 0xab;
        assert_eq!(trace_id_hex(&id), "00000000000000ab");
        id[0] = 1;
        assert_eq!(trace_id_hex(&id), "010000000000000000000000000000ab");
    }

    #[test]
    fn values_as_text() {
        let v = |value| Some(AnyValue { value: Some(value) });
        assert_eq!(value_text(v(Any::BoolValue(true)).as_ref()), "true");
        assert_eq!(value_text(v(Any::IntValue(-3)).as_ref()), "-3");
        assert_eq!(value_text(v(Any::BytesValue(vec![1, 2])).as_ref()), "AQI=");
        assert_eq!(value_text(None), "");
    }
}
