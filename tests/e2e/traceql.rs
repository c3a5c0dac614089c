//! TraceQL over the analytics workload, through Tempo's API: metrics
//! (`/tempo/api/metrics/query_range` and `/query`), every function grouped
//! and filtered, compared with the same figure computed here from the raw
//! rows (read with SQL), responses decoded as Grafana decodes them (Tempo's
//! JSON, and protobuf with Tempo's message definitions, written out below
//! from pkg/tempopb/tempo.proto); streaming over gRPC
//! (`tempopb.StreamingQuerier`); and the structural operators and pipeline
//! stages of search, each against a hand-computed result.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message as _;
use serde_json::Value;

use crate::analytics::workload;
use crate::server::TestServer;
use crate::spans::now_nanos;
use crate::tempo::get_raw as get;

/// `tempopb.QueryRangeResponse` and its parts, from Tempo's proto.
#[derive(Clone, PartialEq, prost::Message)]
struct QueryRangeResponse {
    #[prost(message, repeated, tag = "1")]
    series: Vec<TimeSeries>,
    #[prost(message, optional, tag = "2")]
    metrics: Option<SearchMetrics>,
    #[prost(int32, tag = "3")]
    status: i32,
    #[prost(string, tag = "4")]
    message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SearchMetrics {
    #[prost(uint32, tag = "1")]
    inspected_traces: u32,
    #[prost(uint64, tag = "2")]
    inspected_bytes: u64,
    #[prost(uint64, tag = "7")]
    inspected_spans: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<KeyValue>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    exemplars: Vec<Exemplar>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(int64, tag = "2")]
    timestamp_ms: i64,
    #[prost(double, tag = "1")]
    value: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<KeyValue>,
    #[prost(double, tag = "2")]
    value: f64,
    #[prost(int64, tag = "3")]
    timestamp_ms: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct QueryInstantResponse {
    #[prost(message, repeated, tag = "1")]
    series: Vec<InstantSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct InstantSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<KeyValue>,
    #[prost(double, tag = "2")]
    value: f64,
}

/// A label value as text, typed: `s:frontend`, `i:503`, `f:0.5`.
fn label_text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => format!("s:{s}"),
        Some(Any::IntValue(i)) => format!("i:{i}"),
        Some(Any::DoubleValue(f)) => format!("f:{f}"),
        Some(Any::BoolValue(b)) => format!("b:{b}"),
        other => panic!("label value {other:?}"),
    }
}

/// A decoded series: labels `k=v` joined with `,` -> timestamp ms -> value.
type Decoded = BTreeMap<String, BTreeMap<i64, f64>>;

fn labels_key(labels: &[KeyValue]) -> String {
    labels
        .iter()
        .map(|kv| format!("{}={}", kv.key, label_text(kv)))
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_proto(body: &[u8]) -> (Decoded, Vec<(String, Exemplar)>) {
    let r = QueryRangeResponse::decode(body).expect("tempopb.QueryRangeResponse");
    assert_eq!(r.status, 0, "{}", r.message);
    let mut out = Decoded::new();
    let mut exemplars = Vec::new();
    for s in r.series {
        let key = labels_key(&s.labels);
        let samples: BTreeMap<i64, f64> = s
            .samples
            .iter()
            .map(|x| (x.timestamp_ms, x.value))
            .collect();
        assert!(
            s.samples
                .windows(2)
                .all(|w| w[0].timestamp_ms < w[1].timestamp_ms),
            "oldest first"
        );
        exemplars.extend(s.exemplars.into_iter().map(|e| (key.clone(), e)));
        assert!(
            out.insert(key, samples).is_none(),
            "one series per label set"
        );
    }
    (out, exemplars)
}

/// Tempo's JSON: protobuf JSON names, 64-bit integers as strings.
fn decode_json(body: &Value) -> Decoded {
    let mut out = Decoded::new();
    for s in body["series"].as_array().expect("series") {
        let labels: Vec<KeyValue> = s["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let v = &l["value"];
                let value = if let Some(s) = v["stringValue"].as_str() {
                    Any::StringValue(s.into())
                } else if let Some(i) = v["intValue"].as_str() {
                    Any::IntValue(i.parse().unwrap())
                } else if let Some(f) = v["doubleValue"].as_f64() {
                    Any::DoubleValue(f)
                } else if let Some(b) = v["boolValue"].as_bool() {
                    Any::BoolValue(b)
                } else {
                    panic!("label {l}")
                };
                KeyValue {
                    key: l["key"].as_str().unwrap().into(),
                    value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(value),
                    }),
                    key_strindex: 0,
                }
            })
            .collect();
        let samples = s["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["timestampMs"].as_str().unwrap().parse::<i64>().unwrap(),
                    x["value"].as_f64().unwrap(),
                )
            })
            .collect();
        out.insert(labels_key(&labels), samples);
    }
    out
}

/// A stored span, as SQL reads it.
#[derive(Debug, Clone)]
struct Row {
    service: String,
    name: String,
    kind: String,
    error: bool,
    start: i64,
    duration: i64,
    trace: String,
    span: String,
    root: bool,
    code: Option<i64>,
    parent: Option<String>,
}

async fn rows(server: &TestServer) -> Vec<Row> {
    server
        .sql(
            "SELECT service_name, name, kind, status_code, start_time_unix_nano AS t, duration_ns, \
             encode(trace_id, 'hex') AS tr, encode(span_id, 'hex') AS sp, parent_span_id IS NULL AS root, \
             span_attributes['http.response.status_code'] AS code, \
             encode(parent_span_id, 'hex') AS parent FROM spans",
        )
        .await
        .iter()
        .map(|r| Row {
            service: r["service_name"].as_str().unwrap().into(),
            name: r["name"].as_str().unwrap().into(),
            kind: r["kind"].as_str().unwrap().into(),
            error: r["status_code"] == "ERROR",
            start: r["t"].as_i64().unwrap(),
            duration: r["duration_ns"].as_i64().unwrap(),
            trace: r["tr"].as_str().unwrap().into(),
            span: r["sp"].as_str().unwrap().into(),
            root: r["root"].as_bool().unwrap(),
            code: r["code"].as_str().map(|c| c.parse().unwrap()),
            parent: r["parent"].as_str().map(str::to_string),
        })
        .collect()
}

/// The window as Tempo aligns it: the interval of a span start, and the
/// timestamp (ms) of an interval.
struct Window {
    lower: i64,
    upper: i64,
    step: i64,
}

impl Window {
    fn new(start_s: i64, end_s: i64, step_s: i64) -> Self {
        let (start, end, step) = (
            start_s * 1_000_000_000,
            end_s * 1_000_000_000,
            step_s * 1_000_000_000,
        );
        let first = start - start % step;
        let last = if end % step == 0 {
            end
        } else {
            end + step - end % step
        };
        Window {
            lower: first - step,
            upper: last,
            step,
        }
    }
    fn timestamp_ms(&self, t: i64) -> Option<i64> {
        if t <= self.lower || t > self.upper {
            return None;
        }
        let k = (t - self.lower - 1) / self.step;
        Some((self.lower + (k + 1) * self.step) / 1_000_000)
    }
    fn all_ms(&self) -> Vec<i64> {
        (1..=(self.upper - self.lower) / self.step)
            .map(|k| (self.lower + k * self.step) / 1_000_000)
            .collect()
    }
}

/// Groups the spans meeting `keep` by label set and interval.
fn group<'a>(
    rows: &'a [Row],
    window: &Window,
    keep: impl Fn(&Row) -> bool,
    labels: impl Fn(&Row) -> String,
) -> BTreeMap<String, BTreeMap<i64, Vec<&'a Row>>> {
    let mut out: BTreeMap<String, BTreeMap<i64, Vec<&Row>>> = BTreeMap::new();
    for r in rows.iter().filter(|r| keep(r)) {
        if let Some(ts) = window.timestamp_ms(r.start) {
            out.entry(labels(r))
                .or_default()
                .entry(ts)
                .or_default()
                .push(r);
        }
    }
    out
}

/// Per series and interval, `f` of the spans; with every interval of the
/// window (`fill`) for counting functions.
fn expect(
    groups: &BTreeMap<String, BTreeMap<i64, Vec<&Row>>>,
    window: &Window,
    fill: Option<f64>,
    f: impl Fn(&[&Row]) -> f64,
) -> Decoded {
    groups
        .iter()
        .map(|(k, by_ts)| {
            let mut samples: BTreeMap<i64, f64> = by_ts.iter().map(|(t, rs)| (*t, f(rs))).collect();
            if let Some(zero) = fill {
                for t in window.all_ms() {
                    samples.entry(t).or_insert(zero);
                }
            }
            (k.clone(), samples)
        })
        .collect()
}

fn assert_close(got: &Decoded, want: &Decoded, what: &str) {
    assert_within(got, want, what, 1e-9)
}

/// Equal series, values within `relative` of each other.
fn assert_within(got: &Decoded, want: &Decoded, what: &str, relative: f64) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: series"
    );
    for (k, w) in want {
        let g = &got[k];
        assert_eq!(
            g.keys().collect::<Vec<_>>(),
            w.keys().collect::<Vec<_>>(),
            "{what} {k}: timestamps"
        );
        for (t, v) in w {
            let x = g[t];
            assert!(
                (x - v).abs() <= relative * v.abs().max(1.0),
                "{what} {k} at {t}: got {x}, want {v}"
            );
        }
    }
}

/// SQL's `percentile_cont`: linear between the nearest ranks.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = p * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

fn secs(r: &Row) -> f64 {
    r.duration as f64 / 1e9
}

fn q(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn proto(
    server: &TestServer,
    range: &str,
    query: String,
) -> (Decoded, Vec<(String, Exemplar)>) {
    let path = format!("/tempo/api/metrics/query_range?q={}&{range}", q(&query));
    let (status, body) = get(server, &path, "application/protobuf").await;
    assert_eq!(status, 200, "{query}: {}", String::from_utf8_lossy(&body));
    decode_proto(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceql_metrics_match_the_raw_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--flush-max-age", "300ms"]).await;
    for r in &workload(150) {
        server.export(r).await;
    }
    let rows = rows(&server).await;
    assert_eq!(rows.len(), 150 * 4 + 75 * 2);
    let now_s = (now_nanos() / 1_000_000_000) as i64;
    let (start, end, step) = (now_s - 45 * 60, now_s, 60);
    let window = Window::new(start, end, step);
    let range = format!("start={start}&end={end}&step={step}");

    let proto = |query: &str| proto(&server, &range, query.to_string());
    let service = |r: &Row| format!("resource.service.name=s:{}", r.service);

    // rate() by service, as JSON (Grafana's `query` parameter).
    let (status, body) = server
        .get(&format!(
            "/tempo/api/metrics/query_range?query={}&{range}",
            q("{ } | rate() by (resource.service.name)")
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let want = expect(
        &group(&rows, &window, |_| true, service),
        &window,
        Some(0.0),
        |rs| rs.len() as f64 / 60.0,
    );
    assert_eq!(want.len(), 3);
    assert_close(&decode_json(&body), &want, "rate");
    assert_eq!(body["metrics"]["inspectedSpans"], rows.len().to_string());

    // The same as protobuf.
    let (got, exemplars) = proto("{} | rate() by (resource.service.name)").await;
    assert_close(&got, &want, "rate (protobuf)");
    assert!(!exemplars.is_empty());

    // count_over_time() of errors, ungrouped: `__name__`.
    let (got, _) = proto("{ status = error } | count_over_time()").await;
    let want = expect(
        &group(
            &rows,
            &window,
            |r| r.error,
            |_| "__name__=s:count_over_time".into(),
        ),
        &window,
        Some(0.0),
        |rs| rs.len() as f64,
    );
    assert_close(&got, &want, "count_over_time");

    // min / max / avg / sum of durations of cart's spans, by name.
    let cart = |r: &Row| r.service == "cart";
    let by_name = |r: &Row| format!("name=s:{}", r.name);
    let groups = group(&rows, &window, cart, by_name);
    type Agg = fn(&[&Row]) -> f64;
    let cases: [(&str, Agg); 4] = [
        ("min_over_time", |rs| {
            rs.iter().map(|r| secs(r)).fold(f64::INFINITY, f64::min)
        }),
        ("max_over_time", |rs| {
            rs.iter().map(|r| secs(r)).fold(0.0, f64::max)
        }),
        ("avg_over_time", |rs| {
            rs.iter().map(|r| secs(r)).sum::<f64>() / rs.len() as f64
        }),
        ("sum_over_time", |rs| rs.iter().map(|r| secs(r)).sum()),
    ];
    for (function, f) in cases {
        let (got, exemplars) = proto(&format!(
            "{{ resource.service.name = \"cart\" }} | {function}(duration) by (name)"
        ))
        .await;
        assert_close(&got, &expect(&groups, &window, None, f), function);
        // Each exemplar is the extreme span of its interval.
        assert!(!exemplars.is_empty(), "{function}: exemplars");
        for (key, e) in &exemplars {
            let id = |name: &str| {
                e.labels
                    .iter()
                    .find(|kv| kv.key == name)
                    .map(label_text)
                    .unwrap_or_else(|| panic!("exemplar without {name}"))
            };
            let span = rows
                .iter()
                .find(|r| {
                    format!("s:{}", r.trace) == id("trace:id")
                        && format!("s:{}", r.span) == id("span:id")
                })
                .expect("the exemplar's span exists");
            assert_eq!(span.start / 1_000_000, e.timestamp_ms);
            assert_eq!(
                secs(span),
                e.value,
                "{function}: exemplar value is its span's"
            );
            let interval = &groups[key][&window.timestamp_ms(span.start).unwrap()];
            let extreme = if function == "min_over_time" {
                interval
                    .iter()
                    .map(|r| secs(r))
                    .fold(f64::INFINITY, f64::min)
            } else {
                interval.iter().map(|r| secs(r)).fold(0.0, f64::max)
            };
            assert_eq!(e.value, extreme, "{function}: exemplar is the extreme span");
        }
    }

    // Exact quantiles of server spans by service, one series per `p`.
    let (got, _) = proto(
        "{ kind = server } | quantile_over_time(duration, .5, .9, .99) by (resource.service.name)",
    )
    .await;
    let mut want = Decoded::new();
    for p in [0.5, 0.9, 0.99] {
        let groups = group(
            &rows,
            &window,
            |r| r.kind == "SERVER",
            |r| format!("resource.service.name=s:{},p=f:{p}", r.service),
        );
        want.extend(expect(&groups, &window, None, |rs| {
            percentile(&rs.iter().map(|r| secs(r)).collect::<Vec<_>>(), p)
        }));
    }
    assert_eq!(want.len(), 6, "frontend and cart serve");
    // DataFusion's percentile_cont rounds the interpolation weight to a
    // millionth.
    assert_within(&got, &want, "quantile_over_time", 1e-6);

    // Histogram of checkout durations: power-of-two buckets, in seconds.
    let (got, _) = proto("{ name = \"GET /checkout\" } | histogram_over_time(duration)").await;
    let bucket = |d: i64| (d as u64).next_power_of_two() as f64 / 1e9;
    let want = expect(
        &group(
            &rows,
            &window,
            |r| r.name == "GET /checkout",
            |r| format!("__bucket=f:{}", bucket(r.duration)),
        ),
        &window,
        Some(0.0),
        |rs| rs.len() as f64,
    );
    assert!(want.len() >= 2, "{:?}", want.keys());
    assert_close(&got, &want, "histogram_over_time");

    // A numeric attribute, and typed labels.
    let (got, _) = proto(
        "{ span.http.response.status_code >= 200 } | sum_over_time(span.http.response.status_code) by (span.http.response.status_code)",
    )
    .await;
    let want = expect(
        &group(
            &rows,
            &window,
            |r| r.code.is_some(),
            |r| format!("span.http.response.status_code=i:{}", r.code.unwrap()),
        ),
        &window,
        None,
        |rs| rs.iter().map(|r| r.code.unwrap() as f64).sum(),
    );
    assert_eq!(want.len(), 2);
    assert_close(&got, &want, "sum_over_time of an attribute");

    // Trace-level conditions and spanset operators.
    let mut traces: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        traces.entry(r.trace.as_str()).or_default().push(r);
    }
    let trace_of = |id: &str| traces[id].iter().copied();
    let trace_duration = |id: &str| {
        let s = trace_of(id).map(|r| r.start).min().unwrap();
        let e = trace_of(id).map(|r| r.start + r.duration).max().unwrap();
        e - s
    };
    let (got, _) = proto(
        "{ rootServiceName = \"frontend\" && traceDuration > 40ms && kind = client } | count_over_time()",
    )
    .await;
    let want = expect(
        &group(
            &rows,
            &window,
            |r| {
                r.kind == "CLIENT"
                    && trace_duration(&r.trace) > 40_000_000
                    && trace_of(&r.trace).any(|s| s.root && s.service == "frontend")
            },
            |_| "__name__=s:count_over_time".into(),
        ),
        &window,
        Some(0.0),
        |rs| rs.len() as f64,
    );
    let total = |d: &Decoded| d.values().flat_map(|s| s.values()).sum::<f64>();
    assert!(
        total(&want) > 0.0 && total(&want) < 300.0,
        "{}",
        total(&want)
    );
    assert_close(&got, &want, "trace-level conditions");

    let (got, _) = proto(
        "{ name = \"GetCart\" && status = error } && { name = \"process order\" } | count_over_time() by (name)",
    )
    .await;
    let has = |id: &str, f: &dyn Fn(&Row) -> bool| trace_of(id).any(f);
    let want = expect(
        &group(
            &rows,
            &window,
            |r| {
                has(&r.trace, &|s| s.name == "GetCart" && s.error)
                    && has(&r.trace, &|s| s.name == "process order")
                    && ((r.name == "GetCart" && r.error) || r.name == "process order")
            },
            by_name,
        ),
        &window,
        Some(0.0),
        |rs| rs.len() as f64,
    );
    assert_eq!(want.len(), 2, "{:?}", want.keys());
    assert_close(&got, &want, "&& of spansets");

    // Structural operators between spansets: parent (>), not a parent
    // of any span (!<: leaves), sibling (~).
    let span_of = |trace: &str, id: &str| rows.iter().find(|r| r.trace == trace && r.span == id);
    let parent_of = |r: &Row| r.parent.as_deref().and_then(|p| span_of(&r.trace, p));
    let is_parent = |r: &Row| {
        rows.iter()
            .any(|c| c.trace == r.trace && c.parent.as_deref() == Some(r.span.as_str()))
    };
    let siblings = |r: &Row| {
        rows.iter()
            .filter(|s| {
                s.trace == r.trace && s.span != r.span && s.parent.is_some() && s.parent == r.parent
            })
            .collect::<Vec<_>>()
    };
    let ancestors = |r: &Row| {
        let mut out = Vec::new();
        let mut at = parent_of(r);
        while let Some(p) = at {
            out.push(p);
            at = parent_of(p);
        }
        out
    };
    let has_descendant = |r: &Row, name: &str| {
        rows.iter().any(|d| {
            d.trace == r.trace && d.name == name && ancestors(d).iter().any(|a| a.span == r.span)
        })
    };
    type Keep<'a> = Box<dyn Fn(&Row) -> bool + 'a>;
    let cases: Vec<(&str, Keep)> = vec![
        (
            "{ name = \"GetCart\" } > { kind = client } | count_over_time() by (name)",
            Box::new(|r| r.kind == "CLIENT" && parent_of(r).is_some_and(|p| p.name == "GetCart")),
        ),
        (
            "{ } !< { } | count_over_time() by (name)",
            Box::new(|r| !is_parent(r)),
        ),
        (
            "{ name = \"call cart\" } >> { } | count_over_time() by (name)",
            Box::new(|r| ancestors(r).iter().any(|a| a.name == "call cart")),
        ),
        (
            "{ name = \"SELECT carts\" } << { } | count_over_time() by (name)",
            Box::new(|r| has_descendant(r, "SELECT carts")),
        ),
        (
            "{ kind = server && name =~ \"GET .*\" } !>> { } | count_over_time() by (name)",
            Box::new(|r| {
                !ancestors(r)
                    .iter()
                    .any(|a| a.kind == "SERVER" && a.name.starts_with("GET "))
            }),
        ),
        (
            "{ name = \"call cart\" } ~ { } | count_over_time() by (name)",
            Box::new(|r| siblings(r).iter().any(|s| s.name == "call cart")),
        ),
    ];
    for (query, keep) in cases {
        let (got, _) = proto(query).await;
        let want = expect(
            &group(&rows, &window, keep, by_name),
            &window,
            Some(0.0),
            |rs| rs.len() as f64,
        );
        assert!(!want.is_empty(), "{query}");
        assert_close(&got, &want, query);
    }

    // Instant: one value per series over the whole window.
    let (status, body) = get(
        &server,
        &format!(
            "/tempo/api/metrics/query?q={}&start={start}&end={end}",
            q("{} | count_over_time() by (resource.service.name)")
        ),
        "application/protobuf",
    )
    .await;
    assert_eq!(status, 200);
    let instant = QueryInstantResponse::decode(body.as_slice()).unwrap();
    let got: BTreeMap<String, f64> = instant
        .series
        .iter()
        .map(|s| (labels_key(&s.labels), s.value))
        .collect();
    let mut want: BTreeMap<String, f64> = BTreeMap::new();
    for r in &rows {
        if r.start >= start * 1_000_000_000 && r.start <= end * 1_000_000_000 {
            *want.entry(service(r)).or_default() += 1.0;
        }
    }
    assert_eq!(got, want);

    // Refusals name what was wrong.
    for (query, extra, needle) in [
        ("{ } | rate(", "", "expected"),
        (
            "{ } | median_over_time(duration)",
            "",
            "unknown metrics function",
        ),
        ("{ } &> { } | rate()", "", "union structural"),
        ("{ } | rate() by (traceDuration)", "", "by (traceDuration)"),
        ("{ } | rate()", "&step=0.01", "intervals"),
        ("{ } | rate()", "&step=-5", "step must be positive"),
        ("{ } | rate()", "&step=soon", "step"),
        ("{ } | rate()", "&step=5e9", "step must be from"),
        ("{ } | rate()", "&exemplars=lots", "exemplars"),
    ] {
        let (status, body) = get(
            &server,
            &format!(
                "/tempo/api/metrics/query_range?q={}&start={start}&end={end}{}",
                q(query),
                if extra.contains("step=") {
                    extra.to_string()
                } else {
                    format!("&step=60{extra}")
                }
            ),
            "application/json",
        )
        .await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{query}{extra}: {body}");
        assert!(body.contains(needle), "{query}{extra}: {body}");
    }
    for bounds in [
        "start=200&end=100",
        "start=9223372036&end=9223372037",
        "end=9223372036854775807&since=9999999h",
    ] {
        let (status, body) = server
            .get(&format!(
                "/tempo/api/metrics/query_range?q=%7B%7D%20%7C%20rate()&{bounds}"
            ))
            .await;
        assert_eq!(status, 400, "{bounds}: {body}");
    }
}

// ---- tempopb.StreamingQuerier ------------------------------------------------

/// `tempopb.SearchRequest`, from Tempo's proto.
#[derive(Clone, PartialEq, prost::Message)]
struct SearchRequest {
    #[prost(map = "string, string", tag = "1")]
    tags: std::collections::HashMap<String, String>,
    #[prost(uint32, tag = "2")]
    min_duration_ms: u32,
    #[prost(uint32, tag = "3")]
    max_duration_ms: u32,
    #[prost(uint32, tag = "4")]
    limit: u32,
    #[prost(uint32, tag = "5")]
    start: u32,
    #[prost(uint32, tag = "6")]
    end: u32,
    #[prost(string, tag = "8")]
    query: String,
    #[prost(uint32, tag = "9")]
    spans_per_span_set: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SearchResponse {
    #[prost(message, repeated, tag = "1")]
    traces: Vec<TraceSearchMetadata>,
    #[prost(message, optional, tag = "2")]
    metrics: Option<StreamMetrics>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StreamMetrics {
    #[prost(uint32, tag = "1")]
    inspected_traces: u32,
    #[prost(uint32, tag = "4")]
    completed_jobs: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TraceSearchMetadata {
    #[prost(string, tag = "1")]
    trace_id: String,
    #[prost(string, tag = "2")]
    root_service_name: String,
    #[prost(string, tag = "3")]
    root_trace_name: String,
    #[prost(uint64, tag = "4")]
    start_time_unix_nano: u64,
    #[prost(uint32, tag = "5")]
    duration_ms: u32,
    #[prost(message, repeated, tag = "7")]
    span_sets: Vec<SpanSet>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SpanSet {
    #[prost(message, repeated, tag = "1")]
    spans: Vec<SearchSpan>,
    #[prost(uint32, tag = "2")]
    matched: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SearchSpan {
    #[prost(string, tag = "1")]
    span_id: String,
    #[prost(string, tag = "2")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct QueryRangeRequest {
    #[prost(string, tag = "1")]
    query: String,
    #[prost(uint64, tag = "2")]
    start: u64,
    #[prost(uint64, tag = "3")]
    end: u64,
    #[prost(uint64, tag = "4")]
    step: u64,
}

async fn grpc_client(server: &TestServer) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(server.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

/// Every message of a server-streaming call, or its status.
async fn stream_all<Q, R>(
    server: &TestServer,
    method: &'static str,
    request: Q,
) -> Result<Vec<R>, tonic::Status>
where
    Q: prost::Message + Send + Sync + 'static,
    R: prost::Message + Default + Send + Sync + 'static,
{
    let mut client = grpc_client(server).await;
    client.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    let codec = tonic_prost::ProstCodec::<Q, R>::default();
    let mut stream = client
        .server_streaming(tonic::Request::new(request), path, codec)
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(message) = stream.message().await? {
        out.push(message);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_search_and_metrics_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--flush-max-age", "300ms"]).await;
    for r in &workload(150) {
        server.export(r).await;
    }
    let now_s = (now_nanos() / 1_000_000_000) as u32;
    let (start, end) = (now_s - 45 * 60, now_s);

    // Every trace is a candidate (each has a SELECT carts span); the
    // matches are the traces whose GetCart failed. With a limit of 6 the
    // candidates come 20 at a time: matches arrive over several messages.
    let query = "{ status = error } > { name = \"SELECT carts\" }";
    let messages: Vec<SearchResponse> = stream_all(
        &server,
        "/tempopb.StreamingQuerier/Search",
        SearchRequest {
            query: query.into(),
            limit: 6,
            start,
            end,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(messages.len() >= 2, "{} messages", messages.len());
    let streamed: Vec<&TraceSearchMetadata> = messages.iter().flat_map(|m| &m.traces).collect();
    let ids: Vec<&str> = streamed.iter().map(|t| t.trace_id.as_str()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "each trace once over the stream");
    assert_eq!(ids.len(), 6);
    let inspected: Vec<u32> = messages
        .iter()
        .map(|m| m.metrics.as_ref().unwrap().inspected_traces)
        .collect();
    assert!(inspected.windows(2).all(|w| w[0] <= w[1]), "{inspected:?}");
    // The same traces as the HTTP search, and each one really matches.
    let (status, body) = server
        .get(&format!(
            "/tempo/api/search?q={}&limit=6&start={start}&end={end}",
            q(query)
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let http_ids: Vec<&str> = body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, http_ids);
    let failed = server
        .sql("SELECT DISTINCT ltrim(encode(trace_id, 'hex'), '0') AS id FROM spans WHERE name = 'GetCart' AND status_code = 'ERROR'")
        .await;
    let failed: Vec<&str> = failed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(failed.len() > 6, "{}", failed.len());
    for t in &streamed {
        assert!(
            failed.contains(&t.trace_id.as_str()),
            "{} did not match",
            t.trace_id
        );
        assert_eq!(t.root_service_name, "frontend");
        assert_eq!(t.span_sets[0].spans[0].name, "SELECT carts");
        assert_eq!(t.span_sets[0].matched, 1);
    }

    // Metrics: one message, the same series as the HTTP API.
    let step = 60u64;
    let metrics_query = "{ } | count_over_time() by (resource.service.name)";
    let messages: Vec<QueryRangeResponse> = stream_all(
        &server,
        "/tempopb.StreamingQuerier/MetricsQueryRange",
        QueryRangeRequest {
            query: metrics_query.into(),
            start: u64::from(start) * 1_000_000_000,
            end: u64::from(end) * 1_000_000_000,
            step: step * 1_000_000_000,
        },
    )
    .await
    .unwrap();
    assert_eq!(messages.len(), 1);
    let (got, _) = decode_proto(&messages[0].encode_to_vec());
    let (status, body) = server
        .get(&format!(
            "/tempo/api/metrics/query_range?q={}&start={start}&end={end}&step={step}",
            q(metrics_query)
        ))
        .await;
    assert_eq!(status, 200);
    assert_close(&got, &decode_json(&body), "streamed metrics");
    assert_eq!(got.len(), 3);

    // Refusals are gRPC statuses with a message.
    let bad = stream_all::<_, SearchResponse>(
        &server,
        "/tempopb.StreamingQuerier/Search",
        SearchRequest {
            query: "{ nope = 1 }".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("unknown field"), "{}", bad.message());
    let bad = stream_all::<_, QueryRangeResponse>(
        &server,
        "/tempopb.StreamingQuerier/MetricsQueryRange",
        QueryRangeRequest {
            query: "{ } &> { } | rate()".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("union"), "{}", bad.message());
    let unknown = stream_all::<_, SearchResponse>(
        &server,
        "/tempopb.StreamingQuerier/SearchTags",
        SearchRequest::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unimplemented);
}

// ---- structural operators and pipeline stages ----------------------------------

/// Every trace the search finds (limit 200): id -> its first spanset.
async fn search_sets(
    server: &TestServer,
    query: &str,
    start: u32,
    end: u32,
) -> BTreeMap<String, Value> {
    let (status, body) = server
        .get(&format!(
            "/tempo/api/search?q={}&limit=200&spss=10&start={start}&end={end}",
            q(query)
        ))
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["traceID"].as_str().unwrap().to_string(),
                t["spanSets"][0].clone(),
            )
        })
        .collect()
}

/// The names of a spanset's spans, sorted.
fn names(set: &Value) -> Vec<String> {
    let mut v: Vec<String> = set["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structural_operators_and_pipeline_stages() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--flush-max-age", "300ms"]).await;
    for r in &workload(150) {
        server.export(r).await;
    }
    let rows = rows(&server).await;
    let now_s = (now_nanos() / 1_000_000_000) as u32;
    let (start, end) = (now_s - 45 * 60, now_s);
    // Each trace: GET /x (frontend server) > call cart (client) > GetCart
    // (cart server) > SELECT carts (client); checkout traces (every other
    // one) also GET /checkout > publish order > process order.
    let mut traces: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in &rows {
        traces
            .entry(r.trace.trim_start_matches('0').to_string())
            .or_default()
            .push(r);
    }
    assert_eq!(traces.len(), 150);
    let checkout: Vec<&String> = traces
        .iter()
        .filter(|(_, spans)| spans.len() == 6)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(checkout.len(), 75);
    let failed: Vec<&String> = traces
        .iter()
        .filter(|(_, spans)| spans.iter().any(|s| s.root && s.error))
        .map(|(id, _)| id)
        .collect();
    assert!(!failed.is_empty());
    let ids = |found: &BTreeMap<String, Value>| found.keys().cloned().collect::<Vec<_>>();
    let all: Vec<String> = traces.keys().cloned().collect();
    let owned = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // Each structural operator with the spans it must return.
    /// The names of the spans expected, given whether the trace is a
    /// checkout (`root`: the root span's name).
    type Spans<'a> = &'a dyn Fn(bool) -> Vec<&'static str>;
    let cases: [(&str, &Vec<String>, Spans); 7] = [
        // The parent (<) of "call cart" among server spans: the root.
        (
            r#"{ name = "call cart" } < { kind = server }"#,
            &all,
            &|_| vec!["root"],
        ),
        // Ancestors (<<) of SELECT carts.
        (r#"{ name = "SELECT carts" } << { }"#, &all, &|_| {
            vec!["GetCart", "call cart", "root"]
        }),
        // The sibling (~) of "call cart": "publish order", in checkouts.
        (
            r#"{ name = "call cart" } ~ { }"#,
            &owned(&checkout),
            &|_| vec!["publish order"],
        ),
        // Leaves: spans that are the parent of no span (!<).
        (r#"{ } !< { }"#, &all, &|c| {
            if c {
                vec!["SELECT carts", "process order"]
            } else {
                vec!["SELECT carts"]
            }
        }),
        // Client spans that are not children (!>) of GetCart.
        (
            r#"{ name = "GetCart" } !> { kind = client }"#,
            &all,
            &|_| vec!["call cart"],
        ),
        // Union child (&>): client spans under a server span, and those
        // server spans.
        (r#"{ kind = server } &> { kind = client }"#, &all, &|_| {
            vec!["GetCart", "SELECT carts", "call cart", "root"]
        }),
        // Not a descendant (!>>) of the root: the root itself.
        (
            r#"{ kind = server && name =~ "GET .*" } !>> { }"#,
            &all,
            &|_| vec!["root"],
        ),
    ];
    for (query, expected_traces, expected_spans) in cases {
        let found = search_sets(&server, query, start, end).await;
        assert_eq!(&ids(&found), expected_traces, "{query}: traces");
        for (id, set) in &found {
            let is_checkout = traces[id].len() == 6;
            let root_name = traces[id].iter().find(|s| s.root).unwrap().name.clone();
            let mut want: Vec<String> = expected_spans(is_checkout)
                .iter()
                .map(|n| {
                    if *n == "root" {
                        root_name.clone()
                    } else {
                        n.to_string()
                    }
                })
                .collect();
            want.sort();
            assert_eq!(names(set), want, "{query}: spans of {id}");
            assert_eq!(set["matched"], want.len(), "{query}");
        }
    }

    // nil: has or lacks an attribute.
    for (query, want) in [
        (
            "{ span.peer.service != nil && kind = client }",
            vec!["SELECT carts", "call cart"],
        ),
        (
            "{ span.http.route = nil && kind = server }",
            vec!["GetCart"],
        ),
    ] {
        let found = search_sets(&server, query, start, end).await;
        assert_eq!(ids(&found), all, "{query}");
        for set in found.values() {
            assert_eq!(names(set), want, "{query}");
        }
    }

    // Aggregate filters.
    let found = search_sets(&server, "{ } | count() > 5", start, end).await;
    assert_eq!(ids(&found), owned(&checkout));
    let found = search_sets(&server, "{ status = error } | count() >= 3", start, end).await;
    assert_eq!(ids(&found), owned(&failed));
    let found = search_sets(
        &server,
        "max(span.http.response.status_code) >= 500",
        start,
        end,
    )
    .await;
    assert_eq!(
        ids(&found),
        owned(&failed),
        "a bare aggregate means {{ }} | ..."
    );
    let slow_cart: Vec<String> = traces
        .iter()
        .filter(|(_, spans)| {
            let cart: Vec<i64> = spans
                .iter()
                .filter(|s| s.service == "cart")
                .map(|s| s.duration)
                .collect();
            cart.iter().sum::<i64>() as f64 / cart.len() as f64 > 30e6
        })
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!slow_cart.is_empty() && slow_cart.len() < 150);
    let found = search_sets(
        &server,
        r#"{ resource.service.name = "cart" } | avg(duration) > 30ms"#,
        start,
        end,
    )
    .await;
    assert_eq!(ids(&found), slow_cart);

    // select(): the fields of the returned spans, typed.
    let found = search_sets(
        &server,
        r#"{ name = "GetCart" } | select(resource.deployment.environment, span.peer.service, duration)"#,
        start,
        end,
    )
    .await;
    assert_eq!(found.len(), 150);
    for (id, set) in &found {
        let span = &set["spans"][0];
        let row = traces[id].iter().find(|s| s.name == "GetCart").unwrap();
        let attributes = span["attributes"].as_array().unwrap();
        assert_eq!(
            attributes.len(),
            2,
            "{span}: peer.service is absent on GetCart"
        );
        assert_eq!(attributes[0]["key"], "resource.deployment.environment");
        assert!(matches!(
            attributes[0]["value"]["stringValue"].as_str(),
            Some("prod" | "staging")
        ));
        assert_eq!(attributes[1]["key"], "duration");
        assert_eq!(attributes[1]["value"]["intValue"], row.duration.to_string());
    }

    // What is not supported is refused, by name.
    for (query, needle) in [
        ("{ } | by(resource.service.name)", "by() is not supported"),
        ("{ } | rate()", "metrics function"),
        ("{ } | count()", "expected a comparison"),
        (
            "{ } | avg(name) > 1",
            "aggregates duration or a numeric attribute",
        ),
        ("{ } | select()", "at least one field"),
        ("{ } | frobnicate()", "unknown pipeline stage"),
        ("{ } with (most_recent=true)", "with (...) hints"),
        ("{ span.size > 10 * 1024 }", "unexpected character"),
        ("{ event.exception.type = \"x\" }", "unknown field"),
    ] {
        let (status, body) = server
            .get(&format!(
                "/tempo/api/search?q={}&start={start}&end={end}",
                q(query)
            ))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.to_string().contains(needle), "{query}: {body}");
    }
}
