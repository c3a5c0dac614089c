//! One error vocabulary for every read API: an [`ErrorCode`] says what went
//! wrong and maps once to an HTTP status and a gRPC code; an [`ApiError`]
//! carries the code and the message a client may see. Each API keeps only
//! its envelope (`http::error` for the HTTP APIs, a `tonic::Status` for
//! Flight SQL).
//!
//! Internal failures are logged with an id, and the client gets the id,
//! never the internal text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use datafusion::error::DataFusionError;
use tracelake_protocols::params::ParamError;

use crate::engine::QueryError;
use crate::search::SearchError;

/// What went wrong, as every API tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed, names something unknown, or asks for more
    /// than a limit allows.
    BadRequest,
    NotFound,
    /// The request ran out of its time limit.
    TimedOut,
    /// The request's query needed more memory than its limit.
    MemoryLimit,
    /// Every query slot and the queue were taken: retry later.
    Overloaded,
    /// The client went away; nobody reads the answer.
    Cancelled,
    /// A node the answer needed failed: retry.
    Unavailable,
    /// A failure of ours, logged with an id.
    Internal,
}

impl ErrorCode {
    /// 400, 404, 408, 422, 429, 499 (nginx's "client closed request"), 503,
    /// 500.
    pub fn http_status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::TimedOut => StatusCode::REQUEST_TIMEOUT,
            Self::MemoryLimit => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Self::BadRequest => tonic::Code::InvalidArgument,
            Self::NotFound => tonic::Code::NotFound,
            Self::TimedOut => tonic::Code::DeadlineExceeded,
            Self::MemoryLimit | Self::Overloaded => tonic::Code::ResourceExhausted,
            Self::Cancelled => tonic::Code::Cancelled,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Internal => tonic::Code::Internal,
        }
    }
}

/// An answer that is not a result: what went wrong, and what to tell the
/// client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// An internal failure: logged with a fresh id; the client learns the
    /// id only.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        let id = error_id();
        tracing::error!(error_id = %id, error = %detail, "request failed");
        Self::new(
            ErrorCode::Internal,
            format!("internal error {id}: the server's log has the details"),
        )
    }

    pub fn retry_after(&self) -> bool {
        self.code == ErrorCode::Overloaded
    }
}

/// A short id that tells one logged failure from another.
fn error_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    format!(
        "{:016x}",
        now.rotate_left(17) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let code = match &e {
            QueryError::Invalid(_) | QueryError::TooManyRows(_) => ErrorCode::BadRequest,
            QueryError::Timeout(_) => ErrorCode::TimedOut,
            QueryError::ResourcesExhausted(_) | QueryError::RowsTooLarge(_) => {
                ErrorCode::MemoryLimit
            }
            QueryError::Overloaded(_) => ErrorCode::Overloaded,
            QueryError::Cancelled => ErrorCode::Cancelled,
            QueryError::Unavailable(_) => ErrorCode::Unavailable,
            QueryError::Internal(_) => return Self::internal(&e),
        };
        Self::new(code, e.to_string())
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        Self::bad_request(e.0)
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Param(p) => p.into(),
            SearchError::Query(q) => q.into(),
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        tonic::Status::new(e.code.grpc_code(), e.message)
    }
}

/// The first error of type `T` among `e`'s causes: through the wrappers
/// DataFusion and Arrow put around an external error, and down each
/// external error's `source()` chain (Arrow Flight's error, for one,
/// holds a gRPC status there, boxed).
pub fn find_cause<T: std::error::Error + 'static>(e: &DataFusionError) -> Option<&T> {
    fn external<'a, T: std::error::Error + 'static>(
        inner: &'a (dyn std::error::Error + 'static),
    ) -> Option<&'a T> {
        let mut next = Some(inner);
        while let Some(error) = next {
            if let Some(found) = error.downcast_ref::<T>() {
                return Some(found);
            }
            if let Some(found) = error.downcast_ref::<Box<T>>() {
                return Some(found);
            }
            if let Some(found) = error.downcast_ref::<DataFusionError>().and_then(find_cause) {
                return Some(found);
            }
            next = error.source();
        }
        None
    }
    match e {
        DataFusionError::External(inner) => external(inner.as_ref()),
        DataFusionError::Context(_, inner) => find_cause(inner),
        DataFusionError::Shared(inner) => find_cause(inner),
        DataFusionError::Diagnostic(_, inner) => find_cause(inner),
        DataFusionError::Collection(all) => all.iter().find_map(find_cause),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            arrow::error::ArrowError::ExternalError(inner) => external(inner.as_ref()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_failures_give_the_client_an_id_not_the_detail() {
        let e = ApiError::from(QueryError::Internal("disk /secret/path failed".into()));
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(!e.message.contains("/secret/path"), "{}", e.message);
        assert!(e.message.starts_with("internal error "), "{}", e.message);
        let other = ApiError::from(QueryError::Internal("x".into()));
        assert_ne!(e.message, other.message, "each failure has its own id");
    }

    #[test]
    fn a_cause_is_found_through_the_wrappers_around_it() {
        let status = || tonic::Status::unavailable("tcp connect error");
        let wrapped = [
            DataFusionError::External(Box::new(status())),
            // Arrow Flight's error holds the status boxed, as its source.
            DataFusionError::External(Box::new(arrow_flight::error::FlightError::from(status()))),
            DataFusionError::Context(
                "stage 2".into(),
                Box::new(DataFusionError::Shared(std::sync::Arc::new(
                    DataFusionError::External(Box::new(DataFusionError::External(Box::new(
                        status(),
                    )))),
                ))),
            ),
            DataFusionError::ArrowError(
                Box::new(arrow::error::ArrowError::ExternalError(Box::new(status()))),
                None,
            ),
        ];
        for e in &wrapped {
            let found = find_cause::<tonic::Status>(e).unwrap_or_else(|| panic!("{e:?}"));
            assert_eq!(found.code(), tonic::Code::Unavailable);
        }
        assert!(find_cause::<tonic::Status>(&DataFusionError::Plan("x".into())).is_none());
    }

    #[test]
    fn each_code_has_one_status_and_one_grpc_code() {
        let cases = [
            (
                QueryError::Invalid("x".into()),
                400,
                tonic::Code::InvalidArgument,
            ),
            (
                QueryError::TooManyRows(5),
                400,
                tonic::Code::InvalidArgument,
            ),
            (
                QueryError::Timeout(std::time::Duration::from_secs(1)),
                408,
                tonic::Code::DeadlineExceeded,
            ),
            (
                QueryError::ResourcesExhausted("x".into()),
                422,
                tonic::Code::ResourceExhausted,
            ),
            (
                QueryError::RowsTooLarge("x".into()),
                422,
                tonic::Code::ResourceExhausted,
            ),
            (
                QueryError::Overloaded("x".into()),
                429,
                tonic::Code::ResourceExhausted,
            ),
            (QueryError::Cancelled, 499, tonic::Code::Cancelled),
        ];
        for (e, status, grpc) in cases {
            let text = e.to_string();
            let api = ApiError::from(e);
            assert_eq!(api.code.http_status().as_u16(), status, "{text}");
            assert_eq!(tonic::Status::from(api.clone()).code(), grpc, "{text}");
            assert_eq!(api.message, text, "a client error keeps its message");
        }
    }
}
