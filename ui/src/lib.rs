//! The web UI: plain HTML, CSS and JavaScript modules, embedded in the binary
//! (no build step, nothing to install) and served on the query port.
//!
//! Every view is a URL (`/search?...`, `/trace/{id}`, `/services`, `/map`,
//! `/sql`), all answered with the same page; the page reads the URL and
//! talks to the HTTP API (`/api/v1/...`) like any other client.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The embedded files: name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    ),
    (
        "search.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/search.js"),
    ),
    (
        "trace.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/trace.js"),
    ),
    (
        "services.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/services.js"),
    ),
    (
        "map.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/map.js"),
    ),
    (
        "compare.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/compare.js"),
    ),
    (
        "sql.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/sql.js"),
    ),
];

const INDEX: &str = include_str!("../static/index.html");

/// Routes of the UI: the views and `/ui/{file}`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/search", get(index))
        .route("/trace/{id}", get(index))
        .route("/services", get(index))
        .route("/map", get(index))
        .route("/sql", get(index))
        .route("/compare", get(index))
        .route("/ui/{file}", get(asset))
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no file {file:?}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `/ui/...` file the page or a module refers to is embedded (a
    /// missing one breaks every view).
    #[test]
    fn every_referenced_file_is_embedded() {
        let sources = std::iter::once(INDEX).chain(FILES.iter().map(|(_, _, body)| *body));
        let mut referenced = 0;
        for source in sources {
            for part in source.split("\"/ui/").skip(1) {
                let name = &part[..part.find('"').expect("a closing quote")];
                assert!(
                    FILES.iter().any(|(file, _, _)| *file == name),
                    "/ui/{name} is referenced but not embedded"
                );
                referenced += 1;
            }
        }
        assert!(referenced >= 8, "{referenced}");
    }
}
