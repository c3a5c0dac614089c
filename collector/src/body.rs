//! Request bodies of the HTTP receivers: read under a size limit, then
//! decompressed (gzip, deflate, zstd) under the same limit, so a small
//! compressed body cannot expand without bound.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Over the limit, compressed or not: 413.
    TooLarge(String),
    /// Unknown `Content-Encoding`: 415.
    UnsupportedEncoding(String),
    /// Truncated body or corrupt compressed data: 400.
    Invalid {
        reason: &'static str,
        message: String,
    },
}

impl BodyError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// Metric label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::Invalid { reason, .. } => reason,
        }
    }

    pub(crate) fn message(&self) -> &str {
        match self {
            Self::TooLarge(m) | Self::UnsupportedEncoding(m) => m,
            Self::Invalid { message, .. } => message,
        }
    }
}

/// Reads `body` (at most `limit` bytes) and undoes its `Content-Encoding`
/// (at most `limit` bytes after decompression).
pub(crate) async fn read(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            BodyError::TooLarge(format!("request body exceeds the limit of {limit} bytes"))
        } else {
            BodyError::Invalid {
                reason: "read_error",
                message: format!("cannot read request body: {e}"),
            }
        }
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("invalid").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some(_) => tokio::task::spawn_blocking(move || decompress(encoding.as_deref(), raw, limit))
            .await
            .map_err(|e| BodyError::Invalid {
                reason: "internal",
                message: format!("decompression failed: {e}"),
            })?,
    }
}

fn decompress(encoding: Option<&str>, raw: Bytes, limit: usize) -> Result<Bytes, BodyError> {
    let bad = |message: String| BodyError::Invalid {
        reason: "bad_compression",
        message,
    };
    let reader: Box<dyn Read + '_> = match encoding {
        None | Some("") | Some("identity") => return Ok(raw),
        Some("gzip") | Some("x-gzip") => Box::new(flate2::read::GzDecoder::new(&raw[..])),
        Some("deflate") => Box::new(flate2::read::ZlibDecoder::new(&raw[..])),
        Some("zstd") => Box::new(
            zstd::stream::read::Decoder::new(&raw[..])
                .map_err(|e| bad(format!("invalid zstd body: {e}")))?,
        ),
        Some(other) => {
            return Err(BodyError::UnsupportedEncoding(format!(
                "unsupported content encoding {other:?}: use gzip, zstd or deflate"
            )));
        }
    };
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    // Read one byte past the limit to tell "exactly at" from "over".
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            bad(format!(
                "body is not valid {} data: {e}",
                encoding.unwrap_or_default()
            ))
        })?;
    if out.len() > limit {
        return Err(BodyError::TooLarge(format!(
            "decompressed request body exceeds the limit of {limit} bytes"
        )));
    }
    Ok(out.into())
}
