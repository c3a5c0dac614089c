use arrow_array::RecordBatch;
use proptest::prelude::*;
use serde_json::{Map, Value as Json};
use tracelake_schema::otlp::arbitrary::{DAY_NS, DAY_START, request, roughen};
use tracelake_schema::otlp::{Acceptance, Rejections, SpansBuilder};

use super::*;
use crate::otlp_json::{decode_request, traces_data};

/// Half the generated day: spans in the other half are rejected.
const WINDOW: Acceptance = Acceptance {
    min_start_unix_nano: DAY_START as i64,
    max_start_unix_nano: (DAY_START + DAY_NS / 2) as i64,
};

/// The reference: the normalising serde path, then `append_request`.
fn reference(body: &[u8]) -> Result<(RecordBatch, Rejections), String> {
    reference_in(body, WINDOW)
}

fn reference_in(body: &[u8], window: Acceptance) -> Result<(RecordBatch, Rejections), String> {
    let request = decode_request(body).map_err(|e| e.to_string())?;
    let mut builder = SpansBuilder::default();
    let rejections = builder.append_request(&request, &window);
    Ok((builder.finish(), rejections))
}

fn direct(body: &[u8]) -> Result<(RecordBatch, Rejections), String> {
    direct_in(body, WINDOW)
}

fn direct_in(body: &[u8], window: Acceptance) -> Result<(RecordBatch, Rejections), String> {
    let mut builder = SpansBuilder::default();
    let mut sink = Sink::new(&mut builder, window);
    decode_into(body, &mut sink).map_err(|e| e.to_string())?;
    let rejections = sink.rejections;
    Ok((builder.finish(), rejections))
}

/// Rewrites the proto3 JSON of a request the ways exporters and the
/// Collector's leniency allow: snake_case keys, enum names, numbers for
/// 64-bit integers and strings for 32-bit ones, `null` fields. (Field order
/// cannot be varied here, `serde_json::Map` sorts keys:
/// `spans_before_their_resource_and_scope` covers it.)
fn dialect(value: Json, seed: u64) -> Json {
    fn walk(value: Json, key: &str, seed: u64, depth: u64) -> Json {
        let flip = |salt: u64| (seed >> ((depth + salt) % 60)) & 1 == 1;
        match value {
            Json::Object(map) => {
                let entries: Vec<(String, Json)> = map
                    .into_iter()
                    .map(|(k, v)| {
                        let v = walk(v, &k, seed, depth + 1);
                        (k, v)
                    })
                    .collect();
                let mut out = Map::new();
                for (k, v) in entries {
                    let k = if flip(2) { snake_case(&k) } else { k };
                    out.insert(k, v);
                }
                if flip(3) {
                    out.insert("droppedLinksCount".into(), Json::Null);
                }
                Json::Object(out)
            }
            Json::Array(items) => Json::Array(
                items
                    .into_iter()
                    .map(|v| walk(v, key, seed, depth + 1))
                    .collect(),
            ),
            Json::Number(n) if key == "kind" && flip(4) => {
                Json::String(kind_name(n.as_i64().unwrap_or(0)))
            }
            Json::Number(n) if key.starts_with("dropped") && flip(5) => Json::String(n.to_string()),
            Json::String(s) if key.ends_with("UnixNano") && flip(6) => {
                Json::Number(s.parse::<u64>().unwrap().into())
            }
            other => other,
        }
    }
    walk(value, "", seed, 0)
}

fn snake_case(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn kind_name(kind: i64) -> String {
    SpanKind::try_from(kind as i32)
        .map(|k| k.as_str_name().to_string())
        .unwrap_or_else(|_| kind.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn writes_what_the_serde_path_writes(
        request in request(),
        seed in any::<u64>(),
        style in any::<u64>(),
    ) {
        let json = dialect(traces_data(&roughen(request, seed)), style);
        let body = serde_json::to_vec(&json).unwrap();
        let expected = reference(&body);
        prop_assert!(expected.is_ok(), "{expected:?}");
        prop_assert_eq!(direct(&body), expected);
    }

    /// Cut bodies: both refuse, or both write the same rows.
    #[test]
    fn cut_bodies(request in request(), cut in any::<prop::sample::Index>()) {
        let mut body = serde_json::to_vec(&traces_data(&request)).unwrap();
        body.truncate(cut.index(body.len()));
        prop_assert_eq!(direct(&body).ok(), reference(&body).ok());
    }
}

#[test]
fn snake_case_enum_names_and_nulls_are_accepted() {
    let body = br#"{"resource_spans":[{"resource":null,"scope_spans":[{"spans":[{
        "trace_id":"5B8EFFF798038103D269B633813FC60C","span_id":"EEE19B7EC3C1B174",
        "parent_span_id":null,"name":"n","kind":"SPAN_KIND_SERVER",
        "start_time_unix_nano":1795219200000000001,"end_time_unix_nano":"1795219201000000000",
        "dropped_attributes_count":"2","status":{"code":"STATUS_CODE_ERROR"}}]}]}]}"#;
    let (batch, rejections) = direct(body).unwrap();
    assert_eq!(rejections.count, 0);
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(Ok((batch, rejections)), reference(body));
}

#[test]
fn unknown_fields_are_an_error_when_no_span_decodes() {
    let err = direct(br#"{"resourceSpanz":[{}]}"#).unwrap_err();
    assert!(err.contains("resourceSpanz"), "{err}");
    let err =
        direct(br#"{"resourceSpans":[{"scopeSpans":[{"spanz":[{"name":"x"}]}]}]}"#).unwrap_err();
    assert!(
        err.contains("resourceSpans[0].scopeSpans[0].spanz"),
        "{err}"
    );
    let err = direct(br#"{"resourceSpans":[{"scope_spanz":[]}]}"#).unwrap_err();
    assert!(err.contains("resourceSpans[0].scopeSpanz"), "{err}");
    assert!(direct(b"{}").is_ok());
    assert!(direct(br#"{"resourceSpans":[]}"#).is_ok());
    assert!(direct(br#"{"resourceSpans":null}"#).is_ok());
    let mut builder = SpansBuilder::default();
    let mut sink = Sink::new(&mut builder, WINDOW);
    assert!(matches!(
        decode_into(b"[1]", &mut sink),
        Err(Error::NotAnObject)
    ));
    assert!(matches!(
        decode_into(b"{", &mut sink),
        Err(Error::Syntax(_))
    ));
    assert!(matches!(
        decode_into(br#"{"resourceSpans":5}"#, &mut sink),
        Err(Error::Shape(_))
    ));
}

#[test]
fn doubles_in_strings_and_nested_values() {
    let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"r","value":{"doubleValue":"Infinity"}}]},
        "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x",
          "startTimeUnixNano":"1795219200000000001","endTimeUnixNano":"1795219200000000002",
          "attributes":[{"key":"a","value":{"doubleValue":"NaN"}},{"key":"b","value":{"doubleValue":"1.5"}},
            {"key":"c","value":{"arrayValue":{"values":[{"intValue":"3"},{"bytesValue":"AQI="}]}}},
            {"key":"d","value":{"kvlistValue":{"values":[{"key":"e","value":{"boolValue":true}},{"key":"f"}]}}},
            {"key":"g","value":{}},{"key":"h"},{"key":"i","value":{"intValue":5}}],
          "events":[{"name":"e","timeUnixNano":"1795219200000000001","attributes":[{"key":"f","value":{"doubleValue":"-Infinity"}}]}],
          "links":[{"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175","flags":"1"}]}]}]}]}"#;
    let got = direct(body).unwrap();
    assert_eq!(got.0.num_rows(), 1);
    assert_eq!(Ok(got), reference(body));
    // Other strings are an error naming the value.
    let bad = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"doubleValue":"lots"}}]}]}]}]}"#;
    let err = direct(bad).unwrap_err();
    assert!(err.contains("lots"), "{err}");
    assert!(reference(bad).is_err());
    // A KeyValue needs its key, an arrayValue its values.
    assert!(
        direct(
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"value":{}}]}]}]}]}"#
        )
        .is_err()
    );
    assert!(direct(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"arrayValue":{}}}]}]}]}]}"#).is_err());
}

#[test]
fn a_repeated_span_list_is_an_error() {
    let err =
        direct(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[],"spans":[]}]}]}"#).unwrap_err();
    assert!(err.contains("duplicate field `spans`"), "{err}");
}

/// protojson writes `schemaUrl` after the spans, and nothing orders the
/// fields of a JSON object: spans that come before their resource and scope
/// get them all the same (the property test cannot show it: its
/// `serde_json::Map` sorts keys).
#[test]
fn spans_before_their_resource_and_scope() {
    let span = |id: &str| {
        format!(
            r#"{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"{id}","name":"n",
            "startTimeUnixNano":"1795219200000000001","endTimeUnixNano":"1795219200000000002"}}"#
        )
    };
    let body = format!(
        r#"{{"resourceSpans":[
          {{"scopeSpans":[
             {{"spans":[{a},{b}],"schemaUrl":"s1","scope":{{"name":"lib1","attributes":[{{"key":"x","value":{{"intValue":"1"}}}}]}}}},
             {{"schemaUrl":"s2","spans":[{c}],"scope":{{"name":"lib2"}}}}],
           "schemaUrl":"r1",
           "resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc-a"}}}}]}}}},
          {{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc-b"}}}}]}},
           "scopeSpans":[{{"spans":[{d}]}}]}}]}}"#,
        a = span("0000000000000001"),
        b = span("0000000000000002"),
        c = span("0000000000000003"),
        d = span("0000000000000004"),
    );
    let (batch, rejections) = direct(body.as_bytes()).unwrap();
    assert_eq!(rejections.count, 0);
    assert_eq!(batch.num_rows(), 4);
    let services = batch
        .column_by_name("service_name")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()
        .unwrap();
    assert_eq!(
        services.iter().collect::<Vec<_>>(),
        [Some("svc-a"), Some("svc-a"), Some("svc-a"), Some("svc-b")]
    );
    assert_eq!(Ok((batch, rejections)), reference(body.as_bytes()));
}

#[test]
fn unknown_keys_are_bounded_and_null_ones_ignored() {
    assert!(direct(br#"{"resourceSpans":[],"foo":null}"#).is_ok());
    let many: String = (0..1000).map(|i| format!(r#""k{i}":0,"#)).collect();
    let body = format!(r#"{{{many}"resourceSpans":[]}}"#);
    let err = direct(body.as_bytes()).unwrap_err();
    assert!(
        err.contains("k0") && err.contains("k15") && !err.contains("k16"),
        "{err}"
    );
}

/// The public samples, as sent and in the other dialects exporters use,
/// write the rows the serde path writes; and every prefix of them is refused
/// by both decoders or written alike.
#[test]
fn the_shared_otlp_samples_decode_as_the_serde_path_does() {
    for (name, body) in crate::otlp_json::shared_otlp_samples() {
        let expected = reference_in(&body, Acceptance::ANY_TIME)
            .unwrap_or_else(|e| panic!("{name}: the serde path refused it: {e}"));
        assert!(expected.0.num_rows() > 0, "{name}: no span decoded");
        assert_eq!(expected.1.count, 0, "{name}: {:?}", expected.1);
        assert_eq!(
            direct_in(&body, Acceptance::ANY_TIME),
            Ok(expected),
            "{name}: the direct decoder wrote other rows"
        );
        let json: Json = serde_json::from_slice(&body).unwrap();
        for style in [
            u64::MAX,
            0x5555_5555_5555_5555,
            0xaaaa_aaaa_aaaa_aaaa,
            0x0f0f_0f0f_0f0f_0f0f,
        ] {
            let body = serde_json::to_vec(&dialect(json.clone(), style)).unwrap();
            let expected = reference_in(&body, Acceptance::ANY_TIME);
            assert!(expected.is_ok(), "{name}, dialect {style:x}: {expected:?}");
            assert_eq!(
                direct_in(&body, Acceptance::ANY_TIME),
                expected,
                "{name}, dialect {style:x}"
            );
        }
        for cut in 0..body.len() {
            let body = &body[..cut];
            assert_eq!(
                direct_in(body, Acceptance::ANY_TIME).ok(),
                reference_in(body, Acceptance::ANY_TIME).ok(),
                "{name} cut at byte {cut}"
            );
        }
    }
}

/// A span whose attribute value is an `arrayValue` nested `depth` levels.
fn nested_attribute(depth: usize) -> Vec<u8> {
    let mut body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"x","startTimeUnixNano":"1795219200000000001","endTimeUnixNano":"1795219200000000002","attributes":[{"key":"k","value":"#.to_vec();
    body.extend(br#"{"arrayValue":{"values":["#.repeat(depth));
    body.extend(br#"{"intValue":"1"}"#);
    body.extend(b"]}}".repeat(depth));
    body.extend(b"}]}]}]}]}");
    body
}

/// A hostile body nesting attribute values without end is refused with an
/// error naming the limit, not a stack overflow (serde_json stops at 128
/// levels of objects and arrays, three per `arrayValue`, on the 2 MiB
/// stacks of test threads as of the blocking pool); values nested within
/// it are written as the serde path writes them.
#[test]
fn values_nested_without_end_are_refused_with_an_error() {
    let within = nested_attribute(30);
    let got = direct(&within).unwrap();
    assert_eq!(got.0.num_rows(), 1);
    assert_eq!(Ok(got), reference(&within));
    for depth in [40, 100_000] {
        let body = nested_attribute(depth);
        let err = direct(&body).unwrap_err();
        assert!(err.contains("recursion limit"), "{depth}: {err}");
        assert!(reference(&body).is_err());
    }
}

/// A body that is not UTF-8 is refused naming where, as the serde path
/// refuses it: in a value, in a field neither decoder stores, and cut
/// inside a character.
#[test]
fn a_body_that_is_not_utf8_is_refused_naming_the_byte() {
    let good = [
        &br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"caf"#[..],
        "é".as_bytes(),
        br#"","startTimeUnixNano":"1795219200000000001","endTimeUnixNano":"1795219200000000002","unknownField":"x"}]}]}]}"#,
    ]
    .concat();
    let (batch, _) = direct(&good).unwrap();
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(Ok((batch, Rejections::default())), reference(&good));
    let with = |i: usize, byte: u8| {
        let mut body = good.clone();
        body[i] = byte;
        body
    };
    let at = good.windows(2).position(|w| w == "é".as_bytes()).unwrap();
    let unknown = good.windows(3).position(|w| w == b"\"x\"").unwrap() + 1;
    for (what, bad, byte) in [
        ("a bad continuation byte", with(at + 1, b'x'), at),
        ("an unknown field's value", with(unknown, 0xff), unknown),
        ("a body cut inside a character", good[..at + 1].to_vec(), at),
    ] {
        let err = direct(&bad).unwrap_err();
        assert_eq!(
            err,
            format!("invalid JSON: not UTF-8 at byte {byte}"),
            "{what}"
        );
        assert!(reference(&bad).is_err(), "{what}");
    }
}
