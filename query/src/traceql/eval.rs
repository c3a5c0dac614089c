//! TraceQL evaluated over one candidate trace: the trace-level comparisons
//! that SQL cannot decide span by span, and the spanset operators (`&&`,
//! `||`, and the structural `>`, `>>`, `<`, `<<`, `~` with their `!` and
//! `&` forms) over the trace's tree, from each span's span-level
//! results that SQL computed.

use tracelake_protocols::traceql::{
    Cmp, Cond, Field, Literal, Op, Query, Relation, RelationKind, RelationMode,
};

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
        Query::Structural(relation, a, b) => {
            let x = matches(a, tree, atoms, offsets, leaf, facts);
            let y = matches(b, tree, atoms, offsets, leaf, facts);
            structural(*relation, tree, &x, &y)
        }
    }
}

/// Ancestors of span `i`, nearest first (a parent cycle ends the walk).
fn ancestors(tree: &Tree, i: usize) -> impl Iterator<Item = usize> + '_ {
    let mut p = tree.parent[i];
    let mut steps = 0;
    std::iter::from_fn(move || {
        let q = p?;
        steps += 1;
        if steps > tree.spans.len() {
            return None;
        }
        p = tree.parent[q];
        Some(q)
    })
}

/// A structural operator over the spans matched by its left (`x`) and
/// right (`y`) sides: the right side's spans in the relation (`Not`: not
/// in it); `Union` adds the left side's spans they are related through.
fn structural(relation: Relation, tree: &Tree, x: &[bool], y: &[bool]) -> Vec<bool> {
    let n = tree.spans.len();
    // Left-side spans below each right-side span, walking up once from
    // each left-side span.
    let mut below: Vec<Vec<usize>> = Vec::new();
    if relation.kind == RelationKind::Ancestor {
        below = vec![Vec::new(); n];
        for j in (0..n).filter(|&j| x[j]) {
            for q in ancestors(tree, j) {
                if y[q] {
                    below[q].push(j);
                }
            }
        }
    }
    // The left-side spans that span `i` is in the relation with.
    let partners = |i: usize| -> Vec<usize> {
        match relation.kind {
            RelationKind::Child => tree.parent[i].filter(|&p| x[p]).into_iter().collect(),
            RelationKind::Descendant => ancestors(tree, i).filter(|&q| x[q]).collect(),
            RelationKind::Parent => tree.children[i].iter().copied().filter(|&c| x[c]).collect(),
            RelationKind::Ancestor => below[i].clone(),
            RelationKind::Sibling => match tree.parent[i] {
                Some(p) => tree.children[p]
                    .iter()
                    .copied()
                    .filter(|&j| j != i && x[j])
                    .collect(),
                None => Vec::new(),
            },
        }
    };
    let mut out = vec![false; n];
    for i in (0..n).filter(|&i| y[i]) {
        let related = partners(i);
        match relation.mode {
            RelationMode::Plain => out[i] = !related.is_empty(),
            RelationMode::Not => out[i] = related.is_empty(),
            RelationMode::Union => {
                if !related.is_empty() {
                    out[i] = true;
                    for j in related {
                        out[j] = true;
                    }
                }
            }
        }
    }
    out
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
