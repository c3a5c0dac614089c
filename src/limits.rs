//! Per-tenant limits (`--tenant-limits-file`): a TOML file of defaults and
//! per-tenant overrides, reread when it changes and on SIGHUP, as Tempo's
//! per-tenant overrides:
//!
//! ```toml
//! [defaults]
//! ingestion_rate_bytes = 15000000   # decoded span bytes per second
//! ingestion_burst_bytes = 20000000  # the bucket [default: one second of the rate]
//! max_spans_per_request = 10000
//! max_bytes_per_trace = 5000000     # decoded bytes while the trace grows
//! retention = "7d"                  # [default: --retention]; "0s" keeps everything
//! max_search_window = "24h"         # longest trace search time range
//! max_concurrent_queries = 4        # query requests of the tenant at once
//!
//! [tenants.shop]
//! ingestion_rate_bytes = 1000000
//! ```
//!
//! A tenant's value is its own, else the default's, else none (no limit;
//! the server's `--retention`). Over the rate or the concurrent queries:
//! 429 with `Retry-After` / `RESOURCE_EXHAUSTED` with RetryInfo; a request
//! that can never pass (too many spans, larger than the burst): 413 /
//! `RESOURCE_EXHAUSTED` without RetryInfo; each counted in
//! `tracelake_limited_requests_total{tenant, limit}`; except a search over
//! `max_search_window`, which is 400 (no retry would help), and the spans
//! that would take a trace over `max_bytes_per_trace`, which are rejected
//! with the rest of the request accepted (OTLP partial success, as Tempo
//! discards "trace too large" spans).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// One set of limits as written in the file.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitValues {
    ingestion_rate_bytes: Option<u64>,
    ingestion_burst_bytes: Option<u64>,
    max_spans_per_request: Option<usize>,
    max_bytes_per_trace: Option<u64>,
    retention: Option<String>,
    max_search_window: Option<String>,
    max_concurrent_queries: Option<usize>,
}

impl LimitValues {
    /// `self`, with unset values taken from `other`.
    fn or(&self, other: &LimitValues) -> LimitValues {
        LimitValues {
            ingestion_rate_bytes: self.ingestion_rate_bytes.or(other.ingestion_rate_bytes),
            ingestion_burst_bytes: self.ingestion_burst_bytes.or(other.ingestion_burst_bytes),
            max_spans_per_request: self.max_spans_per_request.or(other.max_spans_per_request),
            max_bytes_per_trace: self.max_bytes_per_trace.or(other.max_bytes_per_trace),
            retention: self.retention.clone().or(other.retention.clone()),
            max_search_window: self
                .max_search_window
                .clone()
                .or(other.max_search_window.clone()),
            max_concurrent_queries: self.max_concurrent_queries.or(other.max_concurrent_queries),
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        for (name, value) in [
            ("retention", &self.retention),
            ("max_search_window", &self.max_search_window),
        ] {
            if let Some(text) = value {
                crate::config::parse_duration(text)
                    .with_context(|| format!("invalid {name} {text:?}"))?;
            }
        }
        for (name, value) in [
            (
                "ingestion_rate_bytes",
                self.ingestion_rate_bytes.map(|v| v as usize),
            ),
            (
                "ingestion_burst_bytes",
                self.ingestion_burst_bytes.map(|v| v as usize),
            ),
            ("max_spans_per_request", self.max_spans_per_request),
            (
                "max_bytes_per_trace",
                self.max_bytes_per_trace.map(|v| v as usize),
            ),
            ("max_concurrent_queries", self.max_concurrent_queries),
        ] {
            if value == Some(0) {
                bail!("{name} = 0 would refuse everything: leave it out for no limit");
            }
        }
        Ok(())
    }
}

/// The limits file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsFile {
    #[serde(default)]
    defaults: LimitValues,
    #[serde(default)]
    tenants: BTreeMap<String, LimitValues>,
}

/// One tenant's limits, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TenantLimits {
    pub(crate) ingestion_rate_bytes: Option<u64>,
    pub(crate) ingestion_burst_bytes: Option<u64>,
    pub(crate) max_spans_per_request: Option<usize>,
    pub(crate) max_bytes_per_trace: Option<u64>,
    /// `None`: keep everything.
    pub(crate) retention: Option<Duration>,
    pub(crate) max_search_window: Option<Duration>,
    pub(crate) max_concurrent_queries: Option<usize>,
}

impl LimitsFile {
    pub(crate) fn parse(text: &str) -> anyhow::Result<LimitsFile> {
        let file: LimitsFile = toml::from_str(text)?;
        file.defaults.check().context("[defaults]")?;
        for (tenant, values) in &file.tenants {
            crate::auth::check_tenant(tenant)
                .with_context(|| format!("[tenants.{tenant}]: invalid tenant id"))?;
            values
                .check()
                .with_context(|| format!("[tenants.{tenant}]"))?;
        }
        Ok(file)
    }

    /// The limits of `tenant`; `server_retention` when the file sets none.
    pub(crate) fn for_tenant(
        &self,
        tenant: &str,
        server_retention: Option<Duration>,
    ) -> TenantLimits {
        let values = match self.tenants.get(tenant) {
            Some(own) => own.or(&self.defaults),
            None => self.defaults.clone(),
        };
        // Checked by `parse`.
        let duration = |text: &Option<String>| {
            text.as_deref()
                .map(|t| crate::config::parse_duration(t).expect("checked when parsed"))
        };
        TenantLimits {
            ingestion_rate_bytes: values.ingestion_rate_bytes,
            ingestion_burst_bytes: values.ingestion_burst_bytes,
            max_spans_per_request: values.max_spans_per_request,
            max_bytes_per_trace: values.max_bytes_per_trace,
            retention: match duration(&values.retention) {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
                None => server_retention,
            },
            max_search_window: duration(&values.max_search_window),
            max_concurrent_queries: values.max_concurrent_queries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [defaults]
        ingestion_rate_bytes = 1000
        max_search_window = "1h"

        [tenants.shop]
        ingestion_rate_bytes = 50
        retention = "2d"
        max_concurrent_queries = 2

        [tenants.archive]
        retention = "0s"
    "#;

    #[test]
    fn a_tenant_takes_its_own_then_the_defaults_then_the_server() {
        let file = LimitsFile::parse(FILE).unwrap();
        let week = Some(Duration::from_secs(7 * 86400));
        let shop = file.for_tenant("shop", week);
        assert_eq!(shop.ingestion_rate_bytes, Some(50));
        assert_eq!(shop.retention, Some(Duration::from_secs(2 * 86400)));
        assert_eq!(shop.max_search_window, Some(Duration::from_secs(3600)));
        assert_eq!(shop.max_concurrent_queries, Some(2));
        let other = file.for_tenant("web", week);
        assert_eq!(other.ingestion_rate_bytes, Some(1000));
        assert_eq!(other.retention, week);
        assert_eq!(other.max_concurrent_queries, None);
        assert_eq!(file.for_tenant("archive", week).retention, None);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        for (text, error) in [
            ("[defaults]\nmax_spans = 3", "unknown field `max_spans`"),
            (
                "[tenants.shop]\nretention = \"soon\"",
                "invalid retention \"soon\"",
            ),
            ("[tenants.\"..\"]\nretention = \"1d\"", "invalid tenant id"),
            (
                "[defaults]\nmax_concurrent_queries = 0",
                "max_concurrent_queries = 0",
            ),
        ] {
            let message = format!("{:#}", LimitsFile::parse(text).unwrap_err());
            assert!(message.contains(error), "{text}: {message}");
        }
    }
}
