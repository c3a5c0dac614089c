//! The trace as a list of span objects, serialised straight from each
//! span's OTLP record: no `serde_json::Value` tree is built. Keys come in
//! the order `serde_json`'s maps write them (sorted), so the bytes are
//! those of the answer built as values before.

use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use tracelake_schema::opentelemetry_proto::tonic::common::v1::KeyValue;
use tracelake_schema::opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use tracelake_schema::opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use tracelake_schema::spans::{SPAN_KINDS, STATUS_CODES};

use super::{Assembly, BASE64};
use base64::Engine as _;

/// The answer: `header`'s entries with `"spans"` among them, in key order.
pub(super) struct Document<'a> {
    pub header: &'a Map<String, Value>,
    pub assembly: &'a Assembly<'a>,
}

impl Serialize for Document<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.header.len() + 1))?;
        let mut spans = Some(Spans(self.assembly));
        for (key, value) in self.header {
            if key.as_str() > "spans"
                && let Some(spans) = spans.take()
            {
                map.serialize_entry("spans", &spans)?;
            }
            map.serialize_entry(key, value)?;
        }
        if let Some(spans) = spans {
            map.serialize_entry("spans", &spans)?;
        }
        map.end()
    }
}

/// The spans in tree order, each read from its row as it is written.
struct Spans<'a>(&'a Assembly<'a>);

impl Serialize for Spans<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        let tree = &a.tree;
        let mut seq = s.serialize_seq(Some(tree.order.len()))?;
        for &i in &tree.order {
            let (b, row) = a.rows[tree.spans[i].key];
            let rows = &a.views[b];
            let span = rows.span(row).map_err(S::Error::custom)?;
            let (resource, resource_schema_url) = rows.resource(row).map_err(S::Error::custom)?;
            let (scope, scope_schema_url) = rows.scope(row).map_err(S::Error::custom)?;
            let status = span.status.clone().unwrap_or_default();
            seq.serialize_element(&SpanObject {
                attributes: Attributes(&span.attributes),
                children: tree.children[i]
                    .iter()
                    .map(|&c| tree.spans[c].id_hex())
                    .collect(),
                clock_skew_ns: tree.skew[i],
                critical_path_ns: a.breakdown.critical.get(i).copied().unwrap_or(0),
                depth: tree.depth[i],
                dropped_attributes_count: span.dropped_attributes_count,
                dropped_events_count: span.dropped_events_count,
                dropped_links_count: span.dropped_links_count,
                duration_ns: rows.duration_ns(row),
                end_time_unix_nano: span.end_time_unix_nano.to_string(),
                events: Events(&span.events),
                flags: span.flags,
                kind: SPAN_KINDS
                    .get(span.kind as usize)
                    .copied()
                    .unwrap_or("UNSPECIFIED"),
                links: Links(&span.links),
                name: &span.name,
                orphan: tree.orphan[i],
                parent_span_id: (!span.parent_span_id.is_empty())
                    .then(|| hex::encode(&span.parent_span_id)),
                resource: ResourceObject {
                    attributes: Attributes(&resource.attributes),
                    dropped_attributes_count: resource.dropped_attributes_count,
                    schema_url: &resource_schema_url,
                },
                scope: ScopeObject {
                    attributes: Attributes(&scope.attributes),
                    dropped_attributes_count: scope.dropped_attributes_count,
                    name: &scope.name,
                    schema_url: &scope_schema_url,
                    version: &scope.version,
                },
                self_time_ns: a.breakdown.self_times[i],
                service_name: rows.service_name(row),
                span_id: hex::encode(&span.span_id),
                start_time_unix_nano: span.start_time_unix_nano.to_string(),
                status: StatusObject {
                    code: STATUS_CODES
                        .get(status.code as usize)
                        .copied()
                        .unwrap_or("UNSET"),
                    message: &status.message,
                },
                trace_state: &span.trace_state,
            })?;
        }
        seq.end()
    }
}

// The fields of each object are in sorted order (see the module's note).

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpanObject<'a> {
    attributes: Attributes<'a>,
    children: Vec<String>,
    clock_skew_ns: i64,
    critical_path_ns: i64,
    depth: usize,
    dropped_attributes_count: u32,
    dropped_events_count: u32,
    dropped_links_count: u32,
    duration_ns: i64,
    end_time_unix_nano: String,
    events: Events<'a>,
    flags: u32,
    kind: &'static str,
    links: Links<'a>,
    name: &'a str,
    orphan: bool,
    parent_span_id: Option<String>,
    resource: ResourceObject<'a>,
    scope: ScopeObject<'a>,
    self_time_ns: i64,
    service_name: &'a str,
    span_id: String,
    start_time_unix_nano: String,
    status: StatusObject<'a>,
    trace_state: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceObject<'a> {
    attributes: Attributes<'a>,
    dropped_attributes_count: u32,
    schema_url: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScopeObject<'a> {
    attributes: Attributes<'a>,
    dropped_attributes_count: u32,
    name: &'a str,
    schema_url: &'a str,
    version: &'a str,
}

#[derive(Serialize)]
struct StatusObject<'a> {
    code: &'static str,
    message: &'a str,
}

struct Events<'a>(&'a [Event]);

impl Serialize for Events<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct EventObject<'a> {
            attributes: Attributes<'a>,
            dropped_attributes_count: u32,
            name: &'a str,
            time_unix_nano: String,
        }
        s.collect_seq(self.0.iter().map(|e| EventObject {
            attributes: Attributes(&e.attributes),
            dropped_attributes_count: e.dropped_attributes_count,
            name: &e.name,
            time_unix_nano: e.time_unix_nano.to_string(),
        }))
    }
}

struct Links<'a>(&'a [Link]);

impl Serialize for Links<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct LinkObject<'a> {
            attributes: Attributes<'a>,
            dropped_attributes_count: u32,
            flags: u32,
            span_id: String,
            trace_id: String,
            trace_state: &'a str,
        }
        s.collect_seq(self.0.iter().map(|l| LinkObject {
            attributes: Attributes(&l.attributes),
            dropped_attributes_count: l.dropped_attributes_count,
            flags: l.flags,
            span_id: hex::encode(&l.span_id),
            trace_id: hex::encode(&l.trace_id),
            trace_state: &l.trace_state,
        }))
    }
}

/// Attributes as a JSON object with typed values (see [`AnyJson`]); keys
/// sorted, and of a key given twice the last value, as a map keeps them.
pub(super) struct Attributes<'a>(pub &'a [KeyValue]);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let attrs = self.0;
        let mut order: Vec<usize> = (0..attrs.len()).collect();
        // Stable: equal keys keep their order, and the last one is kept.
        order.sort_by(|&a, &b| attrs[a].key.cmp(&attrs[b].key));
        order.dedup_by(|later, earlier| {
            let same = attrs[*later].key == attrs[*earlier].key;
            if same {
                *earlier = *later;
            }
            same
        });
        let mut map = s.serialize_map(Some(order.len()))?;
        for i in order {
            let kv = &attrs[i];
            let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
            map.serialize_entry(&kv.key, &AnyJson(value))?;
        }
        map.end()
    }
}

/// An attribute value as JSON: strings, numbers, booleans, arrays and
/// objects; bytes as base64; non-finite doubles as strings; nothing (or a
/// string-table index, which stored spans never hold) as null.
pub(super) struct AnyJson<'a>(pub Option<&'a Any>);

impl Serialize for AnyJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None | Some(Any::StringValueStrindex(_)) => s.serialize_unit(),
            Some(Any::StringValue(v)) => s.serialize_str(v),
            Some(Any::BoolValue(v)) => s.serialize_bool(*v),
            Some(Any::IntValue(v)) => s.serialize_i64(*v),
            Some(Any::DoubleValue(v)) if v.is_finite() => s.serialize_f64(*v),
            Some(Any::DoubleValue(v)) => s.collect_str(v),
            Some(Any::BytesValue(v)) => s.serialize_str(&BASE64.encode(v)),
            Some(Any::ArrayValue(a)) => {
                s.collect_seq(a.values.iter().map(|v| AnyJson(v.value.as_ref())))
            }
            Some(Any::KvlistValue(kv)) => Attributes(&kv.values).serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tracelake_schema::opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, KeyValueList,
    };

    use super::*;

    fn kv(key: &str, value: Option<Any>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.map(|v| AnyValue { value: Some(v) }),
            key_strindex: 0,
        }
    }

    /// Every kind of value, a key given twice (the last value counts, as
    /// in a map) and keys out of order: the object a map of values gives.
    #[test]
    fn attributes_are_the_object_a_map_of_values_gives() {
        let attrs = vec![
            kv("z", Some(Any::StringValue("last key".into()))),
            kv("dup", Some(Any::IntValue(1))),
            kv("int", Some(Any::IntValue(-9_007_199_254_740_993))),
            kv("double", Some(Any::DoubleValue(0.1))),
            kv("whole", Some(Any::DoubleValue(2.0))),
            kv("nan", Some(Any::DoubleValue(f64::NAN))),
            kv("inf", Some(Any::DoubleValue(f64::NEG_INFINITY))),
            kv("bool", Some(Any::BoolValue(true))),
            kv("bytes", Some(Any::BytesValue(vec![0, 1, 254, 255]))),
            kv("none", None),
            kv("dup", Some(Any::StringValue("second".into()))),
            kv(
                "array",
                Some(Any::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(Any::IntValue(2)),
                        },
                        AnyValue { value: None },
                    ],
                })),
            ),
            kv(
                "kvlist",
                Some(Any::KvlistValue(KeyValueList {
                    values: vec![
                        kv("b", Some(Any::BoolValue(false))),
                        kv("a", Some(Any::StringValue("x".into()))),
                        kv("b", Some(Any::IntValue(3))),
                    ],
                })),
            ),
            kv("Upper", Some(Any::StringValue("sorts first".into()))),
        ];
        let written = serde_json::to_string(&Attributes(&attrs)).unwrap();
        let expected = json!({
            "Upper": "sorts first",
            "array": [2, null],
            "bool": true,
            "bytes": "AAH+/w==",
            "double": 0.1,
            "dup": "second",
            "inf": "-inf",
            "int": -9_007_199_254_740_993i64,
            "kvlist": {"a": "x", "b": 3},
            "nan": "NaN",
            "none": null,
            "whole": 2.0,
            "z": "last key",
        });
        // Byte for byte: the same keys in the same order, the same numbers.
        assert_eq!(written, serde_json::to_string(&expected).unwrap());
    }

    /// The span list of the test trace: `spans` among the header's keys
    /// in order (the bytes are what a map of values writes), every span
    /// with its fields.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_span_list_is_written_in_key_order_with_every_field() {
        let f = crate::testing::fixture();
        let id = crate::trace::parse_trace_id(crate::testing::TRACE).unwrap();
        let batches = crate::trace::fetch(&f.engine, &id).await.unwrap();
        let bytes = crate::trace::assemble(&id, &batches).unwrap().unwrap();
        // (Values write keys sorted, without serde_json's preserve_order.)
        assert_eq!(
            serde_json::to_string(&json!({"b": 1, "a": 2})).unwrap(),
            r#"{"a":2,"b":1}"#
        );
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(serde_json::to_vec(&value).unwrap(), bytes);
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert!(
            keys.contains(&"spans") && keys.contains(&"spanCount"),
            "{keys:?}"
        );
        let spans = value["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 3);
        let root = &spans[0];
        assert_eq!(root["depth"], 0);
        assert_eq!(root["parentSpanId"], Value::Null);
        assert_eq!(root["kind"], "SERVER");
        assert_eq!(root["attributes"], json!({"http.route": "/checkout"}));
        assert_eq!(root["resource"]["attributes"]["team"], "frontend-team");
        assert_eq!(root["children"], json!(["0000000000000002"]));
        let server = &spans[2];
        assert_eq!(server["depth"], 2);
        assert_eq!(server["parentSpanId"], "0000000000000002");
        assert_eq!(server["serviceName"], "payments");
        assert_eq!(
            server["status"],
            json!({"code": "ERROR", "message": "card declined"})
        );
        assert_eq!(
            server["attributes"],
            json!({"amount": 42, "http.response.status_code": "402"})
        );
        assert_eq!(server["durationNs"], 30_000_000);
        let ns = |v: &Value| v.as_str().unwrap().parse::<u64>().unwrap();
        assert_eq!(
            ns(&server["endTimeUnixNano"]) - ns(&server["startTimeUnixNano"]),
            30_000_000
        );
        assert_eq!(server["selfTimeNs"], 30_000_000);
        for span in spans {
            assert_eq!(span.as_object().unwrap().len(), 25, "{span}");
        }
    }
}
