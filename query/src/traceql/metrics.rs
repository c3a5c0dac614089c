//! TraceQL metrics (`{ filter } | rate() by (...)`, Tempo's
//! `/api/metrics/query_range` and `/api/metrics/query`) as one DataFusion
//! aggregation over the spans table: the filter becomes a SQL condition
//! that is true for exactly the spans the TraceQL filter matches, each span
//! falls into one interval of the window, and the function is an aggregate
//! grouped by the `by (...)` labels and the interval. Exemplars (per
//! series and interval, the span with the largest measured value: the
//! slowest for counting functions and durations, the smallest value for
//! `min_over_time`) come out of the same aggregation.
//!
//! Intervals follow Tempo: a range query's start is aligned down and its
//! end up to the step, one more interval is put before the start, and the
//! sample at `T` covers the spans that started in `(T - step, T]`. An
//! instant query has one interval, `[start, end]`.
//!
//! Where Tempo estimates, tracelake computes: `quantile_over_time` is the
//! exact quantile (linear interpolation between the two nearest values, as
//! SQL's `percentile_cont`), not an estimate from power-of-two buckets;
//! `histogram_over_time` buckets as Tempo does (the next power of two of
//! the nanoseconds, labelled `__bucket` in seconds).

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use tracelake_protocols::params::TimeRange;
use tracelake_protocols::traceql::{
    Cmp, Cond, Field, Function, Literal, Metrics, Op, Query, Relation, RelationKind, RelationMode,
};

use crate::engine::{QueryEngine, QueryError};
use crate::fetch::TRACE_MARGIN_NS;
use crate::sql::{Sql, binary, quote};

/// At most this many intervals per series (Prometheus' limit).
pub const MAX_INTERVALS: i64 = 11_000;
/// How many levels a descendant or ancestor walk goes at most (it also
/// ends a parent cycle).
pub const MAX_DEPTH: i64 = 256;

/// The latest time a window may reach (2100-01-01), nanoseconds: what
/// keeps its arithmetic far from overflowing.
pub const MAX_TIME: i64 = 4_102_444_800_000_000_000;

/// At most this many samples are returned for counting functions (which
/// fill empty intervals): beyond, fewer series and a partial answer.
const MAX_SAMPLES: i64 = 10_000_000;

/// At most this many (series, interval) groups are aggregated.
const MAX_GROUPS: usize = 2_000_000;

/// A part of a query that metrics cannot compute: a 400 naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// The time window of a metrics query, in Unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Spans that started after `lower` and at or before `upper` count.
    lower: i64,
    upper: i64,
    step: i64,
    instant: bool,
}

impl Window {
    /// A range query from `start` to `end` by `step`, aligned as Tempo
    /// aligns it; refused unless `0 <= start < end <= MAX_TIME`, `0 <
    /// step <= MAX_TIME` and the window has at most [`MAX_INTERVALS`].
    pub fn range(start: i64, end: i64, step: i64) -> Result<Window, Unsupported> {
        bounds(start, end)?;
        if !(1..=MAX_TIME).contains(&step) {
            return Err(Unsupported(format!(
                "step must be from 1ns to 130 years, got {step}ns"
            )));
        }
        let window = Window::aligned(start, end, step);
        if window.intervals() > MAX_INTERVALS {
            return Err(Unsupported(format!(
                "start to end by step gives {} intervals: at most {MAX_INTERVALS} are allowed; use a larger step",
                window.intervals()
            )));
        }
        Ok(window)
    }

    fn aligned(start: i64, end: i64, step: i64) -> Window {
        let first = start - start.rem_euclid(step);
        let last = match end.rem_euclid(step) {
            0 => end,
            r => end + (step - r),
        };
        Window {
            lower: first - step,
            upper: last,
            step,
            instant: false,
        }
    }

    /// An instant query over `[start, end]` (bounded as [`Window::range`]).
    pub fn instant(start: i64, end: i64) -> Result<Window, Unsupported> {
        bounds(start, end)?;
        Ok(Window {
            lower: start - 1,
            upper: end,
            step: end - start + 1,
            instant: true,
        })
    }

    /// How many intervals (samples per series) the window has.
    pub fn intervals(&self) -> i64 {
        (self.upper - self.lower) / self.step
    }

    /// The timestamp of interval `k`, nanoseconds: its end.
    pub fn timestamp(&self, k: i64) -> i64 {
        if self.instant {
            self.upper
        } else {
            self.lower + (k + 1) * self.step
        }
    }

    /// Seconds per interval (what `rate()` divides by).
    fn seconds(&self) -> f64 {
        if self.instant {
            (self.upper - self.lower - 1) as f64 / 1e9
        } else {
            self.step as f64 / 1e9
        }
    }

    /// The spans' time range.
    fn spans(&self) -> TimeRange {
        TimeRange {
            start: self.lower + 1,
            end: self.upper + 1,
        }
    }
}

/// Refuses a window outside 1970..2100 or ending before it starts.
pub fn bounds(start: i64, end: i64) -> Result<(), Unsupported> {
    if !(0..=MAX_TIME).contains(&start) || !(0..=MAX_TIME).contains(&end) {
        return Err(Unsupported(
            "start and end must be between 1970 and 2100".into(),
        ));
    }
    if end <= start {
        return Err(Unsupported("end must be after start".into()));
    }
    Ok(())
}

/// A series label's value, typed as the attribute was.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum LabelValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// A span that stands for an interval of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub value: f64,
    /// The span's start, nanoseconds.
    pub timestamp: i64,
}

/// One series: its labels and a value per interval that has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, LabelValue)>,
    /// (interval, value), oldest first.
    pub samples: Vec<(i64, f64)>,
    pub exemplars: Vec<Exemplar>,
}

/// What a metrics query returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub series: Vec<Series>,
    /// Spans aggregated.
    pub spans: u64,
    /// Series left out by `max_series` (the answer is partial then).
    pub dropped_series: usize,
}

impl Answer {
    /// Series the query had, returned or not.
    pub fn series_total(&self) -> usize {
        self.series.len() + self.dropped_series
    }
}

/// Options of a metrics query.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Exemplars to return at most, over all series.
    pub exemplars: usize,
    /// Series to return at most.
    pub max_series: usize,
}

/// Runs a metrics query over `window`.
pub async fn run(
    engine: &QueryEngine,
    query: &Metrics,
    window: Window,
    options: Options,
) -> Result<Answer, RunError> {
    let plan = Plan::new(query, window)?;
    let batches = engine
        .internal_sql(&plan.sql, MAX_GROUPS)
        .await
        .map_err(RunError::Query)?;
    plan.read(&batches, options).map_err(RunError::Query)
}

/// Why a metrics query failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    #[error(transparent)]
    Query(QueryError),
}

/// The SQL of a metrics query and how to read its rows.
#[derive(Debug)]
pub struct Plan {
    pub sql: String,
    function: Function,
    labels: Vec<String>,
    window: Window,
}

/// SQL of a measured field's value as a float (`NULL` when missing or not
/// a number): durations in seconds, as Tempo reports them.
fn value_sql(field: &Field) -> Result<String, Unsupported> {
    Ok(match field {
        Field::Duration => "CAST(duration_ns AS DOUBLE) / 1e9".to_string(),
        Field::SpanAttr(_) | Field::ResourceAttr(_) | Field::AnyAttr(_) => {
            format!("try_cast({} AS DOUBLE)", attribute_sql(field).0)
        }
        other => {
            return Err(Unsupported(format!(
                "{other:?} cannot be measured: use duration or a numeric attribute"
            )));
        }
    })
}

/// SQL of an attribute's text and of its type code.
fn attribute_sql(field: &Field) -> (String, String) {
    let pair = |scope: &str, k: &str| {
        (
            format!("{scope}_attributes[{}]", quote(k)),
            format!("{scope}_attribute_types[{}]", quote(k)),
        )
    };
    match field {
        Field::SpanAttr(k) => pair("span", k),
        Field::ResourceAttr(k) if k == "service.name" => {
            ("service_name".into(), "CAST(NULL AS TINYINT)".into())
        }
        Field::ResourceAttr(k) => pair("resource", k),
        Field::AnyAttr(k) => {
            let (sv, st) = pair("span", k);
            let (rv, rt) = pair("resource", k);
            (
                format!("coalesce({sv}, {rv})"),
                format!("CASE WHEN {sv} IS NOT NULL THEN {st} ELSE {rt} END"),
            )
        }
        _ => unreachable!("attribute_sql of an intrinsic"),
    }
}

/// SQL of a `by (...)` label's text and type code.
pub(crate) fn label_sql(text: &str, field: &Field) -> Result<(String, String), Unsupported> {
    let untyped = |v: &str| (v.to_string(), "CAST(NULL AS TINYINT)".to_string());
    Ok(match field {
        Field::SpanAttr(_) | Field::ResourceAttr(_) | Field::AnyAttr(_) => attribute_sql(field),
        Field::Name => untyped("name"),
        Field::Status => untyped("lower(coalesce(status_code, 'UNSET'))"),
        Field::Kind => untyped("lower(kind)"),
        Field::StatusMessage => untyped("status_message"),
        Field::ScopeName => untyped("scope_name"),
        Field::ScopeVersion => untyped("scope_version"),
        _ => {
            return Err(Unsupported(format!(
                "by ({text}) is not supported: group by attributes, name, status, kind, statusMessage or instrumentation:name/version"
            )));
        }
    })
}

/// SQL true for exactly the spans that `query` matches, within traces
/// whose spans lie in `around`.
pub fn matched_sql(query: &Query, around: TimeRange) -> Result<String, Unsupported> {
    Ok(match query {
        Query::Spanset(c) => cond_sql(c, around)?,
        Query::Or(a, b) => format!(
            "(({}) OR ({}))",
            matched_sql(a, around)?,
            matched_sql(b, around)?
        ),
        Query::And(a, b) => format!(
            "({} AND {} AND (({}) OR ({})))",
            has_sql(a, around)?,
            has_sql(b, around)?,
            matched_sql(a, around)?,
            matched_sql(b, around)?
        ),
        Query::Structural(relation, a, b) => structural_sql(*relation, a, b, around)?,
    })
}

/// A structural operator as a correlated subquery: the right side's spans
/// with (`!`: without) a span of the left side as parent, child or sibling,
/// or as ancestor or descendant (a recursive walk of at most
/// [`MAX_DEPTH`] levels). Union forms return spans of both sides and are
/// refused, as is an operand that is itself structural (its subquery would
/// not know its span).
fn structural_sql(
    relation: Relation,
    a: &Query,
    b: &Query,
    around: TimeRange,
) -> Result<String, Unsupported> {
    let refuse = |what: &str| {
        Err(Unsupported(format!(
            "{what} are not supported in metrics queries: use >, >>, <, <<, ~ or their ! forms between spansets"
        )))
    };
    if relation.mode == RelationMode::Union {
        return refuse("union structural operators (&>, &>>, &<, &<<, &~)");
    }
    fn has_structural(q: &Query) -> bool {
        match q {
            Query::Spanset(_) => false,
            Query::Structural(..) => true,
            Query::And(a, b) | Query::Or(a, b) => has_structural(a) || has_structural(b),
        }
    }
    if has_structural(a) || has_structural(b) {
        return refuse("nested or chained structural operators");
    }
    let left = matched_sql(a, around)?;
    let (from, to) = (around.start, around.end);
    let within =
        |t: &str| format!("{t}.start_time_unix_nano >= {from} AND {t}.start_time_unix_nano < {to}");
    // Descendants (ancestors) of the left side's spans, walked up to
    // MAX_DEPTH levels from their children (parents).
    let walk = |down: bool| {
        let (next, prev) = if down {
            (
                "c.parent_span_id = l.span_id",
                "c.parent_span_id = d.span_id",
            )
        } else {
            (
                "c.span_id = l.parent_span_id",
                "c.span_id = d.parent_span_id",
            )
        };
        format!(
            "EXISTS (WITH RECURSIVE d(trace_id, span_id, parent_span_id, depth) AS (\
             SELECT c.trace_id, c.span_id, c.parent_span_id, 1 FROM spans c JOIN \
             (SELECT trace_id, span_id, parent_span_id FROM spans WHERE {range} AND ({left})) l \
             ON c.trace_id = l.trace_id AND {next} WHERE {c_within} \
             UNION SELECT c.trace_id, c.span_id, c.parent_span_id, d.depth + 1 FROM spans c JOIN d \
             ON c.trace_id = d.trace_id AND {prev} WHERE {c_within} AND d.depth < {MAX_DEPTH}) \
             SELECT 1 FROM d WHERE d.trace_id = spans.trace_id AND d.span_id = spans.span_id)",
            range = around.sql(),
            c_within = within("c"),
        )
    };
    // How the left side's span `o` relates to the outer span; siblings
    // need the parent present (an orphan has no siblings, as in search).
    let link = match relation.kind {
        RelationKind::Child => "o.span_id = spans.parent_span_id".to_string(),
        RelationKind::Parent => "o.parent_span_id = spans.span_id".to_string(),
        RelationKind::Sibling => format!(
            "o.parent_span_id = spans.parent_span_id AND o.span_id <> spans.span_id AND EXISTS \
             (SELECT 1 FROM spans pp WHERE {} AND pp.trace_id = o.trace_id AND pp.span_id = o.parent_span_id)",
            within("pp")
        ),
        RelationKind::Descendant | RelationKind::Ancestor => String::new(),
    };
    let exists = match relation.kind {
        RelationKind::Descendant => walk(true),
        RelationKind::Ancestor => walk(false),
        _ => format!(
            "EXISTS (SELECT 1 FROM spans o WHERE {} AND o.trace_id = spans.trace_id AND {link} AND ({left}))",
            within("o"),
        ),
    };
    let not = if relation.mode == RelationMode::Not {
        "NOT "
    } else {
        ""
    };
    Ok(format!("(({}) AND {not}{exists})", matched_sql(b, around)?))
}

/// SQL true for the spans of traces in which `query` matches a span.
fn has_sql(query: &Query, around: TimeRange) -> Result<String, Unsupported> {
    Ok(match query {
        Query::Or(a, b) => format!("({} OR {})", has_sql(a, around)?, has_sql(b, around)?),
        Query::And(a, b) => format!("({} AND {})", has_sql(a, around)?, has_sql(b, around)?),
        _ => format!(
            "trace_id IN (SELECT trace_id FROM spans WHERE {} AND {})",
            around.sql(),
            matched_sql(query, around)?
        ),
    })
}

/// A spanset's condition, trace-level comparisons included (as
/// subqueries over the trace's spans).
fn cond_sql(cond: &Cond, around: TimeRange) -> Result<String, Unsupported> {
    Ok(match cond {
        Cond::True => "TRUE".into(),
        Cond::And(a, b) => format!("({} AND {})", cond_sql(a, around)?, cond_sql(b, around)?),
        Cond::Or(a, b) => format!("({} OR {})", cond_sql(a, around)?, cond_sql(b, around)?),
        Cond::Cmp(c) if !c.field.is_trace_level() => c.sql(),
        Cond::Cmp(c) => trace_cmp_sql(c, around),
    })
}

fn trace_cmp_sql(c: &Cmp, around: TimeRange) -> String {
    let root = |field: Field| {
        let on_root = Cmp {
            field,
            op: c.op,
            value: c.value.clone(),
        };
        format!(
            "trace_id IN (SELECT trace_id FROM spans WHERE {} AND parent_span_id IS NULL AND {})",
            around.sql(),
            on_root.sql()
        )
    };
    let op = match c.op {
        Op::Eq => "=",
        Op::Ne => "<>",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Match | Op::NotMatch => "",
    };
    match &c.field {
        Field::RootName => root(Field::Name),
        Field::RootService => root(Field::ResourceAttr("service.name".into())),
        Field::TraceDuration => match c.value {
            Literal::Duration(d) | Literal::Int(d) if !op.is_empty() => format!(
                "trace_id IN (SELECT trace_id FROM spans WHERE {} GROUP BY trace_id \
                 HAVING max(start_time_unix_nano + duration_ns) - min(start_time_unix_nano) {op} {d})",
                around.sql()
            ),
            _ => "FALSE".into(),
        },
        Field::TraceId => match (&c.value, c.op) {
            (Literal::Str(s), Op::Eq | Op::Ne) => match crate::trace::parse_trace_id(s) {
                Ok(id) => format!("trace_id {op} {}", binary(&id)),
                Err(_) => if c.op == Op::Eq { "FALSE" } else { "TRUE" }.into(),
            },
            _ => "FALSE".into(),
        },
        _ => "FALSE".into(),
    }
}

impl Plan {
    /// Compiles `query` over `window` to one SQL aggregation.
    pub fn new(query: &Metrics, window: Window) -> Result<Plan, Unsupported> {
        let spans = window.spans();
        let around = spans.widened(TRACE_MARGIN_NS);
        let filter = matched_sql(&query.filter, around)?;
        let mut inner = Vec::new();
        let mut keys = Vec::new();
        for (i, (text, field)) in query.by.iter().enumerate() {
            let (value, kind) = label_sql(text, field)?;
            inner.push(format!("CAST({value} AS VARCHAR) AS l{i}"));
            inner.push(format!("CAST({kind} AS TINYINT) AS t{i}"));
            keys.push(format!("l{i}"));
            keys.push(format!("t{i}"));
        }
        let function = query.function.clone();
        let measured = match function.field() {
            Some(f) => value_sql(f)?,
            None => value_sql(&Field::Duration)?,
        };
        inner.push(format!("{measured} AS v"));
        inner.push(if window.instant {
            "CAST(0 AS BIGINT) AS k".into()
        } else {
            format!(
                "CAST((start_time_unix_nano - ({}) - 1) / {} AS BIGINT) AS k",
                window.lower, window.step
            )
        });
        keys.push("k".into());
        if let Function::HistogramOverTime(field) = &function {
            let bucket = |v: &str| {
                format!("CASE WHEN {v} < 2 THEN -1.0 ELSE power(2.0, ceil(log2({v}))) END")
            };
            inner.push(match field {
                Field::Duration => "CASE WHEN duration_ns < 2 THEN -1.0 \
                     ELSE power(2.0, ceil(log2(CAST(duration_ns AS DOUBLE)))) / 1e9 END AS b"
                    .to_string(),
                _ => format!("{} AS b", bucket(&measured)),
            });
            keys.push("b".into());
        }
        inner.push("trace_id, span_id, start_time_unix_nano AS ts".into());
        // The span that stands for a group: the extreme one.
        let order = match function {
            Function::MinOverTime(_) => "v ASC",
            _ => "v DESC",
        };
        let mut aggregates = vec!["count(*) AS n".to_string()];
        match &function {
            Function::Rate | Function::CountOverTime | Function::HistogramOverTime(_) => {}
            Function::MinOverTime(_) => aggregates.push("min(v) AS x0".into()),
            Function::MaxOverTime(_) => aggregates.push("max(v) AS x0".into()),
            Function::AvgOverTime(_) => aggregates.push("avg(v) AS x0".into()),
            Function::SumOverTime(_) => aggregates.push("sum(v) AS x0".into()),
            Function::QuantileOverTime(_, qs) => {
                for (i, q) in qs.iter().enumerate() {
                    aggregates.push(format!(
                        "percentile_cont({q:?}) WITHIN GROUP (ORDER BY v) AS x{i}"
                    ));
                }
            }
        }
        for (name, expr) in [
            ("e_trace", "trace_id"),
            ("e_span", "span_id"),
            ("e_ts", "ts"),
            ("e_v", "v"),
        ] {
            aggregates.push(format!("first_value({expr} ORDER BY {order}) AS {name}"));
        }
        // Spans without the measured value do not count (as in Tempo),
        // except for counting functions, which measure nothing.
        let needs_value = function.field().is_some();
        let sql = format!(
            "SELECT {keys}, {aggregates} FROM (SELECT {inner} FROM spans WHERE {range} AND ({filter})){where_v} GROUP BY {keys}",
            keys = keys.join(", "),
            aggregates = aggregates.join(", "),
            inner = inner.join(", "),
            range = spans.sql(),
            where_v = if needs_value {
                " WHERE v IS NOT NULL"
            } else {
                ""
            },
        );
        Ok(Plan {
            sql,
            function,
            labels: query.by.iter().map(|(t, _)| t.clone()).collect(),
            window,
        })
    }

    /// The series of the aggregation's rows.
    pub fn read(&self, batches: &[RecordBatch], options: Options) -> Result<Answer, QueryError> {
        let intervals = self.window.intervals();
        let quantiles: &[f64] = match &self.function {
            Function::QuantileOverTime(_, qs) => qs,
            _ => &[],
        };
        // Labels -> interval -> (count, values, exemplar).
        type Row = (u64, Vec<f64>, Exemplar);
        let mut groups: BTreeMap<Vec<LabelKey>, BTreeMap<i64, Row>> = BTreeMap::new();
        let mut spans = 0;
        for batch in batches {
            let as_type = |name: &str, to: &DataType| -> Result<ArrayRef, QueryError> {
                let column = batch
                    .column_by_name(name)
                    .ok_or_else(|| QueryError::Internal(format!("metrics: no column {name}")))?;
                cast(column, to).map_err(|e| QueryError::Internal(format!("metrics: {name}: {e}")))
            };
            let text = |name: &str| as_type(name, &DataType::Utf8);
            let int = |name: &str| as_type(name, &DataType::Int64);
            let float = |name: &str| as_type(name, &DataType::Float64);
            let bin = |name: &str| as_type(name, &DataType::Binary);
            let mut label_cols = Vec::new();
            for i in 0..self.labels.len() {
                label_cols.push((text(&format!("l{i}"))?, int(&format!("t{i}"))?));
            }
            let bucket = match self.function {
                Function::HistogramOverTime(_) => Some(float("b")?),
                _ => None,
            };
            let k = int("k")?;
            let n = int("n")?;
            let measures = match self.function {
                Function::MinOverTime(_)
                | Function::MaxOverTime(_)
                | Function::AvgOverTime(_)
                | Function::SumOverTime(_) => 1,
                _ => quantiles.len(),
            };
            let xs: Vec<ArrayRef> = (0..measures)
                .map(|i| float(&format!("x{i}")))
                .collect::<Result<_, _>>()?;
            let (e_trace, e_span, e_ts, e_v) =
                (bin("e_trace")?, bin("e_span")?, int("e_ts")?, float("e_v")?);
            for r in 0..batch.num_rows() {
                let mut key = Vec::new();
                for (values, types) in &label_cols {
                    let values = values.as_string::<i32>();
                    let types = types.as_primitive::<Int64Type>();
                    key.push(if values.is_null(r) {
                        LabelKey::Missing
                    } else {
                        LabelKey::Value(typed(
                            values.value(r),
                            (!types.is_null(r)).then(|| types.value(r)),
                        ))
                    });
                }
                if let Some(b) = &bucket {
                    key.push(LabelKey::Value(LabelValue::Float(
                        b.as_primitive::<Float64Type>().value(r),
                    )));
                }
                let count = n.as_primitive::<Int64Type>().value(r) as u64;
                spans += count;
                let values: Vec<f64> = xs
                    .iter()
                    .map(|x| x.as_primitive::<Float64Type>().value(r))
                    .collect();
                let exemplar = Exemplar {
                    trace_id: e_trace.as_binary::<i32>().value(r).to_vec(),
                    span_id: e_span.as_binary::<i32>().value(r).to_vec(),
                    value: e_v.as_primitive::<Float64Type>().value(r),
                    timestamp: e_ts.as_primitive::<Int64Type>().value(r),
                };
                let interval = k.as_primitive::<Int64Type>().value(r);
                groups
                    .entry(key)
                    .or_default()
                    .insert(interval, (count, values, exemplar));
            }
        }
        let total = groups.len();
        let mut keep = total.min(options.max_series.max(1));
        // Counting functions fill every interval of every series: their
        // samples are bounded too.
        if matches!(
            self.function,
            Function::Rate | Function::CountOverTime | Function::HistogramOverTime(_)
        ) {
            let most = (MAX_SAMPLES / intervals.max(1)) as usize;
            keep = keep.min(most.max(1));
        }
        let per_series = options.exemplars.div_ceil(keep.max(1));
        let mut exemplars_left = options.exemplars;
        let mut series = Vec::new();
        for (key, rows) in groups.into_iter().take(keep) {
            // Missing values are left out; when every one is missing,
            // Tempo labels the first `nil`.
            let mut labels: Vec<(String, LabelValue)> = Vec::new();
            for (name, k) in self.labels.iter().zip(&key) {
                if let LabelKey::Value(v) = k {
                    labels.push((name.clone(), v.clone()));
                }
            }
            if let Some(first) = self.labels.first()
                && labels.is_empty()
            {
                labels.push((first.clone(), LabelValue::Str("nil".into())));
            }
            match (&self.function, key.last()) {
                (Function::HistogramOverTime(_), Some(LabelKey::Value(b))) => {
                    labels.push(("__bucket".into(), b.clone()));
                }
                (Function::QuantileOverTime(..), _) => {}
                _ if self.labels.is_empty() => labels.push((
                    "__name__".into(),
                    LabelValue::Str(self.function.name().into()),
                )),
                _ => {}
            }
            let mut exemplars = pick(&rows, per_series.min(exemplars_left));
            // Quantile series share their interval's exemplar: counted once.
            exemplars.truncate(exemplars_left);
            exemplars_left -= exemplars.len();
            match &self.function {
                Function::Rate | Function::CountOverTime | Function::HistogramOverTime(_) => {
                    let per = if self.function == Function::Rate {
                        1.0 / self.window.seconds()
                    } else {
                        1.0
                    };
                    let samples: Vec<(i64, f64)> = (0..intervals)
                        .map(|k| (k, rows.get(&k).map_or(0.0, |r| r.0 as f64 * per)))
                        .collect();
                    let exemplars = exemplars
                        .into_iter()
                        .map(|(k, e)| Exemplar {
                            value: if matches!(self.function, Function::HistogramOverTime(_)) {
                                e.value
                            } else {
                                rows[&k].0 as f64 * per
                            },
                            ..e
                        })
                        .collect();
                    series.push(Series {
                        labels,
                        samples,
                        exemplars,
                    });
                }
                Function::QuantileOverTime(_, qs) => {
                    // One series per quantile, labelled `p`; an exemplar
                    // goes to the quantile nearest to its value.
                    for (i, q) in qs.iter().enumerate() {
                        let mut labels = labels.clone();
                        labels.push(("p".into(), LabelValue::Float(*q)));
                        let samples = rows.iter().map(|(k, r)| (*k, r.1[i])).collect();
                        let exemplars = exemplars
                            .iter()
                            .filter(|(k, e)| {
                                let at = &rows[k].1;
                                nearest(at, e.value) == i
                            })
                            .map(|(_, e)| e.clone())
                            .collect();
                        series.push(Series {
                            labels,
                            samples,
                            exemplars,
                        });
                    }
                }
                _ => {
                    let samples = rows.iter().map(|(k, r)| (*k, r.1[0])).collect();
                    series.push(Series {
                        labels,
                        samples,
                        exemplars: exemplars.into_iter().map(|(_, e)| e).collect(),
                    });
                }
            }
        }
        Ok(Answer {
            series,
            spans,
            dropped_series: total - keep,
        })
    }
}

/// Up to `n` exemplars of a series, spread evenly over its intervals.
fn pick(rows: &BTreeMap<i64, (u64, Vec<f64>, Exemplar)>, n: usize) -> Vec<(i64, Exemplar)> {
    if n == 0 || rows.is_empty() {
        return Vec::new();
    }
    let every = rows.len().div_ceil(n);
    rows.iter()
        .step_by(every)
        .map(|(k, r)| (*k, r.2.clone()))
        .collect()
}

/// The index of the value nearest to `x`.
fn nearest(values: &[f64], x: f64) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if (v - x).abs() < (values[best] - x).abs() {
            best = i;
        }
    }
    best
}

/// A grouping value as a map key (floats by their bits, so that keys
/// order and compare totally).
#[derive(Debug, Clone, PartialEq)]
enum LabelKey {
    Missing,
    Value(LabelValue),
}

impl Eq for LabelKey {}

impl PartialOrd for LabelKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for LabelKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        fn rank(k: &LabelKey) -> (u8, String, i64, f64) {
            match k {
                LabelKey::Missing => (0, String::new(), 0, 0.0),
                LabelKey::Value(LabelValue::Bool(b)) => (1, String::new(), i64::from(*b), 0.0),
                LabelKey::Value(LabelValue::Int(i)) => (2, String::new(), *i, 0.0),
                LabelKey::Value(LabelValue::Float(f)) => (3, String::new(), 0, *f),
                LabelKey::Value(LabelValue::Str(s)) => (4, s.clone(), 0, 0.0),
            }
        }
        let (a, b) = (rank(self), rank(other));
        a.0.cmp(&b.0)
            .then_with(|| a.1.cmp(&b.1))
            .then_with(|| a.2.cmp(&b.2))
            .then_with(|| a.3.total_cmp(&b.3))
    }
}

/// A label's text as the type its attribute had (type codes of the
/// `*_attribute_types` maps: 1 bool, 2 int, 3 float).
pub(crate) fn typed(text: &str, code: Option<i64>) -> LabelValue {
    match code {
        Some(1) => LabelValue::Bool(text == "true"),
        Some(2) => text
            .parse()
            .map_or_else(|_| LabelValue::Str(text.into()), LabelValue::Int),
        Some(3) => text
            .parse()
            .map_or_else(|_| LabelValue::Str(text.into()), LabelValue::Float),
        _ => LabelValue::Str(text.into()),
    }
}

#[cfg(test)]
mod tests {
    use tracelake_protocols::traceql::parse_metrics;

    use super::*;

    #[test]
    fn windows_align_as_tempo_does() {
        // start 95 s, end 185 s, step 30 s: samples at 90, 120, 150, 180,
        // 210 s (one before the aligned start).
        let s = 1_000_000_000;
        let w = Window::range(95 * s, 185 * s, 30 * s).unwrap();
        assert_eq!(w.intervals(), 5);
        assert_eq!(
            (0..5).map(|k| w.timestamp(k) / s).collect::<Vec<_>>(),
            [90, 120, 150, 180, 210]
        );
        // A span at exactly 120 s is in the sample at 120 s; one just
        // after is in the next.
        let k = |t: i64| (t - w.lower - 1) / w.step;
        assert_eq!(k(120 * s), 1);
        assert_eq!(k(120 * s + 1), 2);
        assert_eq!(w.spans().start, 60 * s + 1);
        assert_eq!(w.spans().end, 210 * s + 1);
        let i = Window::instant(10 * s, 20 * s).unwrap();
        // Out of bounds: refused, never an overflow.
        for (a, b, st) in [
            (0, i64::MAX, s),
            (-5, 10, 1),
            (10, 5, 1),
            (0, 10 * s, 0),
            (0, 10 * s, i64::MAX),
            (0, MAX_TIME, 1),
        ] {
            assert!(Window::range(a, b, st).is_err(), "{a} {b} {st}");
        }
        assert!(Window::instant(0, i64::MAX).is_err());
        assert_eq!(
            (i.intervals(), i.timestamp(0), i.seconds()),
            (1, 20 * s, 10.0)
        );
    }

    #[test]
    fn unsupported_parts_are_named() {
        let w = Window::range(0, 60_000_000_000, 1_000_000_000).unwrap();
        for (q, needle) in [
            ("{} &> {} | rate()", "union structural"),
            ("{} > {} > {} | rate()", "chained structural"),
            ("({} > {} || {}) > {} | rate()", "nested or chained"),
            (
                "{} | rate() by (duration)",
                "by (duration) is not supported",
            ),
            ("{} | rate() by (traceDuration)", "by (traceDuration)"),
        ] {
            let e = Plan::new(&parse_metrics(q).unwrap(), w).unwrap_err();
            assert!(e.0.contains(needle), "{q}: {e}");
        }
    }

    #[test]
    fn spanset_operators_become_trace_conditions() {
        let around = TimeRange { start: 0, end: 10 };
        let q = tracelake_protocols::traceql::parse(r#"{ name = "a" } && { name = "b" }"#).unwrap();
        assert_eq!(
            matched_sql(&q, around).unwrap(),
            "(trace_id IN (SELECT trace_id FROM spans WHERE start_time_unix_nano >= 0 AND start_time_unix_nano < 10 AND name = 'a') \
             AND trace_id IN (SELECT trace_id FROM spans WHERE start_time_unix_nano >= 0 AND start_time_unix_nano < 10 AND name = 'b') \
             AND ((name = 'a') OR (name = 'b')))"
        );
        let q = tracelake_protocols::traceql::parse(r#"{ rootServiceName = "api" }"#).unwrap();
        assert!(
            matched_sql(&q, around)
                .unwrap()
                .contains("parent_span_id IS NULL AND service_name = 'api'")
        );
    }
}
