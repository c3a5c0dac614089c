//! Jaeger remote sampling: the strategies file Jaeger's collector reads
//! (`--sampling.strategies-file`) and the answer its SDKs poll for
//! (`GET /sampling?service=`, JSON `SamplingStrategyResponse`).
//!
//! The file, as Jaeger's:
//!
//! ```json
//! {
//!   "service_strategies": [
//!     {"service": "checkout", "type": "probabilistic", "param": 0.5,
//!      "operation_strategies": [
//!        {"operation": "GET /health", "type": "probabilistic", "param": 0.0}]},
//!     {"service": "search", "type": "ratelimiting", "param": 20}
//!   ],
//!   "default_strategy": {"type": "probabilistic", "param": 0.1}
//! }
//! ```
//!
//! A service not listed gets `default_strategy` (or, without one,
//! probabilistic 0.001, Jaeger's default). Operation strategies are
//! probabilistic only (as in Jaeger); the default strategy's operation
//! strategies apply to every probabilistic service for the operations it
//! does not list itself. A service whose strategy has operation strategies
//! is answered with `operationSampling` (per-operation sampling), the rest
//! with the plain strategy.

use serde::Deserialize;
use serde_json::{Value, json};

/// Jaeger's default when no strategy is configured.
const DEFAULT_PROBABILITY: f64 = 0.001;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Strategy {
    #[serde(rename = "type")]
    kind: String,
    param: f64,
    #[serde(default)]
    operation_strategies: Vec<OperationStrategy>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct OperationStrategy {
    operation: String,
    #[serde(rename = "type")]
    kind: String,
    param: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ServiceStrategy {
    service: String,
    #[serde(rename = "type")]
    kind: String,
    param: f64,
    #[serde(default)]
    operation_strategies: Vec<OperationStrategy>,
}

impl ServiceStrategy {
    fn strategy(&self) -> Strategy {
        Strategy {
            kind: self.kind.clone(),
            param: self.param,
            operation_strategies: self.operation_strategies.clone(),
        }
    }
}

/// A strategies file, checked.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Strategies {
    #[serde(default)]
    service_strategies: Vec<ServiceStrategy>,
    #[serde(default)]
    default_strategy: Option<Strategy>,
}

/// Why a strategies file is refused; names the entry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StrategiesError(String);

fn check(at: &str, kind: &str, param: f64, operation: bool) -> Result<(), StrategiesError> {
    match kind {
        "probabilistic" if (0.0..=1.0).contains(&param) => Ok(()),
        "probabilistic" => Err(StrategiesError(format!(
            "{at}: a probabilistic param is a probability from 0 to 1, not {param}"
        ))),
        "ratelimiting" if operation => Err(StrategiesError(format!(
            "{at}: operation strategies are probabilistic only (as in Jaeger)"
        ))),
        "ratelimiting" if param >= 0.0 && param.is_finite() => Ok(()),
        "ratelimiting" => Err(StrategiesError(format!(
            "{at}: a ratelimiting param is traces per second, at least 0, not {param}"
        ))),
        other => Err(StrategiesError(format!(
            "{at}: unknown type {other:?} (probabilistic or ratelimiting)"
        ))),
    }
}

impl Strategy {
    fn check(&self, at: &str) -> Result<(), StrategiesError> {
        check(at, &self.kind, self.param, false)?;
        for op in &self.operation_strategies {
            check(
                &format!("{at}, operation {:?}", op.operation),
                &op.kind,
                op.param,
                true,
            )?;
        }
        Ok(())
    }
}

impl Strategies {
    /// Parses and checks a strategies file's JSON.
    pub fn parse(text: &[u8]) -> Result<Strategies, StrategiesError> {
        let s: Strategies = serde_json::from_slice(text)
            .map_err(|e| StrategiesError(format!("not a Jaeger strategies file: {e}")))?;
        if let Some(d) = &s.default_strategy {
            d.check("default_strategy")?;
        }
        let mut seen = std::collections::HashSet::new();
        for entry in &s.service_strategies {
            let at = format!("service {:?}", entry.service);
            if !seen.insert(&entry.service) {
                return Err(StrategiesError(format!("{at} is listed twice")));
            }
            entry.strategy().check(&at)?;
        }
        Ok(s)
    }

    /// The `SamplingStrategyResponse` for `service`.
    pub fn response(&self, service: &str) -> Value {
        let fallback = Strategy {
            kind: "probabilistic".into(),
            param: DEFAULT_PROBABILITY,
            operation_strategies: Vec::new(),
        };
        let default = self.default_strategy.as_ref().unwrap_or(&fallback);
        let own = self
            .service_strategies
            .iter()
            .find(|s| s.service == service)
            .map(ServiceStrategy::strategy);
        let strategy = own.as_ref().unwrap_or(default);
        let plain = match strategy.kind.as_str() {
            "ratelimiting" => json!({
                "strategyType": "RATE_LIMITING",
                "rateLimitingSampling": {"maxTracesPerSecond": strategy.param},
            }),
            _ => json!({
                "strategyType": "PROBABILISTIC",
                "probabilisticSampling": {"samplingRate": strategy.param},
            }),
        };
        if strategy.kind != "probabilistic" {
            return plain;
        }
        let mut operations: Vec<&OperationStrategy> =
            strategy.operation_strategies.iter().collect();
        if own.is_some() {
            for op in &default.operation_strategies {
                if !operations.iter().any(|o| o.operation == op.operation) {
                    operations.push(op);
                }
            }
        }
        if operations.is_empty() {
            return plain;
        }
        let mut out = plain;
        out["operationSampling"] = json!({
            "defaultSamplingProbability": strategy.param,
            "defaultLowerBoundTracesPerSecond": 0.0,
            "perOperationStrategies": operations
                .iter()
                .map(|op| json!({
                    "operation": op.operation,
                    "probabilisticSampling": {"samplingRate": op.param},
                }))
                .collect::<Vec<_>>(),
        });
        out
    }
}

impl Strategies {
    /// Whether the file lists `service` itself.
    pub fn lists(&self, service: &str) -> bool {
        self.service_strategies.iter().any(|s| s.service == service)
    }
}

/// Adaptive sampling's lowest probability (Jaeger's
/// `min_sampling_probability`).
pub const ADAPTIVE_MIN_PROBABILITY: f64 = 1e-5;
/// Traces per second sampled of every operation whatever its probability
/// (Jaeger's `min_samples_per_second`: one a minute).
pub const ADAPTIVE_LOWER_BOUND: f64 = 1.0 / 60.0;

/// The probability that samples `target` traces per second of an operation
/// that has `traffic` traces per second (1 for an operation with less
/// traffic than the target).
pub fn adaptive_probability(target: f64, traffic: f64) -> f64 {
    if traffic <= target {
        return 1.0;
    }
    (target / traffic).clamp(ADAPTIVE_MIN_PROBABILITY, 1.0)
}

/// Adaptive sampling's probabilities: per service, per root operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Adaptive {
    pub services: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
}

impl Adaptive {
    /// The probability last given to an operation, if any.
    pub fn probability(&self, service: &str, operation: &str) -> Option<f64> {
        self.services.get(service)?.get(operation).copied()
    }

    /// The per-operation `SamplingStrategyResponse` of a service seen in
    /// the traffic; its operations not seen yet get Jaeger's initial
    /// probability.
    pub fn response(&self, service: &str) -> Option<Value> {
        let operations = self.services.get(service)?;
        Some(json!({
            "strategyType": "PROBABILISTIC",
            "probabilisticSampling": {"samplingRate": DEFAULT_PROBABILITY},
            "operationSampling": {
                "defaultSamplingProbability": DEFAULT_PROBABILITY,
                "defaultLowerBoundTracesPerSecond": ADAPTIVE_LOWER_BOUND,
                "perOperationStrategies": operations
                    .iter()
                    .map(|(op, p)| json!({
                        "operation": op,
                        "probabilisticSampling": {"samplingRate": p},
                    }))
                    .collect::<Vec<_>>(),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_probabilities_aim_at_the_target() {
        assert_eq!(adaptive_probability(2.0, 10.0), 0.2);
        assert_eq!(
            adaptive_probability(2.0, 1.0),
            1.0,
            "less traffic than the target"
        );
        assert_eq!(adaptive_probability(2.0, 0.0), 1.0);
        assert_eq!(adaptive_probability(1.0, 1e9), ADAPTIVE_MIN_PROBABILITY);
        let mut a = Adaptive::default();
        a.services
            .entry("shop".into())
            .or_default()
            .insert("GET /cart".into(), 0.25);
        let r = a.response("shop").unwrap();
        assert_eq!(
            r["operationSampling"]["perOperationStrategies"][0],
            json!({"operation": "GET /cart", "probabilisticSampling": {"samplingRate": 0.25}})
        );
        assert_eq!(r["operationSampling"]["defaultSamplingProbability"], 0.001);
        assert!(a.response("unseen").is_none());
        assert_eq!(a.probability("shop", "GET /cart"), Some(0.25));
    }

    const FILE: &str = r#"{
      "service_strategies": [
        {"service": "checkout", "type": "probabilistic", "param": 0.5,
         "operation_strategies": [{"operation": "GET /health", "type": "probabilistic", "param": 0.0}]},
        {"service": "search", "type": "ratelimiting", "param": 20}
      ],
      "default_strategy": {"type": "probabilistic", "param": 0.1,
        "operation_strategies": [{"operation": "GET /metrics", "type": "probabilistic", "param": 0.0}]}
    }"#;

    #[test]
    fn each_service_gets_its_strategy_or_the_default() {
        let s = Strategies::parse(FILE.as_bytes()).unwrap();
        assert_eq!(
            s.response("search"),
            json!({"strategyType": "RATE_LIMITING", "rateLimitingSampling": {"maxTracesPerSecond": 20.0}})
        );
        let checkout = s.response("checkout");
        assert_eq!(checkout["probabilisticSampling"]["samplingRate"], 0.5);
        assert_eq!(
            checkout["operationSampling"]["defaultSamplingProbability"],
            0.5
        );
        assert_eq!(
            checkout["operationSampling"]["perOperationStrategies"],
            json!([
                {"operation": "GET /health", "probabilisticSampling": {"samplingRate": 0.0}},
                {"operation": "GET /metrics", "probabilisticSampling": {"samplingRate": 0.0}},
            ])
        );
        let other = s.response("cart");
        assert_eq!(other["probabilisticSampling"]["samplingRate"], 0.1);
        assert_eq!(
            other["operationSampling"]["perOperationStrategies"][0]["operation"],
            "GET /metrics"
        );
        let empty = Strategies::parse(b"{}").unwrap();
        assert_eq!(
            empty.response("x"),
            json!({"strategyType": "PROBABILISTIC", "probabilisticSampling": {"samplingRate": 0.001}})
        );
    }

    #[test]
    fn bad_files_name_the_entry() {
        for (text, error) in [
            (
                r#"{"default_strategy": {"type": "probabilistic", "param": 2}}"#,
                "from 0 to 1",
            ),
            (
                r#"{"default_strategy": {"type": "adaptive", "param": 1}}"#,
                "unknown type",
            ),
            (
                r#"{"service_strategies": [{"service": "a", "type": "ratelimiting", "param": -1}]}"#,
                "service \"a\": a ratelimiting param",
            ),
            (
                r#"{"service_strategies": [{"service": "a", "type": "probabilistic", "param": 1,
                   "operation_strategies": [{"operation": "o", "type": "ratelimiting", "param": 1}]}]}"#,
                "probabilistic only",
            ),
            (
                r#"{"service_strategies": [{"service": "a", "type": "probabilistic", "param": 1},
                                           {"service": "a", "type": "probabilistic", "param": 1}]}"#,
                "listed twice",
            ),
            (r#"{"services": []}"#, "unknown field"),
        ] {
            let message = Strategies::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(message.contains(error), "{text}: {message}");
        }
    }
}
