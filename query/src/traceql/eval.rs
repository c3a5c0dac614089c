//! TraceQL evaluated over one candidate trace: the trace-level comparisons
//! that SQL cannot decide span by span, and the spanset operators (`&&`,
//! `||`, `>`, `>>`) over the trace's tree, from each span's span-level
//! results that SQL computed.

use tracelake_protocols::traceql::{Cmp, Cond, Field, Literal, Op, Query};

use crate::analysis::Tree;

/// Evaluates a trace-level comparison (`traceDuration`, `rootName`,
/// `rootServiceName`, `trace:id`); span-level ones count as true.
pub fn trace_level(
    cmp: &Cmp,
    duration_ns: i64,
    root_name: &str,
    root_service: &str,
    trace_id: &str,
) -> bool {
    let text = |v: &str| match (&cmp.value, cmp.op) {
        (Literal::Str(s), Op::Eq) => v == s,
        (Literal::Str(s), Op::Ne) => v != s,
        (Literal::Str(s), Op::Match | Op::NotMatch) => {
            let hit = regex::Regex::new(&format!("^(?:{s})$")).is_ok_and(|r| r.is_match(v));
            hit == (cmp.op == Op::Match)
        }
        (Literal::Str(s), op) => compare(v.cmp(s.as_str()), op),
        _ => false,
    };
    match &cmp.field {
        Field::TraceDuration => match cmp.value {
            Literal::Duration(d) | Literal::Int(d) => compare(duration_ns.cmp(&d), cmp.op),
            _ => false,
        },
        Field::RootName => text(root_name),
        Field::RootService => text(root_service),
        Field::TraceId => text(trace_id.trim_start_matches('0')) || text(trace_id),
        _ => true,
    }
}

fn compare(ord: std::cmp::Ordering, op: Op) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => ord == Equal,
        Op::Ne => ord != Equal,
        Op::Gt => ord == Greater,
        Op::Ge => ord != Less,
        Op::Lt => ord == Less,
        Op::Le => ord != Greater,
        Op::Match | Op::NotMatch => false,
    }
}

/// Evaluates a spanset condition for one span; `atoms` are the span-level
/// comparisons' results in [`Cond::span_comparisons`] order, consumed as
/// they are met (no short-circuit, so the order holds).
fn eval(cond: &Cond, atoms: &[bool], next: &mut usize, trace: &TraceFacts) -> bool {
    match cond {
        Cond::True => true,
        Cond::And(a, b) => {
            let x = eval(a, atoms, next, trace);
            let y = eval(b, atoms, next, trace);
            x && y
        }
        Cond::Or(a, b) => {
            let x = eval(a, atoms, next, trace);
            let y = eval(b, atoms, next, trace);
            x || y
        }
        Cond::Cmp(c) if c.field.is_trace_level() => trace_level(
            c,
            trace.duration,
            &trace.root_name,
            &trace.root_service,
            &trace.id,
        ),
        Cond::Cmp(_) => {
            let v = atoms.get(*next).copied().unwrap_or(false);
            *next += 1;
            v
        }
    }
}

/// What trace-level comparisons look at.
pub struct TraceFacts {
    /// Nanoseconds from the first span's start to the last span's end.
    pub duration: i64,
    /// Empty when the root span has not arrived.
    pub root_name: String,
    pub root_service: String,
    /// Hex, 32 digits.
    pub id: String,
}

/// Spans (tree indices) matched by `query`. `atoms` holds each span's
/// span-level comparison results (by the span's key), `offsets` each
/// spanset's first column in them, `leaf` counts spansets left to right.
pub fn matches(
    query: &Query,
    tree: &Tree,
    atoms: &[Vec<bool>],
    offsets: &[usize],
    leaf: &mut usize,
    facts: &TraceFacts,
) -> Vec<bool> {
    let n = tree.spans.len();
    match query {
        Query::Spanset(cond) => {
            let first = offsets[*leaf];
            *leaf += 1;
            (0..n)
                .map(|i| {
                    let mut next = 0;
                    let row = &atoms[tree.spans[i].key];
                    eval(cond, &row[first..], &mut next, facts)
                })
                .collect()
        }
        Query::And(a, b) | Query::Or(a, b) => {
            let x = matches(a, tree, atoms, offsets, leaf, facts);
            let y = matches(b, tree, atoms, offsets, leaf, facts);
            let both = x.iter().any(|&v| v) && y.iter().any(|&v| v);
            if matches!(query, Query::And(..)) && !both {
                return vec![false; n];
            }
            x.iter().zip(&y).map(|(a, b)| *a || *b).collect()
        }
        Query::Child(a, b) => {
            let x = matches(a, tree, atoms, offsets, leaf, facts);
            let y = matches(b, tree, atoms, offsets, leaf, facts);
            (0..n)
                .map(|i| y[i] && tree.parent[i].is_some_and(|p| x[p]))
                .collect()
        }
        Query::Descendant(a, b) => {
            let x = matches(a, tree, atoms, offsets, leaf, facts);
            let y = matches(b, tree, atoms, offsets, leaf, facts);
            (0..n)
                .map(|i| {
                    if !y[i] {
                        return false;
                    }
                    let mut p = tree.parent[i];
                    let mut steps = 0;
                    while let Some(q) = p {
                        if x[q] {
                            return true;
                        }
                        steps += 1;
                        if steps > n {
                            break;
                        }
                        p = tree.parent[q];
                    }
                    false
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use tracelake_protocols::traceql::{Cond, Query, parse};

    use super::*;

    #[test]
    fn trace_level_comparisons() {
        struct C(Cmp);
        impl C {
            fn trace(&self, d: i64, root: &str, service: &str, id: &str) -> bool {
                trace_level(&self.0, d, root, service, id)
            }
        }
        let c = |q: &str| {
            let Query::Spanset(Cond::Cmp(c)) = parse(q).unwrap() else {
                panic!()
            };
            C(c)
        };
        assert!(c("{traceDuration > 1s}").trace(2_000_000_000, "", "", ""));
        assert!(!c("{traceDuration > 1s}").trace(1_000_000_000, "", "", ""));
        assert!(c(r#"{rootName =~ "GET .*"}"#).trace(0, "GET /", "", ""));
        assert!(c(r#"{trace:rootService != "x"}"#).trace(0, "", "api", ""));
        assert!(c(r#"{trace:id = "abc"}"#).trace(0, "", "", "00000abc"));
    }
}
