//! TraceQL span conditions as SQL over the spans table: what finds the
//! candidate spans of a search, before the trace-level parts are evaluated.

use tracelake_protocols::traceql::{Cmp, Cond, Field, Literal, Op};

use crate::sql::{Sql, quote};
use tracelake_schema::otlp::UNKNOWN_SERVICE;

/// The SQL operator of a TraceQL comparison operator.
fn op(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "<>",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Match => "~",
        Op::NotMatch => "!~",
    }
}

impl Sql for Cond {
    /// SQL that every span matching this condition meets (trace-level
    /// comparisons count as true): a superset, for finding candidates.
    fn sql(&self) -> String {
        match self {
            Cond::True => "TRUE".into(),
            Cond::And(a, b) => format!("({} AND {})", a.sql(), b.sql()),
            Cond::Or(a, b) => format!("({} OR {})", a.sql(), b.sql()),
            Cond::Cmp(c) if c.field.is_trace_level() => "TRUE".into(),
            Cond::Cmp(c) => c.sql(),
        }
    }
}

fn status_name(k: &str) -> String {
    k.to_ascii_uppercase()
}

impl Sql for Cmp {
    /// SQL for a span-level comparison (`FALSE` where the types cannot
    /// compare, as TraceQL matches nothing then).
    fn sql(&self) -> String {
        let op = op(self.op);
        let text = |column: &str| -> String {
            match (&self.value, self.op) {
                (Literal::Nil, Op::Eq) => format!("{column} IS NULL"),
                (Literal::Nil, Op::Ne) => format!("{column} IS NOT NULL"),
                (Literal::Nil, _) => "FALSE".into(),
                (Literal::Str(s), Op::Match | Op::NotMatch) => {
                    format!("{column} {op} {}", quote(&format!("^(?:{s})$")))
                }
                (Literal::Str(s), _) => format!("{column} {op} {}", quote(s)),
                (Literal::Int(i), _) => format!("try_cast({column} AS DOUBLE) {op} {i}"),
                (Literal::Float(f), _) => format!("try_cast({column} AS DOUBLE) {op} {f:?}"),
                (Literal::Duration(d), _) => format!("try_cast({column} AS DOUBLE) {op} {d}"),
                (Literal::Bool(b), _) => format!("{column} {op} '{b}'"),
                (Literal::Keyword(k), _) => format!("{column} {op} {}", quote(k)),
            }
        };
        let keyword = |column: &str| match &self.value {
            Literal::Keyword(k) => format!(
                "coalesce({column}, 'UNSET') {op} {}",
                quote(&status_name(k))
            ),
            _ => "FALSE".into(),
        };
        match &self.field {
            Field::SpanAttr(k) => text(&format!("span_attributes[{}]", quote(k))),
            // The service's name is also the `service_name` column (one
            // narrow column, not the resource map), which holds the
            // attribute's string value, or `unknown_service` without one.
            Field::ResourceAttr(k) if k == "service.name" => match (&self.value, self.op) {
                (Literal::Str(s), Op::Eq) if s != UNKNOWN_SERVICE => {
                    format!("service_name = {}", quote(s))
                }
                _ => text("resource_attributes['service.name']"),
            },
            Field::ResourceAttr(k) => text(&format!("resource_attributes[{}]", quote(k))),
            Field::AnyAttr(k) => text(&format!(
                "coalesce(span_attributes[{k}], resource_attributes[{k}])",
                k = quote(k)
            )),
            Field::Name => text("name"),
            Field::StatusMessage => text("status_message"),
            Field::ScopeName => text("scope_name"),
            Field::ScopeVersion => text("scope_version"),
            Field::Status | Field::Kind => keyword(if self.field == Field::Status {
                "status_code"
            } else {
                "kind"
            }),
            Field::Duration => match self.value {
                Literal::Duration(d) | Literal::Int(d) => format!("duration_ns {op} {d}"),
                _ => "FALSE".into(),
            },
            Field::EventName => match (&self.value, self.op) {
                (Literal::Str(s), Op::Eq) => {
                    format!("array_has(event_names(events), {})", quote(s))
                }
                (Literal::Str(s), Op::Ne) => {
                    format!("NOT array_has(event_names(events), {})", quote(s))
                }
                _ => "FALSE".into(),
            },
            Field::TraceDuration | Field::RootName | Field::RootService | Field::TraceId => {
                "TRUE".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tracelake_protocols::traceql::{Query, parse};

    use super::*;

    fn spanset(q: &str) -> Cond {
        let Query::Spanset(c) = parse(q).unwrap() else {
            panic!("{q}")
        };
        c
    }

    #[test]
    fn grafana_searches_compile_to_sql() {
        assert_eq!(
            spanset(r#"{resource.service.name="frontend" && name="GET /" && duration>100ms}"#)
                .sql(),
            "((service_name = 'frontend' AND name = 'GET /') AND duration_ns > 100000000)"
        );
        // Resources without the attribute have that name in the column:
        // only the attribute tells them apart.
        assert_eq!(
            spanset(r#"{resource.service.name="unknown_service"}"#).sql(),
            "resource_attributes['service.name'] = 'unknown_service'"
        );
        assert_eq!(
            spanset(r#"{resource.service.name!="frontend"}"#).sql(),
            "resource_attributes['service.name'] <> 'frontend'"
        );
        assert_eq!(
            spanset(
                r#"{ (span.http.status_code >= 500 || status = error) && .region =~ "eu-.*" && kind = server && span."a b" != "x" && event:name = "exception" }"#
            )
            .sql(),
            "(((((try_cast(span_attributes['http.status_code'] AS DOUBLE) >= 500 OR coalesce(status_code, 'UNSET') = 'ERROR') AND coalesce(span_attributes['region'], resource_attributes['region']) ~ '^(?:eu-.*)$') AND coalesce(kind, 'UNSET') = 'SERVER') AND span_attributes['a b'] <> 'x') AND array_has(event_names(events), 'exception'))"
        );
        assert_eq!(
            spanset(r#"{ traceDuration > 1.5s && rootServiceName = "api" }"#).sql(),
            "(TRUE AND TRUE)"
        );
    }
}
