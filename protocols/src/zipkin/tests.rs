//! The Zipkin mappings both ways, against hand-written expectations.

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::Value;

use super::*;

fn one(body: &str) -> (Resource, InstrumentationScope, Span) {
    let r = from_json(body.as_bytes()).unwrap();
    assert_eq!(r.resource_spans.len(), 1);
    let rs = &r.resource_spans[0];
    let ss = &rs.scope_spans[0];
    (
        rs.resource.clone().unwrap(),
        ss.scope.clone().unwrap(),
        ss.spans[0].clone(),
    )
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Any> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

#[test]
fn maps_a_client_span_like_the_collector() {
    let (resource, scope, span) = one(
        r#"[{"traceId":"5AF7183FB1D4CF5F","id":"6b221d5bc9e6496c","parentId":"6b221d5bc9e6496c",
            "kind":"CLIENT","name":"get /api","timestamp":1472470996199000,"duration":207000,
            "localEndpoint":{"serviceName":"frontend","ipv4":"192.168.99.1","port":8080},
            "remoteEndpoint":{"serviceName":"backend","ipv6":"2001:db8::c001","port":9000},
            "annotations":[{"timestamp":1472470996238000,"value":"ws"},
                           {"timestamp":1472470996239000,"value":"retry|{\"n\":2}|1"}],
            "tags":{"http.path":"/api","clnt/finagle.version":"6.45.0","host.name":"h1",
                    "otel.library.name":"lib","otel.library.version":"1.0","otel.status_code":"Error",
                    "otel.status_description":"boom","w3c.tracestate":"k=v","error":"timeout"},
            "debug":true,"shared":false}]"#,
    );
    assert_eq!(
        hex::encode(&span.trace_id),
        "00000000000000005af7183fb1d4cf5f"
    );
    assert!(
        span.parent_span_id.is_empty(),
        "parent equal to id is dropped"
    );
    assert_eq!(span.kind, SpanKind::Client as i32);
    assert_eq!(span.start_time_unix_nano, 1_472_470_996_199_000_000);
    assert_eq!(
        span.end_time_unix_nano - span.start_time_unix_nano,
        207_000_000
    );
    assert_eq!(span.trace_state, "k=v");
    let status = span.status.unwrap();
    assert_eq!(
        (status.code, status.message.as_str()),
        (StatusCode::Error as i32, "boom")
    );
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("lib", "1.0")
    );
    assert_eq!(
        attr(&resource.attributes, "service.name"),
        Some(&Any::StringValue("frontend".into()))
    );
    assert_eq!(
        attr(&resource.attributes, "host.name"),
        Some(&Any::StringValue("h1".into()))
    );
    let a = &span.attributes;
    assert_eq!(
        attr(a, "peer.service"),
        Some(&Any::StringValue("backend".into()))
    );
    assert_eq!(
        attr(a, "net.host.ip"),
        Some(&Any::StringValue("192.168.99.1".into()))
    );
    assert_eq!(attr(a, "net.host.port"), Some(&Any::IntValue(8080)));
    assert_eq!(
        attr(a, "net.peer.ip"),
        Some(&Any::StringValue("2001:db8::c001".into()))
    );
    // Another description is given: the error text stays a tag.
    assert_eq!(attr(a, "error"), Some(&Any::StringValue("timeout".into())));
    assert_eq!(attr(a, "http.path"), Some(&Any::StringValue("/api".into())));
    assert!(attr(a, "otel.status_code").is_none() && attr(a, "host.name").is_none());
    assert_eq!(span.events.len(), 2);
    assert_eq!(span.events[1].name, "retry");
    assert_eq!(span.events[1].dropped_attributes_count, 1);
    assert_eq!(
        attr(&span.events[1].attributes, "n"),
        Some(&Any::IntValue(2))
    );
}

#[test]
fn status_in_every_spelling() {
    for (tags, code) in [
        (r#"{"otel.status_code":"OK"}"#, StatusCode::Ok),
        (r#"{"otel.status_code":"Ok"}"#, StatusCode::Ok),
        (r#"{"otel.status_code":"STATUS_CODE_OK"}"#, StatusCode::Ok),
        (r#"{"otel.status_code":"ERROR"}"#, StatusCode::Error),
        (r#"{"otel.status_code":"error"}"#, StatusCode::Error),
        (
            r#"{"otel.status_code":"STATUS_CODE_ERROR"}"#,
            StatusCode::Error,
        ),
        (r#"{"error":"true"}"#, StatusCode::Error),
        (r#"{"error":""}"#, StatusCode::Error),
        (r#"{"error":"false"}"#, StatusCode::Unset),
        (r#"{}"#, StatusCode::Unset),
    ] {
        let body =
            format!(r#"[{{"traceId":"1","id":"2","timestamp":1,"duration":1,"tags":{tags}}}]"#);
        let (_, _, span) = one(&body);
        assert_eq!(
            span.status.map(|s| s.code).unwrap_or(0),
            code as i32,
            "{tags}"
        );
    }
}

#[test]
fn what_the_specification_exporters_send() {
    // The OpenTelemetry SDKs' Zipkin exporters: the description in
    // `error`, events as `"name": {attributes}`.
    let (_, _, span) = one(r#"[{"traceId":"1","id":"2","timestamp":1,"duration":1,
            "annotations":[{"timestamp":2,"value":"{\"retry\": {\"attempt\": 2}}"},
                           {"timestamp":3,"value":"\"gc\": {\"ms\": 5}"}],
            "tags":{"otel.status_code":"ERROR","error":"deadlock detected"}}]"#);
    let status = span.status.unwrap();
    assert_eq!(
        (status.code, status.message.as_str()),
        (2, "deadlock detected")
    );
    assert!(attr(&span.attributes, "error").is_none());
    assert_eq!(span.events[0].name, "retry");
    assert_eq!(
        attr(&span.events[0].attributes, "attempt"),
        Some(&Any::IntValue(2))
    );
}

#[test]
fn bad_input_names_the_span_and_field() {
    let ok = r#"{"traceId":"1","id":"2"}"#;
    for (body, needle) in [
        (r#"{"traceId":"1","id":"2"}"#.to_string(), "JSON list"),
        (
            format!(r#"[{ok},{{"id":"2"}}]"#),
            "span 1: traceId is required",
        ),
        (
            format!(r#"[{ok},{{"traceId":"xyz","id":"2"}}]"#),
            "span 1: traceId",
        ),
        (r#"[{"traceId":"1","id":"00"}]"#.into(), "id is all zeros"),
        (
            r#"[{"traceId":"1","id":"2","kind":"LOCAL"}]"#.into(),
            "kind",
        ),
        (
            r#"[{"traceId":"1","id":"2","tags":{"a":true}}]"#.into(),
            "tag \"a\"",
        ),
        (
            r#"[{"traceId":"1","id":"2","binaryAnnotations":[]}]"#.into(),
            "v1",
        ),
        (
            r#"[{"traceId":"1","id":"2","timestamp":-5}]"#.into(),
            "negative",
        ),
        (r#"[{"traceId":"1""#.into(), "invalid Zipkin v2 JSON"),
    ] {
        let err = from_json(body.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(needle), "{body}: {err}");
    }
    assert!(from_json(b"").unwrap().resource_spans.is_empty());
    assert!(from_json(b"[]").unwrap().resource_spans.is_empty());
}

#[test]
fn v1_spans_split_into_client_and_server_halves() {
    let r = from_v1_json(
        br#"[{"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","parentId":"6b221d5bc9e6496c","name":"get",
            "annotations":[
              {"timestamp":1000,"value":"cs","endpoint":{"serviceName":"frontend","ipv4":"10.0.0.1"}},
              {"timestamp":1100,"value":"sr","endpoint":{"serviceName":"backend","ipv4":"10.0.0.2"}},
              {"timestamp":1150,"value":"cache hit","endpoint":{"serviceName":"backend"}},
              {"timestamp":1800,"value":"ss","endpoint":{"serviceName":"backend"}},
              {"timestamp":2000,"value":"cr","endpoint":{"serviceName":"frontend"}}],
            "binaryAnnotations":[
              {"key":"http.path","value":"/api","endpoint":{"serviceName":"backend"}},
              {"key":"sa","value":true,"endpoint":{"serviceName":"backend","ipv4":"10.0.0.2","port":8080}},
              {"key":"ca","value":true,"endpoint":{"serviceName":"frontend","ipv4":"10.0.0.1"}}]},
           {"traceId":"5af7183fb1d4cf5f","id":"0000000000000007","parentId":"352bff9a74ca9ad2","name":"compute",
            "timestamp":1200,"duration":300,
            "binaryAnnotations":[{"key":"lc","value":"worker","endpoint":{"serviceName":"backend"}}]}]"#,
    )
    .unwrap();
    let mut spans: Vec<(String, String, i32, u64, u64)> = Vec::new();
    for rs in &r.resource_spans {
        let service = attr(&rs.resource.as_ref().unwrap().attributes, "service.name")
            .map(|a| match a {
                Any::StringValue(s) => s.clone(),
                _ => String::new(),
            })
            .unwrap_or_default();
        for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            spans.push((
                service.clone(),
                s.name.clone(),
                s.kind,
                s.start_time_unix_nano / 1000,
                (s.end_time_unix_nano - s.start_time_unix_nano) / 1000,
            ));
        }
    }
    spans.sort();
    assert_eq!(
        spans,
        [
            ("backend".to_string(), "compute".to_string(), 0, 1200, 300),
            (
                "backend".into(),
                "get".into(),
                SpanKind::Server as i32,
                1100,
                700
            ),
            (
                "frontend".into(),
                "get".into(),
                SpanKind::Client as i32,
                1000,
                1000
            ),
        ]
    );
    let all: Vec<&Span> = r
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let client = all
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    let server = all
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(server.events[0].name, "cache hit", "on the backend's half");
    assert!(client.events.is_empty());
    assert_eq!(
        attr(&client.attributes, "peer.service"),
        Some(&Any::StringValue("backend".into()))
    );
    assert_eq!(
        attr(&client.attributes, "net.peer.port"),
        Some(&Any::IntValue(8080))
    );
    assert!(from_v1_json(br#"{"traceId":"1"}"#).is_err());
    assert!(
        from_v1_json(br#"[{"traceId":"1","id":"2","binaryAnnotations":[{"value":"x"}]}]"#)
            .unwrap_err()
            .to_string()
            .contains("key")
    );
}

#[test]
fn proto3_matches_json() {
    let span = proto::Span {
        trace_id: hex::decode("0102030405060708090a0b0c0d0e0f10").unwrap(),
        id: hex::decode("1112131415161718").unwrap(),
        parent_id: Vec::new(),
        kind: 2,
        name: "get".into(),
        timestamp: 1_000_000,
        duration: 5,
        local_endpoint: Some(proto::Endpoint {
            service_name: "api".into(),
            ipv4: vec![10, 0, 0, 1],
            ipv6: Vec::new(),
            port: 80,
        }),
        remote_endpoint: None,
        annotations: vec![proto::Annotation {
            timestamp: 1_000_001,
            value: "wr".into(),
        }],
        tags: [("http.method".to_string(), "GET".to_string())].into(),
        debug: false,
        shared: true,
    };
    let body = prost::Message::encode_to_vec(&proto::ListOfSpans { spans: vec![span] });
    let decoded = from_proto(&body).unwrap();
    let expected = from_json(
        br#"[{"traceId":"0102030405060708090a0b0c0d0e0f10","id":"1112131415161718","kind":"SERVER",
            "name":"get","timestamp":1000000,"duration":5,"shared":true,
            "localEndpoint":{"serviceName":"api","ipv4":"10.0.0.1","port":80},
            "annotations":[{"timestamp":1000001,"value":"wr"}],"tags":{"http.method":"GET"}}]"#,
    )
    .unwrap();
    assert_eq!(decoded, expected);
    assert!(from_proto(b"\xff\xff").is_err());
}

#[test]
fn zipkin_round_trips_through_otlp() {
    let original: Value = serde_json::from_str(
        r#"{"traceId":"5af7183fb1d4cf5f","parentId":"6b221d5bc9e6496c","id":"352bff9a74ca9ad2",
            "kind":"SERVER","name":"get /api","timestamp":1472470996199000,"duration":207000,
            "localEndpoint":{"serviceName":"backend","ipv4":"192.168.99.101","port":9000},
            "remoteEndpoint":{"serviceName":"frontend","ipv4":"172.19.0.2","port":58648},
            "annotations":[{"timestamp":1472470996238000,"value":"wr"}],
            "tags":{"http.path":"/api","otel.status_code":"ERROR","error":"","otel.scope.name":"s"}}"#,
    )
    .unwrap();
    let request = from_json(format!("[{original}]").as_bytes()).unwrap();
    let rs = &request.resource_spans[0];
    let ss = &rs.scope_spans[0];
    let back = to_json(
        &ss.spans[0],
        rs.resource.as_ref().unwrap(),
        ss.scope.as_ref().unwrap(),
    );
    assert_eq!(back, original);
}
