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

/// A structural operator over the spans matched by its left (`x`) and
/// right (`y`) sides: the right side's spans in the relation (`Not`: not
/// in it); `Union` adds the left side's spans they are related through.
/// Linear in the spans: each relation is a pass over the tree (top-down
/// for "has such an ancestor", bottom-up for "has such a descendant",
/// counts per parent for siblings).
fn structural(relation: Relation, tree: &Tree, x: &[bool], y: &[bool]) -> Vec<bool> {
    let n = tree.spans.len();
    // Top-down: whether some ancestor is in `set`.
    let above = |set: &[bool]| {
        let mut out = vec![false; n];
        for &i in &tree.order {
            if let Some(p) = tree.parent[i] {
                out[i] = set[p] || out[p];
            }
        }
        out
    };
    // Bottom-up: whether some descendant is in `set`.
    let below = |set: &[bool]| {
        let mut out = vec![false; n];
        for &i in tree.order.iter().rev() {
            if let Some(p) = tree.parent[i] {
                out[p] |= set[i] || out[i];
            }
        }
        out
    };
    let child_in = |set: &[bool]| {
        let mut out = vec![false; n];
        for (i, parent) in tree.parent.iter().enumerate() {
            if let Some(p) = *parent {
                out[p] |= set[i];
            }
        }
        out
    };
    let parent_in = |set: &[bool]| -> Vec<bool> {
        (0..n)
            .map(|i| tree.parent[i].is_some_and(|p| set[p]))
            .collect()
    };
    // Another child of the same parent in `set`.
    let sibling_in = |set: &[bool]| -> Vec<bool> {
        let mut count = vec![0usize; n];
        for (i, parent) in tree.parent.iter().enumerate() {
            if let Some(p) = *parent
                && set[i]
            {
                count[p] += 1;
            }
        }
        (0..n)
            .map(|i| tree.parent[i].is_some_and(|p| count[p] > usize::from(set[i])))
            .collect()
    };
    // `related[i]`: span i has a left-side span in the relation;
    // `partner[j]`: span j has a right-side span in the converse relation.
    let (related, partner) = match relation.kind {
        RelationKind::Child => (parent_in(x), child_in(y)),
        RelationKind::Parent => (child_in(x), parent_in(y)),
        RelationKind::Descendant => (above(x), below(y)),
        RelationKind::Ancestor => (below(x), above(y)),
        RelationKind::Sibling => (sibling_in(x), sibling_in(y)),
    };
    (0..n)
        .map(|i| match relation.mode {
            RelationMode::Plain => y[i] && related[i],
            RelationMode::Not => y[i] && !related[i],
            RelationMode::Union => (y[i] && related[i]) || (x[i] && partner[i]),
        })
        .collect()
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
