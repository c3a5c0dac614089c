//! Query-string parameters of the native API: time ranges, durations,
//! limits and span conditions, each parsed with an error that names the
//! parameter. Unknown parameters are refused so that a typo is not silently
//! ignored.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use crate::duration::parse_nanos;

/// A parameter error: the message is returned with status 400.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, ParamError> {
    Err(ParamError(message.into()))
}

/// The parameters of one request, consumed by name.
pub struct Params {
    pairs: Vec<(String, String)>,
    known: BTreeSet<&'static str>,
}

impl Params {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self {
            pairs,
            known: BTreeSet::new(),
        }
    }

    /// The parameters of a raw query string (`a=1&b=2`).
    pub fn from_query(query: Option<String>) -> Self {
        Self::new(
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// All values of `name`, in order.
    pub fn all(&mut self, name: &'static str) -> Vec<String> {
        self.known.insert(name);
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The value of `name`; empty values count as absent. Refuses repeats.
    pub fn one(&mut self, name: &'static str) -> Result<Option<String>, ParamError> {
        let mut values = self.all(name).into_iter().filter(|v| !v.is_empty());
        let value = values.next();
        if values.next().is_some() {
            return err(format!("parameter {name} is given more than once"));
        }
        Ok(value)
    }

    pub fn duration(&mut self, name: &'static str) -> Result<Option<i64>, ParamError> {
        self.one(name)?
            .map(|v| parse_nanos(&v).map_err(|e| ParamError(format!("{name}: {e}"))))
            .transpose()
    }

    /// An integer in `1..=max`, `default` when absent.
    pub fn limit(
        &mut self,
        name: &'static str,
        default: usize,
        max: usize,
    ) -> Result<usize, ParamError> {
        match self.one(name)? {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => err(format!(
                    "{name} must be an integer from 1 to {max}, got {v:?}"
                )),
            },
        }
    }

    /// `start`, `end` and `lookback`: see [`TimeRange`].
    pub fn time_range(&mut self, default_lookback_ns: i64) -> Result<TimeRange, ParamError> {
        let now = Utc::now()
            .timestamp_nanos_opt()
            .expect("the clock is within the nanosecond range");
        let end = match self.one("end")? {
            Some(v) => parse_time(&v, now).map_err(|e| ParamError(format!("end: {e}")))?,
            None => now,
        };
        let lookback = self.duration("lookback")?;
        let start = match self.one("start")? {
            Some(_) if lookback.is_some() => {
                return err("give start or lookback, not both");
            }
            Some(v) => parse_time(&v, now).map_err(|e| ParamError(format!("start: {e}")))?,
            None => end.saturating_sub(lookback.unwrap_or(default_lookback_ns)),
        };
        if start >= end {
            return err(format!(
                "the time range is empty: start ({}) is not before end ({})",
                format_ns(start),
                format_ns(end)
            ));
        }
        Ok(TimeRange { start, end })
    }

    /// Span conditions: `service`, `operation`, `kind`, `status`, repeated
    /// `attr`, `minDuration`, `maxDuration`.
    pub fn span_filter(&mut self) -> Result<SpanFilter, ParamError> {
        let service = self.one("service")?;
        let operation = self.one("operation")?;
        let kinds = self.kinds("kind")?;
        let status = match self.one("status")?.as_deref() {
            None => None,
            Some("error") => Some(StatusFilter::Error),
            Some("ok") => Some(StatusFilter::Ok),
            Some(other) => return err(format!("status must be error or ok, got {other:?}")),
        };
        let attributes = self
            .all("attr")
            .iter()
            .filter(|v| !v.is_empty())
            .map(|v| AttributeCondition::parse(v))
            .collect::<Result<_, _>>()?;
        let min_duration = self.duration("minDuration")?;
        let max_duration = self.duration("maxDuration")?;
        if let (Some(min), Some(max)) = (min_duration, max_duration)
            && min > max
        {
            return err("minDuration is greater than maxDuration");
        }
        Ok(SpanFilter {
            service,
            operation,
            kinds,
            status,
            attributes,
            min_duration,
            max_duration,
            sql_conditions: Vec::new(),
        })
    }

    /// Comma-separated span kinds (`server,consumer`), case-insensitive.
    pub fn kinds(&mut self, name: &'static str) -> Result<Vec<&'static str>, ParamError> {
        let Some(v) = self.one(name)? else {
            return Ok(Vec::new());
        };
        v.split(',')
            .map(|k| {
                let k = k.trim().to_ascii_uppercase();
                let k = k.strip_prefix("SPAN_KIND_").unwrap_or(&k);
                SpanKind::from_str_name(&format!("SPAN_KIND_{k}"))
                    .map(|kind| kind.as_str_name().trim_start_matches("SPAN_KIND_"))
                    .ok_or_else(|| {
                        ParamError(format!(
                            "{name}: unknown span kind {k:?} (one of server, client, producer, consumer, internal, unspecified)"
                        ))
                    })
            })
            .collect()
    }

    /// Refuses parameters nobody asked for.
    pub fn finish(self) -> Result<(), ParamError> {
        let unknown: BTreeSet<&str> = self
            .pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !self.known.contains(k))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let expected: Vec<_> = self.known.iter().copied().collect();
        err(format!(
            "unknown parameter{} {} (this endpoint takes: {})",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.into_iter().collect::<Vec<_>>().join(", "),
            expected.join(", ")
        ))
    }
}

/// A half-open range `[start, end)` of Unix nanoseconds. `start` and `end`
/// are RFC 3339 times, Unix seconds (`1763740800` or `1763740800.25`),
/// `now`, or `now-<duration>`; `end` defaults to now and `start` to
/// `end - lookback` (lookback defaults per endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: i64,
    pub end: i64,
}

impl TimeRange {
    /// The range widened by `margin` on both sides.
    pub fn widened(&self, margin: i64) -> Self {
        Self {
            start: self.start.saturating_sub(margin),
            end: self.end.saturating_add(margin),
        }
    }
}

/// RFC 3339 rendering of Unix nanoseconds.
pub fn format_ns(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn parse_time(v: &str, now: i64) -> Result<i64, String> {
    if v == "now" {
        return Ok(now);
    }
    if let Some(ago) = v.strip_prefix("now-") {
        return Ok(now.saturating_sub(parse_nanos(ago).map_err(|e| e.to_string())?));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return t
            .timestamp_nanos_opt()
            .ok_or_else(|| format!("{v:?} is out of range"));
    }
    match v.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..1e11).contains(&secs) => {
            Ok((secs * 1e9).round() as i64)
        }
        _ => Err(format!(
            "{v:?} is not a time: use RFC 3339 (2026-11-21T15:00:00Z), Unix seconds, now or now-1h"
        )),
    }
}

/// `error`: status ERROR; `ok`: anything else (OK or UNSET).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Error,
    Ok,
}

/// Conditions that one span must meet.
#[derive(Debug, Clone, Default)]
pub struct SpanFilter {
    pub service: Option<String>,
    pub operation: Option<String>,
    /// Any of these kinds; empty for all.
    pub kinds: Vec<&'static str>,
    pub status: Option<StatusFilter>,
    pub attributes: Vec<AttributeCondition>,
    pub min_duration: Option<i64>,
    pub max_duration: Option<i64>,
    /// Further SQL conditions written by a compatibility API, for semantics
    /// the fields above do not express.
    pub sql_conditions: Vec<String>,
}

/// Which attributes a condition looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Span,
    Resource,
    /// The span's attribute, else the resource's.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Match,
    NotMatch,
}

/// `[span.|resource.]key<op>value` with op one of `=`, `!=`, `>`, `>=`, `<`,
/// `<=`, `=~` (regular expression, unanchored), `!~`.
#[derive(Debug, Clone)]
pub struct AttributeCondition {
    pub scope: Scope,
    pub key: String,
    pub op: Op,
    pub value: String,
}

impl AttributeCondition {
    pub fn parse(text: &str) -> Result<Self, ParamError> {
        let bad = |why: &str| {
            ParamError(format!(
                "attr {text:?}: {why} (expected key=value, key!=value, key>n, key>=n, key<n, key<=n, key=~regex or key!~regex; prefix span. or resource. to pick one side)"
            ))
        };
        let at = text
            .find(['=', '!', '<', '>'])
            .ok_or_else(|| bad("no operator"))?;
        let (key, rest) = text.split_at(at);
        let (op, len) = match rest.as_bytes() {
            [b'=', b'~', ..] => (Op::Match, 2),
            [b'!', b'~', ..] => (Op::NotMatch, 2),
            [b'!', b'=', ..] => (Op::Ne, 2),
            [b'>', b'=', ..] => (Op::Ge, 2),
            [b'<', b'=', ..] => (Op::Le, 2),
            [b'=', ..] => (Op::Eq, 1),
            [b'>', ..] => (Op::Gt, 1),
            [b'<', ..] => (Op::Lt, 1),
            _ => return Err(bad("unknown operator")),
        };
        let value = rest[len..].to_string();
        let key = key.trim();
        let (scope, key) = if let Some(k) = key.strip_prefix("span.") {
            (Scope::Span, k)
        } else if let Some(k) = key.strip_prefix("resource.") {
            (Scope::Resource, k)
        } else {
            (Scope::Any, key)
        };
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        match op {
            Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                if !value.trim().parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(bad("a numeric comparison needs a number"));
                }
            }
            Op::Match | Op::NotMatch => {
                if let Err(e) = regex::Regex::new(&value) {
                    return Err(bad(&format!("invalid regular expression: {e}")));
                }
            }
            Op::Eq | Op::Ne => {}
        }
        Ok(Self {
            scope,
            key: key.to_string(),
            op,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &[(&str, &str)]) -> Params {
        Params::new(
            q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn time_ranges() {
        let r = params(&[("start", "2026-11-21T10:00:00Z"), ("end", "1795258800.5")])
            .time_range(3_600_000_000_000)
            .unwrap();
        assert_eq!(r.start, 1_795_255_200_000_000_000);
        assert_eq!(r.end, 1_795_258_800_500_000_000);
        let r = params(&[("lookback", "15m")]).time_range(1).unwrap();
        assert_eq!(r.end - r.start, 900_000_000_000);
        let r = params(&[("start", "now-2h"), ("end", "now-1h")])
            .time_range(1)
            .unwrap();
        assert!((r.end - r.start - 3_600_000_000_000).abs() < 1_000_000_000);
        for bad in [
            vec![("start", "yesterday")],
            vec![("start", "now"), ("end", "now-1h")],
            vec![("start", "now-1h"), ("lookback", "1h")],
            vec![("lookback", "an hour")],
        ] {
            assert!(params(&bad).time_range(1).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attribute_conditions() {
        let c = AttributeCondition::parse("span.http.route=/users/{id}").unwrap();
        assert_eq!(
            (c.scope, c.op, c.key.as_str(), c.value.as_str()),
            (Scope::Span, Op::Eq, "http.route", "/users/{id}")
        );
        let c = AttributeCondition::parse("http.response.status_code>=500").unwrap();
        assert_eq!(
            (c.scope, c.op, c.key.as_str(), c.value.as_str()),
            (Scope::Any, Op::Ge, "http.response.status_code", "500")
        );
        let c = AttributeCondition::parse("resource.k8s.pod.name=~^api-.*").unwrap();
        assert_eq!(
            (c.scope, c.op, c.key.as_str(), c.value.as_str()),
            (Scope::Resource, Op::Match, "k8s.pod.name", "^api-.*")
        );
        let c = AttributeCondition::parse("user!=o'brien").unwrap();
        assert_eq!((c.op, c.value.as_str()), (Op::Ne, "o'brien"));
        for bad in ["novalue", "=x", "a>fast", "a=~(unclosed", "span.=1"] {
            assert!(AttributeCondition::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        let mut p = params(&[("service", "a"), ("servcie", "b")]);
        p.one("service").unwrap();
        let e = p.finish().unwrap_err().0;
        assert!(e.contains("servcie") && e.contains("service"), "{e}");
        assert!(
            params(&[("limit", "1"), ("limit", "2")])
                .one("limit")
                .is_err()
        );
        assert!(params(&[("limit", "0")]).limit("limit", 20, 100).is_err());
        assert_eq!(
            params(&[("kind", "server,SPAN_KIND_CONSUMER")])
                .kinds("kind")
                .unwrap(),
            ["SERVER", "CONSUMER"]
        );
        assert!(params(&[("kind", "serverr")]).kinds("kind").is_err());
    }
}
