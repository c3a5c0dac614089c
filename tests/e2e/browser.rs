//! The web UI in a real browser: headless Chromium driven over WebDriver
//! (chromedriver), against the real server with ingested traces. Screenshots
//! of each view are written to `<target>/tmp/ui-screenshots/`.
//!
//! Outside CI the tests are skipped when `chromium` or `chromedriver` is
//! missing (Debian packages of those names; `.ci/run` installs them).
//!
//! A browser is closed when its test ends, passed or failed: dropping
//! [`Browser`] deletes the WebDriver session, which closes Chromium, then
//! kills chromedriver's process group and whatever else carries its marker
//! (see `procs`).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};

use crate::procs;
use crate::server::TestServer;
use crate::spans::{kv, now_nanos, request};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session on a headless Chromium.
struct Browser {
    client: reqwest::Client,
    /// The session's URL once there is one.
    base: String,
    /// chromedriver's address and the session's id, to delete it on drop.
    driver_addr: SocketAddr,
    session: Option<String>,
    /// chromedriver, in a process group with the Chromium it starts.
    driver: procs::Guard,
    _profile: tempfile::TempDir,
}

/// The screenshot folder, emptied once per test run so that pictures of an
/// earlier run never stand in for a browser test that did not run.
fn screenshots() -> PathBuf {
    static CLEARED: std::sync::Once = std::sync::Once::new();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    CLEARED.call_once(|| {
        let _ = std::fs::remove_dir_all(&dir);
    });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    async fn start() -> Option<Self> {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let driver_ok = Command::new("chromedriver")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let Some(chromium) = chromium.filter(|_| driver_ok) else {
            crate::skip::skip(
                "chromium or chromedriver is not installed (Debian packages chromium, chromium-driver)",
            );
            return None;
        };
        let driver_addr = crate::server::free_port();
        let driver = procs::Guard::spawn(
            Command::new("chromedriver")
                .arg(format!("--port={}", driver_addr.port()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "chromedriver",
        )
        .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Self {
            client: reqwest::Client::new(),
            base: format!("http://{driver_addr}"),
            driver_addr,
            session: None,
            driver,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser
            .client
            .get(format!("{}/status", browser.base))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1500,1000",
                format!("--user-data-dir={}", browser._profile.path().display()),
            ]}
        }}});
        let r: Value = browser
            .client
            .post(format!("{}/session", browser.base))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        browser.base = format!("{}/session/{session}", browser.base);
        browser.session = Some(session);
        Some(browser)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let v: Value = r.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Waits up to 20 s for an element matching `css`; returns its id.
    async fn wait(&self, css: &str) -> String {
        self.wait_for(css, Duration::from_secs(20)).await
    }

    async fn wait_for(&self, css: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let v = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Some(id) = v[ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no element {css:?} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        let id = self.wait(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into the element matching `css`.
    async fn type_into(&self, css: &str, text: &str) {
        let id = self.wait(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Waits up to 20 s until `script` returns true.
    async fn until(&self, script: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.exec(script).await != Value::Bool(true) {
            assert!(Instant::now() < deadline, "{what}: not within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        let id = self.wait(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn exec(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn count(&self, css: &str) -> u64 {
        self.exec(&format!("return document.querySelectorAll({css:?}).length"))
            .await
            .as_u64()
            .unwrap_or(0)
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        let path = screenshots().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(session) = self.session.take()
            && let Err(e) = delete_session(self.driver_addr, &session)
        {
            eprintln!("could not delete WebDriver session {session} (killing the browser): {e}");
        }
        // What is left: chromedriver, and Chromium if the session was not
        // deleted (or is still starting).
        self.driver.kill();
    }
}

/// `DELETE /session/{id}`: chromedriver closes Chromium, then answers.
/// Blocking, with timeouts, for `Drop` (also while a panic unwinds, inside
/// or outside the runtime). chromedriver keeps the connection open after
/// the answer, so this reads the status line and headers only.
fn delete_session(driver: SocketAddr, session: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&driver, Duration::from_secs(2))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "DELETE /session/{session} HTTP/1.1\r\nHost: {driver}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    let mut buf = [0; 1024];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&response);
    let status = head.lines().next().unwrap_or_default();
    if status.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("answer {status:?}")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_and_read_a_trace_in_the_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]).await;
    for r in crate::analytics::workload(40) {
        server.export(&r).await;
    }
    let ui = format!("http://{}", server.http);

    // Search: drop-downs filled from the API, results as a list and a plot.
    browser
        .goto(&format!(
            "{ui}/search?service=frontend&operation=GET%20/checkout&lookback=1h&limit=50"
        ))
        .await;
    browser.wait("#results-table tbody tr").await;
    assert_eq!(browser.count("#results-table tbody tr").await, 20);
    assert_eq!(browser.count("#scatter circle").await, 20);
    let options = browser
        .exec("return [...document.querySelectorAll('#service option')].map(o => o.value)")
        .await;
    assert_eq!(options, json!(["", "cart", "frontend", "worker"]));
    browser.screenshot("search").await;

    // Empty and error states are explained.
    browser
        .goto(&format!(
            "{ui}/search?service=frontend&minDuration=1h&lookback=1h"
        ))
        .await;
    assert!(
        browser
            .text("#no-results")
            .await
            .contains("No traces match")
    );
    browser
        .goto(&format!("{ui}/search?minDuration=fast&lookback=1h"))
        .await;
    let error = browser.text("#results .error-box").await;
    assert!(
        error.contains("400") && error.contains("not a duration"),
        "{error}"
    );
    browser
        .goto(&format!(
            "{ui}/search?service=frontend&operation=GET%20/checkout&lookback=1h&limit=50"
        ))
        .await;
    browser.wait("#results-table tbody tr").await;

    // Open the first trace.
    browser.click("#results-table tbody tr a").await;
    browser.wait("#waterfall .row").await;
    assert!(browser.text("h1").await.contains("frontend: GET /checkout"));
    assert_eq!(browser.count("#waterfall .row").await, 6);
    assert!(
        browser.count("#waterfall .row.on-critical-path").await >= 4,
        "critical path highlighted"
    );
    assert!(browser.count("#waterfall .cp").await >= 4);
    assert!(browser.text("#breakdown").await.contains("cart"));
    browser.screenshot("trace").await;

    // Collapse the call to cart (its subtree hides), expand again.
    browser
        .click("#waterfall .row[data-index='1'] .toggle")
        .await;
    assert_eq!(browser.count("#waterfall .row").await, 4);
    browser
        .click("#waterfall .row[data-index='1'] .toggle")
        .await;
    assert_eq!(browser.count("#waterfall .row").await, 6);

    // Select the database span and read its attribute.
    let db = browser.exec("return [...document.querySelectorAll('#waterfall .row')].findIndex(r => r.textContent.includes('SELECT carts'))").await;
    let index = db.as_i64().unwrap();
    assert!(index >= 0);
    browser
        .click(&format!("#waterfall .row:nth-child({})", index + 1))
        .await;
    let details = browser.text("#span-details").await;
    assert!(
        details.contains("db.system") && details.contains("postgresql"),
        "{details}"
    );
    let url = browser
        .exec("return location.pathname + location.search")
        .await;
    assert!(
        url.as_str().unwrap().contains("?span="),
        "the selection is in the URL: {url}"
    );

    // Search within the trace; open by id from the header; a missing trace.
    browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{}/value", browser.wait("#trace-search").await),
            Some(json!({"text": "postgres"})),
        )
        .await;
    assert_eq!(browser.text("#trace-search-count").await, "1 matches");
    browser
        .goto(&format!("{ui}/trace/0000000000000000000000000000beef"))
        .await;
    assert!(browser.text("#trace-not-found").await.contains("not found"));
    browser.screenshot("trace-not-found").await;
}

/// The UI reads traces in the columnar encoding (`?layout=columns`): its
/// decoder (`Spans` in trace.js), run in the browser, gives back every span
/// of the span-list answer field for field, and the same header. The trace
/// has every kind of value: typed attributes (int, double, bool, bytes,
/// array, kvlist), events (one at time 0, past what a JavaScript number
/// holds as an offset), links, dropped counts, two resources and scopes, an
/// orphan, a clock-skew shift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_columnar_trace_decodes_to_the_span_list() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    let Some(browser) = Browser::start().await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]).await;
    let trace = 0x3000_0000_0000_0000_0000_0000_0000_0003u128;
    let start = now_nanos() - 60_000_000_000;
    let typed = |key: &str, value: Any| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    };
    let mk = |id: u64, parent: u64, offset: u64, duration: u64, kind: i32| Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: crate::spans::parent_id(parent),
        name: format!("op \"{id}\" ✓"),
        kind,
        start_time_unix_nano: start + offset,
        end_time_unix_nano: start + offset + duration,
        ..Default::default()
    };
    let mut root = mk(1, 0, 0, 10_000_000, 2);
    root.trace_state = "congo=t61rcWkgMzE".into();
    root.flags = 0x301;
    root.attributes = vec![
        kv("http.route", "/items/{id}"),
        typed("http.response.status_code", Any::IntValue(503)),
        typed("ratio", Any::DoubleValue(0.25)),
        typed("big", Any::IntValue(9_007_199_254_740_993)),
        typed("cached", Any::BoolValue(false)),
        typed("nan", Any::DoubleValue(f64::NAN)),
        typed("inf", Any::DoubleValue(f64::NEG_INFINITY)),
        KeyValue {
            key: "no value".into(),
            value: None,
            key_strindex: 0,
        },
        kv("__proto__", "not a prototype"),
        typed("blob", Any::BytesValue(vec![0, 1, 254, 255])),
        typed(
            "tags",
            Any::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(Any::StringValue("a".into())),
                    },
                    AnyValue {
                        value: Some(Any::IntValue(2)),
                    },
                ],
            }),
        ),
        typed(
            "nested",
            Any::KvlistValue(KeyValueList {
                values: vec![kv("inner", "x")],
            }),
        ),
    ];
    root.dropped_attributes_count = 3;
    root.status = Some(Status {
        message: "upstream timed out".into(),
        code: 2,
    });
    root.events = vec![
        Event {
            time_unix_nano: start + 1_000,
            name: "retry".into(),
            attributes: vec![typed("attempt", Any::IntValue(2))],
            dropped_attributes_count: 1,
        },
        Event {
            time_unix_nano: 0,
            name: "at the epoch".into(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
        },
    ];
    root.dropped_events_count = 4;
    root.links = vec![Link {
        trace_id: [7u8; 16].to_vec(),
        span_id: [8u8; 8].to_vec(),
        trace_state: "k=v".into(),
        attributes: vec![kv("link.kind", "follows")],
        dropped_attributes_count: 2,
        flags: 0x100,
    }];
    root.dropped_links_count = 5;
    let client = mk(2, 1, 1_000_000, 5_000_000, 3);
    // On another service, starting before its caller: shifted.
    let server_span = mk(3, 2, 0, 2_000_000, 2);
    let orphan = mk(4, 99, 3_000_000, 1_000_000, 1);
    // Zipkin's shared span: a CLIENT and a SERVER span with one id, the
    // SERVER's stored parent being the CLIENT's.
    let shared_client = mk(5, 1, 6_000_000, 2_000_000, 3);
    let shared_server = mk(5, 1, 6_100_000, 1_000_000, 2);
    // A shared span at the root (neither has a parent), and a span longer
    // than a JavaScript number holds in nanoseconds.
    let root_client = mk(6, 0, 9_000_000, 1_000_000, 3);
    let root_server = mk(6, 0, 9_100_000, 500_000, 2);
    let long = mk(7, 1, 7_000_000, (1 << 53) + 1, 1);
    let resource = |service: &str| Resource {
        attributes: vec![
            kv("service.name", service),
            kv("k8s.namespace.name", "shop"),
            typed("process.pid", Any::IntValue(4242)),
        ],
        dropped_attributes_count: 1,
        entity_refs: Vec::new(),
    };
    let scope = |name: &str| InstrumentationScope {
        name: name.into(),
        version: "1.2.3".into(),
        attributes: vec![kv("scope.attr", "s")],
        dropped_attributes_count: 6,
    };
    let mut request = ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(resource("frontend")),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope("tomcat")),
                    spans: vec![root, client, orphan, shared_client, root_client, long],
                    schema_url: "https://opentelemetry.io/schemas/1.4.0".into(),
                }],
                schema_url: String::new(),
            },
            ResourceSpans {
                resource: Some(resource("cart")),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope("grpc")),
                    spans: vec![server_span, shared_server, root_server],
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            },
        ],
    };
    // Two requests: the trace is read from two batches.
    let second = request.resource_spans.split_off(1);
    server.export(&request).await;
    server
        .export(&ExportTraceServiceRequest {
            resource_spans: second,
        })
        .await;
    browser
        .goto(&format!("http://{}/trace/{trace:032x}", server.http))
        .await;
    browser.wait("#waterfall .row").await;
    let decoded = browser
        .call(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({
                "script": format!(
                    "const done = arguments[arguments.length - 1]; \
                     const url = '/api/v1/traces/{trace:032x}'; \
                     Promise.all([import('/ui/trace.js'), fetch(url + '?layout=columns').then((r) => r.json()), \
                                  fetch(url).then((r) => r.json())]) \
                       .then(([m, columns, list]) => {{ \
                         const spans = new m.Spans(columns); \
                         const decoded = Array.from({{ length: spans.length }}, (_, i) => spans.span(i)); \
                         const proto = (all) => Object.getOwnPropertyDescriptor( \
                           all.find((s) => 'blob' in s.attributes).attributes, '__proto__')?.value; \
                         done({{ spans: decoded, columns, list, \
                                 proto: [proto(decoded), proto(list.spans)] }}); }}) \
                       .catch((e) => done({{ error: String(e) }}));"
                ),
                "args": [],
            })),
        )
        .await;
    assert!(decoded.get("error").is_none(), "{decoded}");
    let list = decoded["list"]["spans"].as_array().unwrap();
    let spans = decoded["spans"].as_array().unwrap();
    assert_eq!(list.len(), 9);
    assert_eq!(spans.len(), list.len());
    for (decoded, listed) in spans.iter().zip(list) {
        let mut listed = listed.clone();
        let children = listed.as_object_mut().unwrap().remove("children").unwrap();
        listed["childCount"] = json!(children.as_array().unwrap().len());
        assert_eq!(decoded, &listed);
    }
    // The case each part covers is there.
    assert!(list.iter().any(|s| s["orphan"] == json!(true)));
    assert_eq!(
        list.iter()
            .filter(|s| s["spanId"] == json!(format!("{:016x}", 5)))
            .count(),
        2
    );
    assert!(list.iter().any(|s| s["clockSkewNs"] != json!(0)));
    assert!(
        list.iter()
            .any(|s| s["events"][1]["timeUnixNano"] == json!("0"))
    );
    let root = list
        .iter()
        .find(|s| s["attributes"]["blob"].is_string())
        .unwrap();
    assert_eq!(root["attributes"]["blob"], json!("AAH+/w=="));
    // (WebDriver's answer leaves an own `__proto__` out: compared in the
    // page.)
    assert_eq!(
        decoded["proto"],
        json!(["not a prototype", "not a prototype"])
    );
    assert_eq!(root["attributes"]["nan"], json!("NaN"));
    assert!(
        list.iter()
            .any(|s| s["spanId"] == json!(format!("{:016x}", 6)) && s["parentSpanId"].is_null())
    );
    let long = list
        .iter()
        .find(|s| s["spanId"] == json!(format!("{:016x}", 7)))
        .unwrap();
    let ns = |v: &Value| v.as_str().unwrap().parse::<u64>().unwrap();
    assert_eq!(
        ns(&long["endTimeUnixNano"]) - ns(&long["startTimeUnixNano"]),
        (1 << 53) + 1
    );
    // The header is the span-list answer's.
    let mut header = decoded["columns"].as_object().unwrap().clone();
    for key in ["layout", "columns", "strings", "resources", "scopes"] {
        assert!(header.remove(key).is_some(), "{key}");
    }
    let mut list_header = decoded["list"].as_object().unwrap().clone();
    list_header.remove("spans");
    assert_eq!(header, list_header);
    // Two resources and two scopes, each listed once.
    assert_eq!(decoded["columns"]["resources"].as_array().unwrap().len(), 2);
    assert_eq!(decoded["columns"]["scopes"].as_array().unwrap().len(), 2);
    // A layout the server does not know is refused by name.
    let r = reqwest::get(format!(
        "http://{}/api/v1/traces/{trace:032x}?layout=arrow",
        server.http
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"],
        json!("invalid layout \"arrow\": expected spans or columns")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_span_trace_renders_only_what_is_visible() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]).await;
    // 10,000 spans: a root, 99 children, 100 grandchildren each.
    let trace = 0x1000_0000_0000_0000_0000_0000_0000_0001u128;
    let start = now_nanos() - 60_000_000_000;
    let mut spans = Vec::with_capacity(10_000);
    let mk = |id: u64, parent: u64, name: String, offset: u64, duration: u64| Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: crate::spans::parent_id(parent),
        name,
        kind: 1,
        start_time_unix_nano: start + offset,
        end_time_unix_nano: start + offset + duration,
        attributes: vec![kv("i", &id.to_string())],
        ..Default::default()
    };
    spans.push(mk(1, 0, "root".into(), 0, 10_000_000_000));
    for c in 0..99u64 {
        let cid = 2 + c * 101;
        spans.push(mk(
            cid,
            1,
            format!("batch {c}"),
            c * 100_000_000,
            100_000_000,
        ));
        for g in 1..=100u64 {
            spans.push(mk(
                cid + g,
                cid,
                format!("item {c}.{g}"),
                c * 100_000_000 + g * 1_000_000,
                900_000,
            ));
        }
    }
    assert_eq!(spans.len(), 10_000);
    for chunk in spans.chunks(2_000) {
        server.export(&request("bulk", chunk.to_vec())).await;
    }
    browser
        .goto(&format!("http://{}/trace/{trace:032x}", server.http))
        .await;
    browser.wait("#waterfall .row").await;
    let render_ms = browser
        .exec("return document.body.dataset.traceRenderMs")
        .await;
    eprintln!(
        "10,000-span trace: fetched and rendered in {} ms (headless Chromium, debug server)",
        render_ms.as_str().unwrap_or("?")
    );
    let rows = browser.count("#waterfall .row").await;
    assert!(
        rows > 10 && rows < 200,
        "only the visible rows are in the DOM: {rows}"
    );
    // Scroll to the end: the last span is drawn.
    browser.exec("const w = document.getElementById('waterfall'); w.scrollTop = w.scrollHeight; w.dispatchEvent(new Event('scroll'))").await;
    let last = browser.exec("return [...document.querySelectorAll('#waterfall .row')].some(r => r.textContent.includes('item 98.100'))").await;
    assert_eq!(last, json!(true));
    browser.screenshot("trace-10000-spans").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_map_and_sql_console_in_the_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]).await;
    for r in crate::analytics::workload(40) {
        server.export(&r).await;
    }
    let ui = format!("http://{}", server.http);

    // Services: RED per service with charts; a service's operations; the
    // cross-trace breakdown of an operation.
    browser
        .goto(&format!(
            "{ui}/services?lookback=1h&service=frontend&operation=GET%20/checkout"
        ))
        .await;
    browser.wait("#red-table tbody tr").await;
    assert_eq!(browser.count("#red-table tbody tr.service").await, 3);
    assert_eq!(
        browser.count("#red-table tbody tr.operation").await,
        2,
        "frontend's server operations"
    );
    assert!(browser.count("#red-table svg.spark polyline").await >= 6);
    let breakdown = browser.text("#cross-breakdown").await;
    assert!(
        breakdown.contains("20 requests in 20 traces") && breakdown.contains("SELECT carts"),
        "{breakdown}"
    );
    browser.screenshot("services").await;

    // Service map: three instrumented services and the database seen as
    // peer.service, with calls on the edges.
    browser.goto(&format!("{ui}/map?lookback=1h")).await;
    browser.wait("#service-map .node").await;
    assert_eq!(browser.count("#service-map .node").await, 4);
    assert_eq!(browser.count("#service-map .edge").await, 3);
    let edge = browser
        .exec("return document.querySelector(\"#service-map .edge-label[data-edge='cart->postgres']\").textContent")
        .await;
    assert!(edge.as_str().unwrap().contains("40 calls"), "{edge}");
    browser.screenshot("service-map").await;

    // SQL console: an example runs with Ctrl+Enter, types shown, CSV link;
    // an error is shown inline.
    browser.goto(&format!("{ui}/sql")).await;
    let editor = browser.wait("#sql-editor").await;
    browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{editor}/clear"),
            Some(json!({})),
        )
        .await;
    browser
        .call(reqwest::Method::POST, &format!("/element/{editor}/value"), Some(json!({"text": "SELECT service_name, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1"})))
        .await;
    // Ctrl+Enter through the WebDriver actions API.
    browser
        .call(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "kb", "actions": [
            {"type": "keyDown", "value": "\u{E009}"}, {"type": "keyDown", "value": "\u{E007}"},
            {"type": "keyUp", "value": "\u{E007}"}, {"type": "keyUp", "value": "\u{E009}"}]}]})),
        )
        .await;
    browser.wait("#sql-results tbody tr").await;
    assert_eq!(browser.count("#sql-results tbody tr").await, 3);
    let header = browser.text("#sql-results thead").await;
    assert!(
        header.contains("Utf8") && header.contains("Int64"),
        "{header}"
    );
    assert_eq!(browser.count("#sql-csv[download]").await, 1);
    browser.screenshot("sql").await;
    browser
        .goto(&format!("{ui}/sql?q=SELECT%20nope%20FROM%20spans"))
        .await;
    let error = browser.text("#sql-output .error-box").await;
    assert!(error.contains("400") && error.contains("nope"), "{error}");
}

/// What the comparison of the two traces of [`two_traces_compared_in_the_browser`] shows.
async fn check_comparison(browser: &Browser) {
    assert_eq!(browser.count("#compare-tree tr.compare-node").await, 7);
    assert_eq!(browser.count("#compare-tree tr.both").await, 4);
    let a_first = browser
        .exec("return new URLSearchParams(location.search).get('a')")
        .await;
    // Which side is A depends on the order of the results (newest
    // first: B, then A).
    let (only_first, only_second) = if a_first.as_str().unwrap().ends_with("b2") {
        (1, 2)
    } else {
        (2, 1)
    };
    assert_eq!(browser.count("#compare-tree tr.only-a").await, only_first);
    assert_eq!(browser.count("#compare-tree tr.only-b").await, only_second);
    let db = browser
        .text("#compare-tree tr[data-path='frontend: GET /checkout > frontend: call cart > cart: GetCart > cart: SELECT carts']")
        .await;
    assert!(db.contains("1 × 20ms") && db.contains("2 × 25ms"), "{db}");
    assert!(db.contains("5ms"), "{db}");
    let root = browser
        .text("#compare-tree tr[data-path='frontend: GET /checkout']")
        .await;
    assert!(root.contains("50ms"), "{root}");
    let payments = browser
        .text("#compare-tree tr[data-path='frontend: GET /checkout > frontend: call payments']")
        .await;
    assert!(payments.contains("only in"), "{payments}");
    assert!(browser.count("#compare-breakdown tbody tr").await >= 6);
    let summary = browser.text("#compare-summary").await;
    assert!(summary.contains("50ms"), "{summary}");
}

/// Trace comparison: two traces ticked in the search results, their span
/// trees merged (spans only in A, only in B, in both with the difference),
/// the breakdown side by side, and the comparison's URL reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_traces_compared_in_the_browser() {
    use crate::analytics::{CLIENT, CONSUMER, PRODUCER, SERVER, export, span};
    let Some(browser) = Browser::start().await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]).await;
    const MS: u64 = 1_000_000;
    let t0 = crate::spans::now_nanos() - 60_000 * MS;
    let (a, b) = (0xa1u128, 0xb2u128);
    let env = ("frontend", "prod");
    // A: checkout with one database call and an order published.
    server
        .export(&export(vec![
            (
                env,
                span(
                    a,
                    1,
                    0,
                    "GET /checkout",
                    SERVER,
                    t0,
                    100 * MS,
                    false,
                    vec![],
                ),
            ),
            (
                env,
                span(
                    a,
                    2,
                    1,
                    "call cart",
                    CLIENT,
                    t0 + MS,
                    40 * MS,
                    false,
                    vec![],
                ),
            ),
            (
                ("cart", "prod"),
                span(
                    a,
                    3,
                    2,
                    "GetCart",
                    SERVER,
                    t0 + 2 * MS,
                    35 * MS,
                    false,
                    vec![],
                ),
            ),
            (
                ("cart", "prod"),
                span(
                    a,
                    4,
                    3,
                    "SELECT carts",
                    CLIENT,
                    t0 + 3 * MS,
                    20 * MS,
                    false,
                    vec![],
                ),
            ),
            (
                env,
                span(
                    a,
                    5,
                    1,
                    "publish order",
                    PRODUCER,
                    t0 + 50 * MS,
                    MS,
                    false,
                    vec![],
                ),
            ),
            (
                ("worker", "prod"),
                span(
                    a,
                    6,
                    5,
                    "process order",
                    CONSUMER,
                    t0 + 55 * MS,
                    10 * MS,
                    false,
                    vec![],
                ),
            ),
        ]))
        .await;
    // B: slower, two database calls, a payment call, no order.
    let t1 = t0 + 1000 * MS;
    server
        .export(&export(vec![
            (
                env,
                span(
                    b,
                    1,
                    0,
                    "GET /checkout",
                    SERVER,
                    t1,
                    150 * MS,
                    false,
                    vec![],
                ),
            ),
            (
                env,
                span(
                    b,
                    2,
                    1,
                    "call cart",
                    CLIENT,
                    t1 + MS,
                    60 * MS,
                    false,
                    vec![],
                ),
            ),
            (
                ("cart", "prod"),
                span(
                    b,
                    3,
                    2,
                    "GetCart",
                    SERVER,
                    t1 + 2 * MS,
                    55 * MS,
                    false,
                    vec![],
                ),
            ),
            (
                ("cart", "prod"),
                span(
                    b,
                    4,
                    3,
                    "SELECT carts",
                    CLIENT,
                    t1 + 3 * MS,
                    20 * MS,
                    false,
                    vec![],
                ),
            ),
            (
                ("cart", "prod"),
                span(
                    b,
                    5,
                    3,
                    "SELECT carts",
                    CLIENT,
                    t1 + 25 * MS,
                    30 * MS,
                    false,
                    vec![],
                ),
            ),
            (
                env,
                span(
                    b,
                    6,
                    1,
                    "call payments",
                    CLIENT,
                    t1 + 70 * MS,
                    30 * MS,
                    false,
                    vec![],
                ),
            ),
        ]))
        .await;
    let ui = format!("http://{}", server.http);
    browser
        .goto(&format!("{ui}/search?service=frontend&lookback=1h"))
        .await;
    browser.wait("#results-table tbody tr").await;
    assert_eq!(browser.count("#results-table tbody tr").await, 2);
    assert_eq!(
        browser
            .exec("return document.querySelector('#compare-picked').disabled")
            .await,
        true
    );
    browser
        .click("#results-table tbody tr:nth-child(1) input.pick")
        .await;
    browser
        .click("#results-table tbody tr:nth-child(2) input.pick")
        .await;
    assert_eq!(
        browser.exec("return location.pathname").await,
        "/search",
        "ticking does not open the trace"
    );
    browser.click("#compare-picked").await;
    browser.wait("#compare-tree tbody tr").await;
    let search = browser.exec("return location.search").await;
    let search = search.as_str().unwrap().to_string();
    assert!(search.contains("a=") && search.contains("b="), "{search}");
    check_comparison(&browser).await;
    browser.screenshot("compare").await;
    // The comparison's URL opens it again.
    browser.goto(&format!("{ui}/compare{search}")).await;
    browser.wait("#compare-tree tbody tr").await;
    check_comparison(&browser).await;
    // Without ids, the form.
    browser.goto(&format!("{ui}/compare")).await;
    browser.wait("#compare-form").await;
    assert!(browser.text("main").await.contains("Give two trace ids"));
}

/// The service map of the benchmark's 34-service topology stays readable:
/// no edge label until asked for, fewer edge crossings than columns in
/// name order, a focused service with its callers and callees (the rest
/// faded, its edges labelled, a panel listing them), filters by calls;
/// and a service with traffic in one time bucket gets a dot in its RED
/// charts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_34_service_map_stays_readable() {
    use tracelake_bench::workload::{Generator, Topology};
    let Some(browser) = Browser::start().await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), &[]).await;
    let now = crate::spans::now_nanos();
    let mut generator = Generator::new(Topology::new(7), 7, now - 40 * 60 * 1_000_000_000)
        .with_trace_interval(40 * 60 * 1_000_000_000 / 400);
    for _ in 0..20 {
        let (request, _) = generator.request(1000);
        server.export(&request).await;
    }
    // One span of a service of its own, now: a single RED bucket.
    server
        .export(&crate::spans::request(
            "lonely",
            vec![crate::spans::span(0x10e1, 1)],
        ))
        .await;
    let ui = format!("http://{}", server.http);
    let (_, deps) = server.get("/api/v1/dependencies?lookback=1h").await;
    let edges = deps["edges"].as_array().unwrap();
    let mut services = std::collections::BTreeSet::new();
    for e in edges {
        services.insert(e["parent"].as_str().unwrap().to_string());
        services.insert(e["child"].as_str().unwrap().to_string());
    }
    assert!(services.len() >= 30, "{} services", services.len());

    browser.goto(&format!("{ui}/map?lookback=1h")).await;
    browser.wait("#service-map .node").await;
    assert_eq!(
        browser.count("#service-map .node").await,
        services.len() as u64
    );
    assert_eq!(
        browser.count("#service-map .edge").await,
        edges.len() as u64
    );
    let labels_shown = "[...document.querySelectorAll('#service-map .edge-label')]\
        .filter((l) => getComputedStyle(l).display !== 'none').length";
    let visible_labels = format!("return {labels_shown}");
    assert_eq!(
        browser.exec(&visible_labels).await,
        0,
        "no label until asked"
    );
    let crossings = browser
        .exec("const m = document.querySelector('#service-map'); return [Number(m.dataset.crossingsBefore), Number(m.dataset.crossings)]")
        .await;
    let (before, after) = (
        crossings[0].as_u64().unwrap(),
        crossings[1].as_u64().unwrap(),
    );
    assert!(before > 0, "{crossings}");
    // The topology is dense (every edge service calls most API services):
    // ordering removes a quarter of the crossings (1,436 -> 1,075 when
    // written); focus and hover labels do the rest.
    assert!(
        after * 100 <= before * 85,
        "barycenter ordering and transposition: {before} -> {after} crossings"
    );
    // Hovering a node shows its edges' labels.
    let node = services
        .iter()
        .find(|s| {
            edges
                .iter()
                .filter(|e| e["parent"] == **s || e["child"] == **s)
                .count()
                >= 3
        })
        .unwrap()
        .clone();
    let node_id = browser
        .wait(&format!("#service-map .node[data-service='{node}']"))
        .await;
    let mut origin = serde_json::Map::new();
    origin.insert(ELEMENT.into(), json!(node_id));
    browser
        .call(
            reqwest::Method::POST,
            "/actions",
            Some(
                json!({"actions": [{"type": "pointer", "id": "mouse", "actions": [
                {"type": "pointerMove", "origin": origin, "x": 0, "y": 0}]}]}),
            ),
        )
        .await;
    let incident = edges
        .iter()
        .filter(|e| e["parent"] == *node || e["child"] == *node)
        .count() as u64;
    browser
        .until(
            &format!("return {labels_shown} === {incident}"),
            "hovered node's labels",
        )
        .await;
    browser.screenshot("map-34-services").await;

    // Focus: the service, its callers and callees; the rest faded.
    browser
        .click(&format!("#service-map .node[data-service='{node}']"))
        .await;
    browser.wait("#map-focus").await;
    assert!(
        browser
            .exec("return location.search")
            .await
            .as_str()
            .unwrap()
            .contains("focus=")
    );
    let near: std::collections::BTreeSet<String> = edges
        .iter()
        .filter_map(|e| {
            if e["parent"] == *node {
                Some(e["child"].as_str().unwrap().to_string())
            } else if e["child"] == *node {
                Some(e["parent"].as_str().unwrap().to_string())
            } else {
                None
            }
        })
        .chain([node.clone()])
        .collect();
    assert_eq!(
        browser.count("#service-map .node:not(.faded)").await,
        near.len() as u64
    );
    assert_eq!(browser.count("#service-map .edge.selected").await, incident);
    assert_eq!(browser.exec(&visible_labels).await, incident);
    let panel = browser.text("#map-focus").await;
    assert!(
        panel.contains("Callers") && panel.contains("Callees"),
        "{panel}"
    );
    browser.screenshot("map-focus").await;

    // Filter: edges under a number of calls go.
    let calls: Vec<u64> = edges
        .iter()
        .map(|e| e["callCount"].as_u64().unwrap())
        .collect();
    let mut sorted = calls.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    browser
        .goto(&format!("{ui}/map?lookback=1h&minCalls={median}"))
        .await;
    browser.wait("#service-map .node").await;
    assert_eq!(
        browser.count("#service-map .edge").await,
        calls.iter().filter(|&&c| c >= median).count() as u64
    );

    // One bucket of traffic: a dot in each RED chart.
    browser.goto(&format!("{ui}/services?lookback=1h")).await;
    browser.wait("#red-table tbody tr.service").await;
    assert_eq!(
        browser
            .count("#red-table tr.service[data-name='lonely'] svg.spark circle")
            .await,
        2
    );
}

/// A 100,000-span trace opens (a measurement: `cargo test --test e2e
/// hundred_thousand -- --ignored --nocapture`; against a release server,
/// `TRACELAKE_SERVER_BIN=target/release/tracelake`). The spans look like
/// real instrumentation's: 20 services, each with its resource and scope,
/// 8 attributes per span, an event on every tenth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn a_hundred_thousand_span_trace_opens() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(data.path(), &[]).await;
    let trace = 0x2000_0000_0000_0000_0000_0000_0000_0002u128;
    for request in large_trace(trace, 100_000) {
        server.export(&request).await;
    }
    let open = async |server: &TestServer, when: &str| {
        let t = Instant::now();
        browser.goto("about:blank").await;
        browser
            .goto(&format!("http://{}/trace/{trace:032x}", server.http))
            .await;
        browser
            .wait_for("#waterfall .row", Duration::from_secs(300))
            .await;
        let page_ready = t.elapsed();
        let timing = browser
            .exec(
                "const e = performance.getEntriesByType('resource').find((e) => e.name.includes('/api/v1/traces/')); \
                 return { server: e.responseStart - e.requestStart, transfer: e.responseEnd - e.responseStart, \
                          bytes: e.encodedBodySize, render: Number(document.body.dataset.traceRenderMs) };",
            )
            .await;
        eprintln!(
            "100,000-span trace, {when}: page ready after {:.2} s; {timing}",
            page_ready.as_secs_f64()
        );
    };
    open(&server, "from the buffer").await;
    // The tab still answers.
    let t = Instant::now();
    let rows = browser.count("#waterfall .row").await;
    eprintln!(
        "a script ran in {} ms; {rows} rows in the DOM",
        t.elapsed().as_millis()
    );
    assert!(rows < 200);
    browser.screenshot("trace-100000-spans").await;
    // Stopped, the server commits the buffer; started again, it reads the
    // trace from Parquet.
    server.sigterm();
    server.wait_exit(Duration::from_secs(120)).await;
    let server = TestServer::start(data.path(), &[]).await;
    open(&server, "from Parquet, first read").await;
    open(&server, "from Parquet, again").await;
}

/// A trace of `n` spans as real instrumentation sends it, in requests of
/// 5,000 spans: 20 services (each with its resource of 9 attributes and a
/// scope), a root, 999 children, their children under them, 8 attributes
/// per span and an event on every tenth.
fn large_trace(
    trace: u128,
    n: usize,
) -> Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    let start = now_nanos() - 60_000_000_000;
    let service = |id: u64| id % 20;
    let mk = |id: u64, parent: u64, offset: u64| Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: crate::spans::parent_id(parent),
        name: format!("GET /api/v{}/items/{{id}}", id % 50),
        kind: 2,
        start_time_unix_nano: start + offset,
        end_time_unix_nano: start + offset + 500_000 + id % 977 * 1_000,
        attributes: vec![
            kv("http.request.method", "GET"),
            kv("http.route", &format!("/api/v{}/items/{{id}}", id % 50)),
            kv("url.path", &format!("/api/v{}/items/{id}", id % 50)),
            kv(
                "http.response.status_code",
                if id.is_multiple_of(97) { "500" } else { "200" },
            ),
            kv(
                "server.address",
                &format!("svc-{}.shop.svc.cluster.local", service(id)),
            ),
            kv(
                "network.peer.address",
                &format!("10.0.{}.{}", id % 7, id % 251),
            ),
            kv("thread.name", &format!("worker-{}", id % 16)),
            kv(
                "user_agent.original",
                "Mozilla/5.0 (X11; Linux x86_64) shop-client/1.4",
            ),
        ],
        events: if id.is_multiple_of(10) {
            vec![Event {
                time_unix_nano: start + offset + 100_000,
                name: "cache miss".into(),
                attributes: vec![kv("cache.key", &format!("item:{id}"))],
                dropped_attributes_count: 0,
            }]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let mut spans = vec![mk(1, 0, 0)];
    for c in 0..999u64 {
        let cid = 2 + c * 101;
        spans.push(mk(cid, 1, c * 1_000_000));
        for g in 1..=100u64 {
            spans.push(mk(cid + g, cid, c * 1_000_000 + g * 1_000));
        }
    }
    spans.truncate(n);
    spans
        .chunks(5_000)
        .map(|chunk| {
            let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); 20];
            for s in chunk {
                let id = u64::from_be_bytes(s.span_id[..].try_into().unwrap());
                by_service[service(id) as usize].push(s.clone());
            }
            ExportTraceServiceRequest {
                resource_spans: by_service
                    .into_iter()
                    .enumerate()
                    .map(|(i, spans)| ResourceSpans {
                        resource: Some(Resource {
                            attributes: vec![
                                kv("service.name", &format!("service-{i}")),
                                kv("service.version", "1.27.3"),
                                kv("service.instance.id", &format!("3f1c9a2e-{i:04}")),
                                kv("host.name", &format!("node-{}", i % 5)),
                                kv("k8s.namespace.name", "shop"),
                                kv("k8s.pod.name", &format!("service-{i}-7d9f8-x2k{i}")),
                                kv("telemetry.sdk.name", "opentelemetry"),
                                kv("telemetry.sdk.language", "java"),
                                kv("telemetry.sdk.version", "1.44.1"),
                            ],
                            ..Default::default()
                        }),
                        scope_spans: vec![ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "io.opentelemetry.tomcat-10.0".into(),
                                version: "2.10.0-alpha".into(),
                                ..Default::default()
                            }),
                            spans,
                            schema_url: String::new(),
                        }],
                        schema_url: String::new(),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// With tokens on: the UI asks for a token once, keeps it in the browser
/// session only (not in the URL), sends it on every call, shows the tenant
/// (and lets a token with several choose), and signs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_signs_in_with_a_token() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        r#"
[[tokens]]
name = "shop-team"
token = "shop-secret"
tenant = "shop"
scopes = ["ingest", "query"]

[[tokens]]
name = "platform"
token = "platform-secret"
tenants = ["web", "shop"]
scopes = ["ingest", "query"]
"#,
    )
    .unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--auth-tokens-file", tokens.to_str().unwrap()],
    )
    .await;
    let client = reqwest::Client::new();
    for (token, service) in [("shop-secret", "shop-svc"), ("platform-secret", "web-svc")] {
        let span = crate::spans::span(0xabc, 1);
        let r = client
            .post(server.otlp_url())
            .bearer_auth(token)
            .header("content-type", "application/x-protobuf")
            .body(prost::Message::encode_to_vec(&request(service, vec![span])))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let ui = format!("http://{}", server.http);
    let services = format!("{ui}/services?lookback=1h");

    // The page loads without a token and asks for one.
    browser.goto(&services).await;
    browser.wait("#sign-in #token-input").await;
    browser.type_into("#token-input", "not-a-token").await;
    browser.click("#sign-in button[type=submit]").await;
    browser
        .until(
            "return document.querySelector('#sign-in-error').textContent === 'Unknown token.'",
            "a wrong token is refused",
        )
        .await;
    browser.type_into("#token-input", "shop-secret").await;
    browser.click("#sign-in button[type=submit]").await;
    browser.wait("#red-table tbody tr.service").await;
    assert_eq!(browser.text("#tenant").await, "shop");
    assert_eq!(browser.count("#red-table tbody tr.service").await, 1);
    assert!(browser.text("#red-table").await.contains("shop-svc"));
    let kept = browser
        .exec("return [location.href, sessionStorage.getItem('tracelake.token'), localStorage.length, document.cookie]")
        .await;
    assert_eq!(
        kept,
        json!([services, "shop-secret", 0, ""]),
        "in the session only, not in the URL"
    );
    browser.screenshot("signed-in").await;

    // A reload keeps the session; signing out forgets the token.
    browser.goto(&services).await;
    browser.wait("#red-table tbody tr.service").await;
    assert_eq!(browser.text("#tenant").await, "shop");
    browser.click("#sign-out").await;
    browser.wait("#sign-in #token-input").await;
    assert_eq!(browser.exec("return sessionStorage.length").await, json!(0));
    browser.goto(&services).await;
    browser.wait("#sign-in #token-input").await;

    // A token with two tenants: its first, then the other from the menu.
    browser.type_into("#token-input", "platform-secret").await;
    browser.click("#sign-in button[type=submit]").await;
    browser.wait("#red-table tbody tr.service").await;
    assert!(browser.text("#red-table").await.contains("web-svc"));
    browser
        .exec("const s = document.querySelector('select#tenant'); s.value = 'shop'; s.dispatchEvent(new Event('change')); return true")
        .await;
    browser
        .until(
            "const t = document.querySelector('#red-table'); return !!t && t.textContent.includes('shop-svc') && !t.textContent.includes('web-svc')",
            "the other tenant's services after choosing it",
        )
        .await;
}
