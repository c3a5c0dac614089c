//! Bad input gets the documented status and a message naming the problem,
//! and the server keeps serving and keeps what it already accepted.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use serde_json::Value;

use crate::server::{TestServer, metric};
use crate::spans::{kv, now_nanos, request, span};

/// `google.rpc.Status`, as OTLP/HTTP error bodies carry it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

struct Reply {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn proto_status(&self) -> RpcStatus {
        assert_eq!(self.content_type, "application/x-protobuf");
        RpcStatus::decode(&self.body[..]).expect("error body is a google.rpc.Status")
    }

    fn json(&self) -> Value {
        assert_eq!(self.content_type, "application/json");
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

async fn post(
    server: &TestServer,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> Reply {
    let mut req = reqwest::Client::new()
        .post(server.otlp_url())
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let r = req.send().await.unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    Reply {
        status: r.status().as_u16(),
        content_type: header("content-type").unwrap_or_default(),
        retry_after: header("retry-after"),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

const PROTOBUF: &str = "application/x-protobuf";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--max-request-bytes", "100000"]).await;

    // Data accepted before the bad requests.
    let good = request("bad-input", vec![span(7, 1), span(7, 2)]).encode_to_vec();
    let r = post(&server, PROTOBUF, None, good.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, PROTOBUF);
    assert_eq!(
        ExportTraceServiceResponse::decode(&r.body[..])
            .unwrap()
            .partial_success,
        None
    );

    // Truncated protobuf.
    let r = post(&server, PROTOBUF, None, good[..good.len() - 5].to_vec()).await;
    assert_eq!(r.status, 400);
    let status = r.proto_status();
    assert_eq!(status.code, 3, "INVALID_ARGUMENT");
    assert!(status.message.contains("protobuf"), "{}", status.message);

    // Invalid JSON.
    let r = post(
        &server,
        "application/json",
        None,
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(r.status, 400);
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("JSON"), "{message}");

    // A typo that would leave the request empty is a 400, not a silent 200.
    let r = post(
        &server,
        "application/json",
        None,
        br#"{"resourceSpans":[{"scopeSpans":[{"spanz":[{"name":"lost"}]}]}]}"#.to_vec(),
    )
    .await;
    assert_eq!(r.status, 400);
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("resourceSpans[0].scopeSpans[0].spanz"),
        "{message}"
    );

    // Wrong content type.
    let r = post(&server, "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(r.status, 415);
    assert!(r.json()["message"].as_str().unwrap().contains("text/plain"));

    // Oversize body, plain and as a small gzip bomb.
    let r = post(&server, PROTOBUF, None, vec![0u8; 200_000]).await;
    assert_eq!(r.status, 413);
    assert!(r.proto_status().message.contains("100000"));
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&vec![0u8; 1_000_000]).unwrap();
    let r = post(&server, PROTOBUF, Some("gzip"), gz.finish().unwrap()).await;
    assert_eq!(r.status, 413);

    // "gzip" that is not gzip.
    let r = post(&server, PROTOBUF, Some("gzip"), good.clone()).await;
    assert_eq!(r.status, 400);
    assert!(r.proto_status().message.contains("gzip"));

    // Unknown content encoding.
    let r = post(&server, PROTOBUF, Some("br"), good.clone()).await;
    assert_eq!(r.status, 415);

    // All-zero trace id: rejected individually, the other span accepted.
    let mut zero = span(0, 3);
    zero.trace_id = vec![0; 16];
    let body = request("bad-input", vec![zero, span(7, 4)]).encode_to_vec();
    let r = post(&server, PROTOBUF, None, body).await;
    assert_eq!(r.status, 200);
    let partial = ExportTraceServiceResponse::decode(&r.body[..])
        .unwrap()
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("trace_id"),
        "{}",
        partial.error_message
    );

    // The same over JSON: the count is a string, as proto3 JSON wants.
    let json = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "00000000000000000000000000000000", "spanId": "0102030405060708",
        "name": "zero", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]});
    let r = post(
        &server,
        "application/json",
        None,
        json.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["partialSuccess"]["rejectedSpans"], "1");

    // Wrong method.
    let r = reqwest::Client::new()
        .get(server.otlp_url())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // Still serving, and everything accepted is there.
    let r = post(
        &server,
        PROTOBUF,
        None,
        request("bad-input", vec![span(7, 5)]).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    let rows = server
        .sql("SELECT count(*) AS n FROM spans WHERE service_name = 'bad-input'")
        .await;
    assert_eq!(rows[0]["n"], 4);
    let (status, _) = server.get("/health").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_429_with_retry_after_and_resource_exhausted_with_retry_info_over_grpc() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

    let dir = tempfile::tempdir().unwrap();
    // One byte of buffer: the first request fills it, the next ones are refused.
    let server = TestServer::start(dir.path(), &["--max-buffer-bytes", "1"]).await;
    let body = request("overload", vec![span(9, 1)]).encode_to_vec();
    assert_eq!(
        post(&server, PROTOBUF, None, body.clone()).await.status,
        200
    );
    let r = post(&server, PROTOBUF, None, body).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    assert!(r.proto_status().message.contains("overloaded"));

    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let err = client
        .export(request("overload", vec![span(9, 2)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    // RetryInfo travels in grpc-status-details-bin; exporters retry
    // RESOURCE_EXHAUSTED only with it.
    let details = tonic_types::StatusExt::get_error_details(&err);
    let retry = details
        .retry_info()
        .expect("RetryInfo in the status details");
    assert_eq!(retry.retry_delay, Some(std::time::Duration::from_secs(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_rejects_bad_spans_individually_and_oversize_messages() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--max-request-bytes", "100000"]).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let mut bad = span(5, 1);
    bad.span_id = vec![1, 2, 3];
    let response = client
        .export(request("grpc", vec![bad, span(5, 2)]))
        .await
        .unwrap()
        .into_inner();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("span_id"));

    let mut huge = span(5, 3);
    huge.name = "x".repeat(200_000);
    let err = client
        .export(request("grpc", vec![huge]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    // Too large is not overload: exporters retry RESOURCE_EXHAUSTED only
    // with RetryInfo, and sending the same message again cannot succeed.
    assert!(
        tonic_types::StatusExt::get_error_details(&err)
            .retry_info()
            .is_none(),
        "an oversize message must not invite a retry"
    );
    assert!(
        client
            .export(request("grpc", vec![span(5, 4)]))
            .await
            .is_ok()
    );
}

/// Every stored span carries its resource: a 1 MiB resource over 2,100
/// spans, a request of 1.2 MB, would copy 2.1 GiB once decoded, past the
/// 2 GiB that an Arrow column's 32-bit offsets address (the decoder
/// panicked there, and the answer was a 503 that exporters retry for
/// ever). Refused whole as too large, not to be retried, over OTLP/HTTP
/// protobuf and JSON and over gRPC; what was accepted before stays, and
/// the server goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_large_once_decoded_is_refused_whole() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let good = request("grows", vec![span(11, 1)]).encode_to_vec();
    assert_eq!(post(&server, PROTOBUF, None, good).await.status, 200);

    let blob = "r".repeat(1 << 20);
    let mut hostile = request("grows", (2..2_102).map(|i| span(11, i)).collect());
    hostile.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("blob", &blob));
    let refused = |message: &str| {
        assert!(
            message.contains("too large once decoded")
                && message.contains("268435456")
                && message.contains("send fewer spans"),
            "{message}"
        );
    };
    let r = post(&server, PROTOBUF, None, hostile.encode_to_vec()).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.retry_after, None);
    refused(&r.proto_status().message);

    let start = now_nanos();
    let spans: Vec<Value> = (2..2_102u64)
        .map(|i| {
            serde_json::json!({
                "traceId": format!("{:032x}", 11), "spanId": format!("{i:016x}"),
                "name": "op", "startTimeUnixNano": start.to_string(),
                "endTimeUnixNano": (start + 1_000).to_string()})
        })
        .collect();
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "grows"}},
            {"key": "blob", "value": {"stringValue": blob}}]},
        "scopeSpans": [{"spans": spans}]}]});
    let r = post(
        &server,
        "application/json",
        None,
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 413);
    refused(r.json()["message"].as_str().unwrap());

    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let err = client.export(hostile).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        tonic_types::StatusExt::get_error_details(&err)
            .retry_info()
            .is_none(),
        "a request that can never pass must not invite a retry"
    );
    refused(err.message());

    // Nothing of the refused requests is stored; the server goes on.
    let r = post(
        &server,
        PROTOBUF,
        None,
        request("grows", vec![span(11, 9_999)]).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    let rows = server
        .sql("SELECT count(*) AS n FROM spans WHERE service_name = 'grows'")
        .await;
    assert_eq!(rows[0]["n"], 2);
    let metrics = server.metrics().await;
    let errors = |protocol: &str| {
        metric(
            &metrics,
            &format!(
                "tracelake_request_errors_total{{protocol=\"{protocol}\",reason=\"max_repeated_bytes\"}}"
            ),
        )
    };
    assert_eq!((errors("otlp_http"), errors("otlp_grpc")), (2.0, 1.0));
}
