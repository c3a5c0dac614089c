//! The HTTP APIs' error envelopes: the same [`ApiError`] (status from its
//! code) in the body each API's clients expect.
//!
//! | envelope | body | used by |
//! | --- | --- | --- |
//! | [`Json`] | `{"error": "..."}` | `/api/v1` |
//! | [`Text`] | the message as `text/plain` | Zipkin, Tempo |
//! | [`JaegerV1`] | `{"data": null, ..., "errors": [{"code", "msg"}]}` | Jaeger `/api` |
//! | [`JaegerV3`] | `{"error": {"httpCode", "message"}}` | Jaeger `/api/v3` |
//!
//! Overloaded answers carry `Retry-After`.

use std::marker::PhantomData;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracelake_protocols::params::ParamError;

use crate::engine::QueryError;
use crate::error::ApiError;
use crate::search::SearchError;

/// How one API spells an error.
pub trait Envelope {
    fn body(status: StatusCode, message: &str) -> Response;
}

/// `{"error": "..."}`.
#[derive(Debug)]
pub struct Json;

impl Envelope for Json {
    fn body(status: StatusCode, message: &str) -> Response {
        (status, axum::Json(json!({ "error": message }))).into_response()
    }
}

/// The message as plain text.
#[derive(Debug)]
pub struct Text;

impl Envelope for Text {
    fn body(status: StatusCode, message: &str) -> Response {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            message.to_string(),
        )
            .into_response()
    }
}

/// Jaeger query v1's structured response with one error.
#[derive(Debug)]
pub struct JaegerV1;

impl Envelope for JaegerV1 {
    fn body(status: StatusCode, message: &str) -> Response {
        let body = json!({ "data": null, "total": 0, "limit": 0, "offset": 0,
                           "errors": [{ "code": status.as_u16(), "msg": message }] });
        (status, axum::Json(body)).into_response()
    }
}

/// Jaeger api_v3's gRPC-gateway error.
#[derive(Debug)]
pub struct JaegerV3;

impl Envelope for JaegerV3 {
    fn body(status: StatusCode, message: &str) -> Response {
        let body = json!({ "error": { "httpCode": status.as_u16(), "message": message } });
        (status, axum::Json(body)).into_response()
    }
}

/// An [`ApiError`] answered in envelope `E`.
#[derive(Debug)]
pub struct HttpError<E> {
    pub error: ApiError,
    envelope: PhantomData<E>,
}

impl<E> HttpError<E> {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::bad_request(message).into()
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::not_found(message).into()
    }
}

impl<E: Envelope> IntoResponse for HttpError<E> {
    fn into_response(self) -> Response {
        let mut response = E::body(self.error.code.http_status(), &self.error.message);
        if self.error.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl<E> From<ApiError> for HttpError<E> {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            envelope: PhantomData,
        }
    }
}

impl<E> From<QueryError> for HttpError<E> {
    fn from(e: QueryError) -> Self {
        ApiError::from(e).into()
    }
}

impl<E> From<ParamError> for HttpError<E> {
    fn from(e: ParamError) -> Self {
        ApiError::from(e).into()
    }
}

impl<E> From<SearchError> for HttpError<E> {
    fn from(e: SearchError) -> Self {
        ApiError::from(e).into()
    }
}

/// The executor's rendering of a query error in envelope `E` (for
/// [`crate::executor::on_executor`]).
pub fn render<E: Envelope>(e: QueryError) -> Response {
    HttpError::<E>::from(e).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> (u16, Option<String>, String) {
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, retry, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn every_envelope_carries_the_same_error() {
        let e = || QueryError::Overloaded("4 queries are running".into());
        let (s, retry, b) = body(render::<Json>(e())).await;
        assert_eq!((s, retry.as_deref()), (429, Some("1")));
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert!(v["error"].as_str().unwrap().contains("4 queries"), "{b}");
        let (s, _, b) = body(render::<Text>(e())).await;
        assert_eq!(s, 429);
        assert!(b.starts_with("too many queries"), "{b}");
        let (_, _, b) = body(render::<JaegerV1>(e())).await;
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["errors"][0]["code"], 429);
        assert_eq!(v["data"], serde_json::Value::Null);
        let (_, _, b) = body(render::<JaegerV3>(e())).await;
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["error"]["httpCode"], 429);
        let (s, retry, _) = body(HttpError::<Json>::not_found("no").into_response()).await;
        assert_eq!((s, retry), (404, None));
    }
}
