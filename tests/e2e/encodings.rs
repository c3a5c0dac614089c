//! Every compression the receivers promise, with the encoders real clients
//! use: gzip, deflate (zlib) and zstd bodies on OTLP/HTTP and Zipkin, zstd
//! and gzip over OTLP/gRPC; a body that is not what its header says is a
//! 400 naming the encoding.

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use tonic::codec::CompressionEncoding;

use crate::server::TestServer;
use crate::spans::{request, span};

fn compress(encoding: &str, body: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "zstd" => zstd::encode_all(body, 3).unwrap(),
        other => panic!("{other}"),
    }
}

async fn count(server: &TestServer, service: &str) -> u64 {
    let rows = server
        .sql(&format!(
            "SELECT count(*) AS n FROM spans WHERE service_name = '{service}'"
        ))
        .await;
    rows[0]["n"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_arrive_on_every_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    for (i, encoding) in ["gzip", "deflate", "zstd"].into_iter().enumerate() {
        let i = i as u64;
        // OTLP/HTTP protobuf.
        let body = request("enc-otlp", vec![span(0xe0 + u128::from(i), 1)]).encode_to_vec();
        let r = client
            .post(server.otlp_url())
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", encoding)
            .body(compress(encoding, &body))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "otlp {encoding}: {}",
            r.text().await.unwrap()
        );
        // Zipkin v2 JSON.
        let now_us = crate::spans::now_nanos() / 1000;
        let zipkin = format!(
            r#"[{{"traceId":"00000000000000{n:02x}","id":"00000000000000{n:02x}","name":"get","timestamp":{now_us},"duration":5,"localEndpoint":{{"serviceName":"enc-zipkin"}}}}]"#,
            n = i + 1
        );
        let r = client
            .post(format!("http://{}/api/v2/spans", server.zipkin))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(compress(encoding, zipkin.as_bytes()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            202,
            "zipkin {encoding}: {}",
            r.text().await.unwrap()
        );
    }
    assert_eq!(count(&server, "enc-otlp").await, 3);
    assert_eq!(count(&server, "enc-zipkin").await, 3);

    // OTLP/gRPC with the compressions tonic's exporters offer.
    for (i, encoding) in [CompressionEncoding::Zstd, CompressionEncoding::Gzip]
        .into_iter()
        .enumerate()
    {
        let mut grpc = TraceServiceClient::connect(format!("http://{}", server.grpc))
            .await
            .unwrap()
            .send_compressed(encoding)
            .accept_compressed(encoding);
        grpc.export(request("enc-grpc", vec![span(0xf0 + i as u128, 1)]))
            .await
            .unwrap();
    }
    assert_eq!(count(&server, "enc-grpc").await, 2);

    // A body that is not what its header says.
    let r = client
        .post(server.otlp_url())
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "zstd")
        .body(b"plain bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("zstd"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refuses_a_request_that_is_not_otlp_with_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let mut grpc = TraceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    // A message that does not decode at all is the client's error.
    let mut raw = tonic::client::Grpc::new(
        tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    raw.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let err = raw
        .unary::<_, ExportResponseBytes, _>(
            tonic::Request::new(RawBytes(vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])),
            path,
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    // The connection and the server are fine afterwards.
    grpc.export(request("after-bad", vec![span(0xab, 1)]))
        .await
        .unwrap();
}

/// Bytes sent as they are, for a message no generated client would send.
struct RawBytes(Vec<u8>);
#[derive(Debug, Default)]
struct ExportResponseBytes;

#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = RawBytes;
    type Decode = ExportResponseBytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = RawBytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: RawBytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ExportResponseBytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ExportResponseBytes>, tonic::Status> {
        use bytes::Buf as _;
        src.advance(src.remaining());
        Ok(Some(ExportResponseBytes))
    }
}
