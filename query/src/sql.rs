//! The read model's conditions as DataFusion SQL over the spans table:
//! time ranges, span filters and attribute conditions parsed by
//! `tracelake_protocols::params`, and literals quoted safely.

use tracelake_protocols::params::{
    AttributeCondition, Op, Scope, SpanFilter, StatusFilter, TimeRange,
};

/// A condition as a SQL boolean expression over the spans table.
pub trait Sql {
    fn sql(&self) -> String;
}

impl Sql for TimeRange {
    /// A condition on `start_time_unix_nano`.
    fn sql(&self) -> String {
        format!(
            "start_time_unix_nano >= {} AND start_time_unix_nano < {}",
            self.start, self.end
        )
    }
}

impl Sql for SpanFilter {
    /// SQL conditions joined with AND (`TRUE` when there are none).
    fn sql(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.service {
            parts.push(format!("service_name = {}", quote(s)));
        }
        if let Some(o) = &self.operation {
            parts.push(format!("name = {}", quote(o)));
        }
        if !self.kinds.is_empty() {
            let list: Vec<_> = self.kinds.iter().map(|k| quote(k)).collect();
            parts.push(format!("kind IN ({})", list.join(", ")));
        }
        match self.status {
            Some(StatusFilter::Error) => parts.push("status_code = 'ERROR'".into()),
            Some(StatusFilter::Ok) => {
                parts.push("coalesce(status_code, 'UNSET') <> 'ERROR'".into());
            }
            None => {}
        }
        parts.extend(self.attributes.iter().map(Sql::sql));
        if let Some(d) = self.min_duration {
            parts.push(format!("duration_ns >= {d}"));
        }
        if let Some(d) = self.max_duration {
            parts.push(format!("duration_ns <= {d}"));
        }
        parts.extend(self.sql_conditions.iter().cloned());
        if parts.is_empty() {
            "TRUE".into()
        } else {
            parts.join(" AND ")
        }
    }
}

impl Sql for AttributeCondition {
    fn sql(&self) -> String {
        let key = quote(&self.key);
        let value = match self.scope {
            Scope::Span => format!("span_attributes[{key}]"),
            Scope::Resource => format!("resource_attributes[{key}]"),
            Scope::Any => format!("coalesce(span_attributes[{key}], resource_attributes[{key}])"),
        };
        let number = || self.value.trim().parse::<f64>().unwrap_or(f64::NAN);
        let numeric = |op: &str| format!("try_cast({value} AS DOUBLE) {op} {:?}", number());
        match self.op {
            Op::Eq => format!("{value} = {}", quote(&self.value)),
            Op::Ne => format!("{value} <> {}", quote(&self.value)),
            Op::Gt => numeric(">"),
            Op::Ge => numeric(">="),
            Op::Lt => numeric("<"),
            Op::Le => numeric("<="),
            Op::Match => format!("{value} ~ {}", quote(&self.value)),
            Op::NotMatch => format!("{value} !~ {}", quote(&self.value)),
        }
    }
}

/// A SQL string literal.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL binary literal.
pub fn binary(bytes: &[u8]) -> String {
    format!("X'{}'", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_conditions() {
        let sql = |text| AttributeCondition::parse(text).unwrap().sql();
        assert_eq!(
            sql("span.http.route=/users/{id}"),
            "span_attributes['http.route'] = '/users/{id}'"
        );
        assert_eq!(
            sql("http.response.status_code>=500"),
            "try_cast(coalesce(span_attributes['http.response.status_code'], resource_attributes['http.response.status_code']) AS DOUBLE) >= 500.0"
        );
        assert_eq!(
            sql("resource.k8s.pod.name=~^api-.*"),
            "resource_attributes['k8s.pod.name'] ~ '^api-.*'"
        );
        assert_eq!(
            sql("user!=o'brien"),
            "coalesce(span_attributes['user'], resource_attributes['user']) <> 'o''brien'"
        );
    }
}
