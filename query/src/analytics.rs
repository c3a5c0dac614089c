//! Aggregates over many spans: RED metrics, the service dependency graph and
//! the cross-trace latency breakdown. Percentiles are exact
//! (`percentile_cont`: linear interpolation between closest ranks).

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use serde::Serialize;

use crate::analysis::{CrossTrace, Stats, Tree};
use crate::engine::{QueryEngine, QueryError};
use crate::fetch::{self, COLUMNS, MAX_SPANS, TRACE_MARGIN_NS};
use crate::search::{SearchError, require_service};
use crate::sql::{Sql, quote};
use tracelake_protocols::params::TimeRange;

const PERCENTILES: &str = "percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST(duration_ns AS DOUBLE)) AS p50, \
    percentile_cont(0.95) WITHIN GROUP (ORDER BY CAST(duration_ns AS DOUBLE)) AS p95, \
    percentile_cont(0.99) WITHIN GROUP (ORDER BY CAST(duration_ns AS DOUBLE)) AS p99";

/// Rate, errors and duration percentiles of a group of spans.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Red {
    pub requests: i64,
    /// Requests per second over the period.
    pub rate: f64,
    pub errors: i64,
    /// errors / requests.
    pub error_rate: f64,
    pub p50_ns: f64,
    pub p95_ns: f64,
    pub p99_ns: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// Bucket start, Unix ns.
    pub start_time_unix_nano: String,
    #[serde(flatten)]
    pub red: Red,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedSeries {
    #[serde(flatten)]
    pub total: Red,
    /// Non-empty buckets in time order.
    pub series: Vec<Point>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationRed {
    pub name: String,
    #[serde(flatten)]
    pub red: RedSeries,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRed {
    pub name: String,
    #[serde(flatten)]
    pub red: RedSeries,
    pub operations: Vec<OperationRed>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedReport {
    pub step_ns: i64,
    pub span_kinds: Vec<&'static str>,
    pub services: Vec<ServiceRed>,
}

/// RED metrics per service and per operation, in total and per `step`
/// bucket (aligned to multiples of `step` since the Unix epoch; rates of the
/// first and last bucket are over the part inside the range).
pub async fn red(
    engine: &QueryEngine,
    range: TimeRange,
    step: i64,
    kinds: Vec<&'static str>,
    service: Option<&str>,
    operation: Option<&str>,
) -> Result<RedReport, SearchError> {
    if let Some(s) = service {
        require_service(engine, s, range).await?;
    }
    let mut conditions = vec![range.sql()];
    if !kinds.is_empty() {
        let list: Vec<_> = kinds.iter().map(|k| quote(k)).collect();
        conditions.push(format!("kind IN ({})", list.join(", ")));
    }
    if let Some(s) = service {
        conditions.push(format!("service_name = {}", quote(s)));
    }
    if let Some(o) = operation {
        conditions.push(format!("name = {}", quote(o)));
    }
    // Buckets are aligned to multiples of the step, so that charts of
    // successive requests line up; the first and last may be partial.
    let origin = range.start - range.start.rem_euclid(step);
    let sql = format!(
        "SELECT service_name, name, bucket, grouping(name) AS all_names, grouping(bucket) AS all_buckets, \
           count(*) AS requests, sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors, {PERCENTILES} \
         FROM (SELECT service_name, name, (start_time_unix_nano - {origin}) / {step} AS bucket, duration_ns, status_code \
               FROM spans WHERE {where_}) \
         GROUP BY GROUPING SETS ((service_name), (service_name, name), (service_name, bucket), (service_name, name, bucket)) \
         ORDER BY service_name, name NULLS FIRST, bucket NULLS FIRST",
        where_ = conditions.join(" AND "),
    );
    let batches = engine.internal_sql(&sql, 10_000_000).await?;
    let mut services: BTreeMap<String, ServiceRed> = BTreeMap::new();
    for b in &batches {
        let service = b.column(0).as_string::<i32>();
        let name = b.column(1).as_string::<i32>();
        let bucket = b.column(2).as_primitive::<Int64Type>();
        let all_names = b.column(3).as_primitive::<arrow::datatypes::Int32Type>();
        let all_buckets = b.column(4).as_primitive::<arrow::datatypes::Int32Type>();
        let requests = b.column(5).as_primitive::<Int64Type>();
        let errors = b.column(6).as_primitive::<Int64Type>();
        let p = |i: usize, row: usize| b.column(i).as_primitive::<Float64Type>().value(row);
        for row in 0..b.num_rows() {
            let (seconds, bucket_start) = if all_buckets.value(row) == 1 {
                ((range.end - range.start) as f64 / 1e9, None)
            } else {
                let from = origin + bucket.value(row) * step;
                let covered = range.end.min(from + step) - range.start.max(from);
                (covered as f64 / 1e9, Some(from))
            };
            let (requests, errors) = (requests.value(row), errors.value(row));
            let red = Red {
                requests,
                rate: requests as f64 / seconds,
                errors,
                error_rate: errors as f64 / requests as f64,
                p50_ns: p(7, row),
                p95_ns: p(8, row),
                p99_ns: p(9, row),
            };
            let entry = services
                .entry(service.value(row).to_string())
                .or_insert_with(|| ServiceRed {
                    name: service.value(row).to_string(),
                    red: empty_series(),
                    operations: Vec::new(),
                });
            let target = if all_names.value(row) == 1 {
                &mut entry.red
            } else {
                let op = name.value(row);
                if entry.operations.last().is_none_or(|o| o.name != op) {
                    entry.operations.push(OperationRed {
                        name: op.to_string(),
                        red: empty_series(),
                    });
                }
                &mut entry.operations.last_mut().expect("just pushed").red
            };
            match bucket_start {
                None => target.total = red,
                Some(t) => target.series.push(Point {
                    start_time_unix_nano: t.to_string(),
                    red,
                }),
            }
        }
    }
    Ok(RedReport {
        step_ns: step,
        span_kinds: kinds,
        services: services.into_values().collect(),
    })
}

fn empty_series() -> RedSeries {
    RedSeries {
        total: Red {
            requests: 0,
            rate: 0.0,
            errors: 0,
            error_rate: 0.0,
            p50_ns: 0.0,
            p95_ns: 0.0,
            p99_ns: 0.0,
        },
        series: Vec::new(),
    }
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    pub parent: String,
    pub child: String,
    pub call_count: i64,
    pub error_count: i64,
    pub p50_ns: f64,
    pub p99_ns: f64,
    /// True when the callee is not instrumented: the edge comes from client
    /// spans' `peer.service`.
    pub uninstrumented: bool,
}

/// The root spans of a (service, operation) since a time: what adaptive
/// sampling estimates traffic from.
#[derive(Debug, Clone, PartialEq)]
pub struct RootTraffic {
    pub service: String,
    pub operation: String,
    /// The spans' time bucket: start time / `bucket_ns`.
    pub bucket: i64,
    /// The traces the spans tagged by a probabilistic sampler stand for
    /// (`1 / sampler.param` each, as Jaeger SDKs tag root spans).
    pub weighted: f64,
    /// Spans without such a tag.
    pub untagged: u64,
}

/// [`RootTraffic`] of every root operation and time bucket of
/// `bucket_ns` (positive) with spans since `since_ns`.
pub async fn root_traffic(
    engine: &QueryEngine,
    since_ns: i64,
    bucket_ns: i64,
) -> Result<Vec<RootTraffic>, QueryError> {
    let param = "try_cast(span_attributes['sampler.param'] AS DOUBLE)";
    let tagged = format!(
        "span_attributes['sampler.type'] = 'probabilistic' AND {param} > 0 AND {param} <= 1"
    );
    let sql = format!(
        "SELECT service_name AS service, name AS operation, \
         CAST(start_time_unix_nano / {bucket_ns} AS BIGINT) AS bucket, \
         CAST(coalesce(sum(CASE WHEN {tagged} THEN 1.0 / {param} END), 0) AS DOUBLE) AS weighted, \
         CAST(sum(CASE WHEN {tagged} THEN 0 ELSE 1 END) AS BIGINT) AS untagged \
         FROM spans WHERE parent_span_id IS NULL AND start_time_unix_nano >= {since_ns} \
         AND service_name IS NOT NULL AND name IS NOT NULL \
         GROUP BY 1, 2, 3"
    );
    let batches = engine.internal_sql(&sql, 1_000_000).await?;
    let mut out = Vec::new();
    for b in &batches {
        let as_type = |i: usize, to: &arrow::datatypes::DataType| {
            arrow::compute::cast(b.column(i), to)
                .map_err(|e| QueryError::Internal(format!("root traffic: {e}")))
        };
        use arrow::datatypes::DataType::{Float64, Int64, Utf8};
        let (service, operation) = (as_type(0, &Utf8)?, as_type(1, &Utf8)?);
        let bucket = as_type(2, &Int64)?;
        let (weighted, untagged) = (as_type(3, &Float64)?, as_type(4, &Int64)?);
        let bucket = bucket.as_primitive::<Int64Type>();
        let service = service.as_string::<i32>();
        let operation = operation.as_string::<i32>();
        let weighted = weighted.as_primitive::<Float64Type>();
        let untagged = untagged.as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            out.push(RootTraffic {
                service: service.value(r).to_string(),
                operation: operation.value(r).to_string(),
                bucket: bucket.value(r),
                weighted: weighted.value(r),
                untagged: u64::try_from(untagged.value(r)).unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// Service dependency edges of spans starting in `range`.
///
/// - Instrumented calls: a span whose parent is on another service gives an
///   edge parent service -> span's service; its errors and latency are the
///   child span's.
/// - Uninstrumented callees: a CLIENT or PRODUCER span with `peer.service`
///   (another service) and no child span on another service gives an edge
///   to `peer.service`, with the client span's errors and latency.
pub async fn dependencies(engine: &QueryEngine, range: TimeRange) -> Result<Vec<Edge>, QueryError> {
    let wide = range.widened(TRACE_MARGIN_NS).sql();
    let window = range.sql();
    let sql = format!(
        "SELECT p.service_name AS parent, c.service_name AS child, count(*) AS calls, \
           sum(CASE WHEN c.status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST(c.duration_ns AS DOUBLE)) AS p50, \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY CAST(c.duration_ns AS DOUBLE)) AS p99, \
           false AS uninstrumented \
         FROM (SELECT trace_id, parent_span_id, service_name, duration_ns, status_code FROM spans \
               WHERE {window} AND parent_span_id IS NOT NULL) c \
         JOIN (SELECT trace_id, span_id, service_name FROM spans WHERE {wide}) p \
           ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id \
         WHERE c.service_name <> p.service_name \
         GROUP BY p.service_name, c.service_name \
         UNION ALL \
         SELECT c.service_name AS parent, c.peer_service AS child, count(*) AS calls, \
           sum(CASE WHEN c.status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors, \
           percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST(c.duration_ns AS DOUBLE)) AS p50, \
           percentile_cont(0.99) WITHIN GROUP (ORDER BY CAST(c.duration_ns AS DOUBLE)) AS p99, \
           true AS uninstrumented \
         FROM (SELECT trace_id, span_id, service_name, peer_service, duration_ns, status_code FROM spans \
               WHERE {window} AND kind IN ('CLIENT', 'PRODUCER') AND peer_service IS NOT NULL \
                 AND peer_service <> service_name) c \
         LEFT ANTI JOIN (SELECT trace_id, parent_span_id, service_name FROM spans WHERE {wide}) k \
           ON k.trace_id = c.trace_id AND k.parent_span_id = c.span_id AND k.service_name <> c.service_name \
         GROUP BY c.service_name, c.peer_service"
    );
    let batches = engine.internal_sql(&sql, 1_000_000).await?;
    let mut edges = edges_of(&batches);
    edges.sort_by(|a, b| {
        (&a.parent, &a.child, a.uninstrumented).cmp(&(&b.parent, &b.child, b.uninstrumented))
    });
    Ok(edges)
}

fn edges_of(batches: &[RecordBatch]) -> Vec<Edge> {
    let mut out = Vec::new();
    for b in batches {
        let text = |i: usize| b.column(i).as_string::<i32>();
        let int = |i: usize| b.column(i).as_primitive::<Int64Type>();
        let float = |i: usize| b.column(i).as_primitive::<Float64Type>();
        let flag = b.column(6).as_boolean();
        for row in 0..b.num_rows() {
            if text(0).is_null(row) || text(1).is_null(row) {
                continue;
            }
            out.push(Edge {
                parent: text(0).value(row).to_string(),
                child: text(1).value(row).to_string(),
                call_count: int(2).value(row),
                error_count: int(3).value(row),
                p50_ns: float(4).value(row),
                p99_ns: float(5).value(row),
                uninstrumented: flag.value(row),
            });
        }
    }
    out
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsJson {
    pub avg: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl From<Stats> for StatsJson {
    fn from(s: Stats) -> Self {
        let z = |v: f64| if v.is_nan() { 0.0 } else { v };
        Self {
            avg: z(s.avg),
            p50: z(s.p50),
            p95: z(s.p95),
            p99: z(s.p99),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartJson {
    pub service: String,
    pub operation: String,
    /// Requests in which it was on the critical path.
    pub request_count: usize,
    /// Share of each request's critical path (0 to 1).
    pub share: StatsJson,
    /// Critical-path time in ns per request.
    pub critical_path_ns: StatsJson,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrossTraceJson {
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    pub traces_analysed: u64,
    /// True when more traces matched than `limit`: the newest were analysed.
    pub truncated: bool,
    pub request_count: usize,
    pub duration_ns: StatsJson,
    pub parts: Vec<PartJson>,
}

/// Where the latency of `service` (`operation`) requests goes, over the
/// newest `limit` traces in `range` that contain one. A request is a span of
/// the service entered from outside it (no parent, or a parent on another
/// service); its critical path is split by service and operation.
pub async fn cross_trace(
    engine: &QueryEngine,
    range: TimeRange,
    service: &str,
    operation: Option<&str>,
    limit: usize,
) -> Result<CrossTraceJson, SearchError> {
    require_service(engine, service, range).await?;
    let mut matching = format!("{} AND service_name = {}", range.sql(), quote(service));
    if let Some(op) = operation {
        matching.push_str(&format!(" AND name = {}", quote(op)));
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM spans WHERE {} AND trace_id IN \
           (SELECT trace_id FROM spans WHERE {matching} GROUP BY trace_id \
            ORDER BY max(start_time_unix_nano) DESC, trace_id LIMIT {})",
        range.widened(TRACE_MARGIN_NS).sql(),
        limit + 1
    );
    let batches = engine.internal_sql(&sql, MAX_SPANS).await?;
    let mut traces = fetch::group_by_trace(&batches)?;
    let truncated = traces.len() > limit;
    if truncated {
        // The newest `limit`: drop the trace whose latest span is oldest.
        let oldest = traces
            .iter()
            .enumerate()
            .min_by_key(|(_, (id, spans))| {
                let newest_match = spans
                    .iter()
                    .filter(|s| {
                        &*s.service == service
                            && operation.is_none_or(|op| &*s.name == op)
                            && (range.start..range.end).contains(&s.start)
                    })
                    .map(|s| s.start)
                    .max();
                (newest_match, std::cmp::Reverse(*id))
            })
            .map(|(i, _)| i)
            .expect("more than limit traces");
        traces.swap_remove(oldest);
    }
    let mut acc = CrossTrace::default();
    for (_, spans) in traces {
        crate::executor::checkpoint()?;
        acc.add_trace(&Tree::new(spans), service, operation);
    }
    let report = acc.finish();
    Ok(CrossTraceJson {
        service: service.to_string(),
        operation: operation.map(str::to_string),
        traces_analysed: report.traces,
        truncated,
        request_count: report.requests,
        duration_ns: report.duration_ns.into(),
        parts: report
            .parts
            .into_iter()
            .map(|p| PartJson {
                service: p.service.to_string(),
                operation: p.operation.to_string(),
                request_count: p.requests,
                share: p.share.into(),
                critical_path_ns: p.time_ns.into(),
            })
            .collect(),
    })
}
