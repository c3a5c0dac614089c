//! The Zipkin and Jaeger receivers refuse as OTLP does: 413 for a body over
//! the limit, 429 with Retry-After while the buffer is full, 503 with
//! Retry-After when the WAL cannot take the spans (a full disk).

use crate::server::TestServer;

/// A Zipkin v2 JSON list of one span.
fn zipkin_body(id: u64, name_len: usize) -> Vec<u8> {
    let now_us = crate::spans::now_nanos() / 1000;
    format!(
        r#"[{{"traceId":"{id:016x}","id":"{id:016x}","name":"{}","timestamp":{now_us},"duration":5,"localEndpoint":{{"serviceName":"refused"}}}}]"#,
        "x".repeat(name_len)
    )
    .into_bytes()
}

/// A Jaeger `Batch` of one span in thrift's binary protocol, written by
/// hand: process { serviceName }, spans [ { ids, name, flags, times } ].
fn jaeger_body(id: i64, name_len: usize) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, kind: u8, id: i16) {
        out.push(kind);
        out.extend_from_slice(&id.to_be_bytes());
    }
    fn string(out: &mut Vec<u8>, id: i16, s: &str) {
        field(out, 11, id);
        out.extend_from_slice(&(s.len() as i32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn i64_field(out: &mut Vec<u8>, id: i16, v: i64) {
        field(out, 10, id);
        out.extend_from_slice(&v.to_be_bytes());
    }
    let mut out = Vec::new();
    field(&mut out, 12, 1); // process
    string(&mut out, 1, "refused");
    out.push(0);
    field(&mut out, 15, 2); // spans
    out.push(12);
    out.extend_from_slice(&1i32.to_be_bytes());
    i64_field(&mut out, 1, id); // traceIdLow
    i64_field(&mut out, 2, 0); // traceIdHigh
    i64_field(&mut out, 3, id); // spanId
    i64_field(&mut out, 4, 0); // parentSpanId
    string(&mut out, 5, &"x".repeat(name_len));
    field(&mut out, 8, 7); // flags
    out.extend_from_slice(&1i32.to_be_bytes());
    i64_field(&mut out, 8, (crate::spans::now_nanos() / 1000) as i64);
    i64_field(&mut out, 9, 5);
    out.push(0); // end of span
    out.push(0); // end of batch
    out
}

async fn post(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Option<String>, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_and_jaeger_refuse_with_413_429_and_503() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &["--max-request-bytes", "4000", "--max-buffer-bytes", "1"],
    )
    .await;
    let zipkin = format!("http://{}/api/v2/spans", server.zipkin);
    let jaeger = format!("http://{}/api/traces", server.jaeger_http);
    let thrift = "application/x-thrift";

    // Too large.
    let (status, _, body) = post(&zipkin, "application/json", zipkin_body(1, 5000)).await;
    assert_eq!(status, 413, "{body}");
    let (status, _, body) = post(&jaeger, thrift, jaeger_body(1, 5000)).await;
    assert_eq!(status, 413, "{body}");

    // The first batch fills the one-byte buffer; then both push back.
    let (status, _, body) = post(&zipkin, "application/json", zipkin_body(2, 3)).await;
    assert_eq!(status, 202, "{body}");
    let (status, retry, body) = post(&zipkin, "application/json", zipkin_body(3, 3)).await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")), "{body}");
    let (status, retry, body) = post(&jaeger, thrift, jaeger_body(4, 3)).await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")), "{body}");
    let rows = server
        .sql("SELECT count(*) AS n FROM spans WHERE service_name = 'refused'")
        .await;
    assert_eq!(rows[0]["n"], 1);

    // The WAL cannot write (a full disk): 503 on both.
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--fault-points", "wal.write=enospc"]).await;
    let zipkin = format!("http://{}/api/v2/spans", server.zipkin);
    let jaeger = format!("http://{}/api/traces", server.jaeger_http);
    let (status, retry, body) = post(&zipkin, "application/json", zipkin_body(5, 3)).await;
    assert_eq!((status, retry.as_deref()), (503, Some("1")), "{body}");
    let (status, retry, body) = post(&jaeger, thrift, jaeger_body(6, 3)).await;
    assert_eq!((status, retry.as_deref()), (503, Some("1")), "{body}");
    let rows = server.sql("SELECT count(*) AS n FROM spans").await;
    assert_eq!(rows[0]["n"], 0);
}
