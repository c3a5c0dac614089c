//! Latency analysis of one trace: the span tree, clock-skew adjustment, self
//! time, the critical path and per-service / per-operation totals. Pure and
//! synchronous: the APIs fetch spans and hand them here.
//!
//! Definitions (also in `docs/api.md`):
//! - **Tree.** A span's parent is the span with its `parent_span_id` in the
//!   same trace. Spans whose parent is missing are *orphans* and are treated
//!   as roots; children are ordered by (adjusted) start time.
//! - **Clock skew** (after Jaeger's adjuster). Clocks are per service. A child
//!   on another service than its parent is shifted when it cannot be right:
//!   it starts before its parent, or it is a SERVER span of a CLIENT parent
//!   (a synchronous call) that does not fit inside the parent. The shift
//!   centres the child in its parent, or aligns the starts when the child is
//!   longer; the child's descendants on its service move with it.
//! - **Self time**: a span's duration minus the union of its children's
//!   intervals clipped to the span.
//! - **Critical path** as Jaeger UI computes it: starting at a span, take its
//!   last-finishing child, then walk back through the children that finished
//!   before the previous one started; the time where no child runs belongs
//!   to the span itself. Children are first clipped to their parent (dropped
//!   when entirely outside it), and asynchronous edges — CONSUMER children
//!   and children of PRODUCER spans — are left out. The sections tile the
//!   span's interval exactly.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

/// One span, as much as the analysis needs.
#[derive(Debug, Clone)]
pub struct Span {
    /// The caller's reference (a row number, say), carried through.
    pub key: usize,
    pub span_id: u64,
    pub parent_span_id: Option<u64>,
    pub service: Arc<str>,
    pub name: Arc<str>,
    /// Stored kind name (`SERVER`, `CLIENT`, ...).
    pub kind: Arc<str>,
    pub start: i64,
    pub duration: i64,
    pub error: bool,
}

impl Span {
    fn is(&self, kind: &str) -> bool {
        &*self.kind == kind
    }

    /// The span id as 16 lowercase hex digits.
    pub fn id_hex(&self) -> String {
        hex::encode(self.span_id.to_be_bytes())
    }
}

/// (service, operation name).
pub type OperationKey = (Arc<str>, Arc<str>);

/// A stretch of the critical path spent in one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub span: usize,
    pub start: i64,
    pub end: i64,
}

/// A clock-skew shift applied to a span (and its same-service subtree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkewShift {
    pub span: usize,
    pub parent: usize,
    pub delta: i64,
}

/// The span tree of one trace, with skew-adjusted times.
#[derive(Debug)]
pub struct Tree {
    pub spans: Vec<Span>,
    /// Children of each span, by adjusted start time.
    pub children: Vec<Vec<usize>>,
    pub parent: Vec<Option<usize>>,
    /// Roots: spans without a parent id, then orphans, by start time.
    pub roots: Vec<usize>,
    pub orphan: Vec<bool>,
    /// Depth-first order from the roots; spans in a parent cycle come last.
    pub order: Vec<usize>,
    pub depth: Vec<usize>,
    /// Shift applied to each span's start by clock-skew adjustment.
    pub skew: Vec<i64>,
    /// Shifts computed (one per adjusted subtree).
    pub shifts: Vec<SkewShift>,
}

impl Tree {
    /// Builds the tree; spans are sorted by (start, span id) first so that the
    /// result does not depend on the order they were read in.
    pub fn new(mut spans: Vec<Span>) -> Self {
        spans.sort_by(|a, b| a.start.cmp(&b.start).then(a.span_id.cmp(&b.span_id)));
        let n = spans.len();
        // Zipkin's shared spans: a CLIENT and a SERVER span with one id. The
        // SERVER span is the CLIENT's child, and spans naming that id as
        // their parent are the SERVER's children.
        let mut index: HashMap<u64, usize> = HashMap::with_capacity(n);
        let mut clients: HashMap<u64, usize> = HashMap::new();
        for (i, s) in spans.iter().enumerate() {
            if s.is("CLIENT") {
                clients.entry(s.span_id).or_insert(i);
            }
            match index.entry(s.span_id) {
                Entry::Vacant(v) => {
                    v.insert(i);
                }
                Entry::Occupied(mut o) => {
                    if s.is("SERVER") && !spans[*o.get()].is("SERVER") {
                        o.insert(i);
                    }
                }
            }
        }
        let mut parent = vec![None; n];
        let mut orphan = vec![false; n];
        let mut children = vec![Vec::new(); n];
        let mut roots = Vec::new();
        let mut orphans = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            let shared_client = clients
                .get(&s.span_id)
                .copied()
                .filter(|&c| c != i && s.is("SERVER"));
            let resolved = match shared_client {
                Some(c) => Some(Some(c)),
                None => s.parent_span_id.map(|p| index.get(&p).copied()),
            };
            match resolved {
                Some(Some(p)) if p != i => {
                    parent[i] = Some(p);
                    children[p].push(i);
                }
                Some(_) => {
                    orphan[i] = true;
                    orphans.push(i);
                }
                None => roots.push(i),
            }
        }
        roots.extend(orphans);
        let mut tree = Self {
            spans,
            children,
            parent,
            roots,
            orphan,
            order: Vec::with_capacity(n),
            depth: vec![0; n],
            skew: vec![0; n],
            shifts: Vec::new(),
        };
        tree.walk();
        tree.adjust_clock_skew();
        tree
    }

    /// Depth-first order, iteratively (deep traces must not overflow the
    /// stack). Spans unreachable from a root (parent cycles) are appended and
    /// marked as orphans.
    fn walk(&mut self) {
        let n = self.spans.len();
        let mut visited = vec![false; n];
        let mut stack: Vec<usize> = self.roots.iter().rev().copied().collect();
        self.order.clear();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut visited[i], true) {
                continue;
            }
            self.order.push(i);
            for &c in self.children[i].iter().rev() {
                self.depth[c] = self.depth[i] + 1;
                stack.push(c);
            }
        }
        for (i, seen) in visited.into_iter().enumerate() {
            if !seen {
                self.orphan[i] = true;
                self.parent[i] = None;
                self.order.push(i);
            }
        }
    }

    pub fn start(&self, i: usize) -> i64 {
        self.spans[i].start + self.skew[i]
    }

    pub fn end(&self, i: usize) -> i64 {
        self.start(i) + self.spans[i].duration
    }

    fn adjust_clock_skew(&mut self) {
        // Parents come before their children in `order`.
        for k in 0..self.order.len() {
            let i = self.order[k];
            let Some(p) = self.parent[i] else { continue };
            if self.spans[i].service != self.spans[p].service {
                let delta = self.skew_delta(i, p);
                self.skew[i] = delta;
                if delta != 0 {
                    self.shifts.push(SkewShift {
                        span: i,
                        parent: p,
                        delta,
                    });
                }
            } else {
                self.skew[i] = self.skew[p];
            }
        }
        if !self.shifts.is_empty() {
            for c in &mut self.children {
                let spans = &self.spans;
                let skew = &self.skew;
                c.sort_by_key(|&i| (spans[i].start + skew[i], spans[i].span_id));
            }
            self.walk();
        }
    }

    /// Shift for child `i` of parent `p` (already adjusted), on another
    /// service than its parent.
    fn skew_delta(&self, i: usize, p: usize) -> i64 {
        let (child, parent) = (&self.spans[i], &self.spans[p]);
        let (start, end) = (child.start, child.start + child.duration);
        let (p_start, p_end) = (self.start(p), self.end(p));
        let inside = start >= p_start && end <= p_end;
        let synchronous = parent.is("CLIENT") && child.is("SERVER");
        if inside || !(start < p_start || synchronous) {
            return 0;
        }
        if child.duration > parent.duration {
            // It cannot fit: only make it start with its parent.
            return (p_start - start).max(0);
        }
        p_start + (parent.duration - child.duration) / 2 - start
    }

    /// Self time of every span: its duration minus the union of its
    /// children's intervals clipped to it.
    pub fn self_times(&self) -> Vec<i64> {
        let mut out = Vec::with_capacity(self.spans.len());
        let mut intervals = Vec::new();
        for i in 0..self.spans.len() {
            let (s, e) = (self.start(i), self.end(i));
            intervals.clear();
            intervals.extend(
                self.children[i]
                    .iter()
                    .map(|&c| (self.start(c).max(s), self.end(c).min(e)))
                    .filter(|(a, b)| a < b),
            );
            intervals.sort_unstable();
            let mut covered = 0;
            let mut cursor = s;
            for &(a, b) in &intervals {
                let a = a.max(cursor);
                if b > a {
                    covered += b - a;
                    cursor = b;
                }
            }
            out.push(self.spans[i].duration - covered);
        }
        out
    }

    /// (earliest start, latest end) of the spans as stored (Unix ns).
    pub fn bounds(&self) -> Option<(i64, i64)> {
        let start = self.spans.iter().map(|s| s.start).min()?;
        let end = self.spans.iter().map(|s| s.start + s.duration).max()?;
        Some((start, end))
    }

    /// (span count, error count) per service, by name.
    pub fn service_counts(&self) -> std::collections::BTreeMap<&str, (u64, u64)> {
        let mut out: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for s in &self.spans {
            let e = out.entry(&*s.service).or_default();
            e.0 += 1;
            e.1 += u64::from(s.error);
        }
        out
    }

    /// The primary root: the earliest span without a parent id (the longest
    /// on a tie), else the earliest orphan.
    pub fn main_root(&self) -> Option<usize> {
        let first = *self.roots.first()?;
        let true_roots = self
            .roots
            .iter()
            .copied()
            .filter(|&r| !self.orphan[r] && self.start(r) == self.start(first));
        Some(
            true_roots
                .max_by_key(|&r| (self.spans[r].duration, std::cmp::Reverse(r)))
                .unwrap_or(first),
        )
    }

    /// The critical path below span `from` (inclusive), in time order.
    pub fn critical_path(&self, from: usize) -> Vec<Section> {
        // Clip synchronous children to their parents, top-down, dropping
        // those entirely outside; `bounds` holds the clipped intervals.
        let mut bounds: HashMap<usize, (i64, i64)> = HashMap::new();
        let mut kids: HashMap<usize, Vec<usize>> = HashMap::new();
        bounds.insert(from, (self.start(from), self.end(from)));
        let mut stack = vec![from];
        while let Some(p) = stack.pop() {
            let (ps, pe) = bounds[&p];
            let mut list = Vec::new();
            for &c in &self.children[p] {
                if self.spans[c].is("CONSUMER") || self.spans[p].is("PRODUCER") {
                    continue;
                }
                let (cs, ce) = (self.start(c), self.end(c));
                let inside = ce > ps && cs < pe || (cs >= ps && ce <= pe);
                if !inside {
                    continue;
                }
                bounds.insert(c, (cs.max(ps), ce.min(pe)));
                list.push(c);
                stack.push(c);
            }
            // Last-finishing first.
            list.sort_by_key(|&c| (std::cmp::Reverse(bounds[&c].1), std::cmp::Reverse(c)));
            kids.insert(p, list);
        }
        let mut path = Vec::new();
        let mut current = from;
        let mut returning: Option<i64> = None;
        loop {
            let (cs, ce) = bounds[&current];
            let children = &kids[&current];
            let next = match returning {
                None => children.first().copied(),
                Some(t) => children.iter().copied().find(|c| bounds[c].1 < t),
            };
            let section_end = returning.unwrap_or(ce);
            match next {
                Some(child) => {
                    let child_end = bounds[&child].1;
                    if child_end != section_end {
                        path.push(Section {
                            span: current,
                            start: child_end,
                            end: section_end,
                        });
                    }
                    current = child;
                    returning = None;
                }
                None => {
                    path.push(Section {
                        span: current,
                        start: cs,
                        end: section_end,
                    });
                    if current == from {
                        break;
                    }
                    returning = Some(cs);
                    current = self.parent[current].expect("a clipped child has a parent");
                }
            }
        }
        path.reverse();
        path
    }

    /// Critical-path time of every span on the path below `from`.
    pub fn critical_times(&self, from: usize) -> Vec<i64> {
        let mut out = vec![0; self.spans.len()];
        for s in self.critical_path(from) {
            out[s.span] += s.end - s.start;
        }
        out
    }

    /// Totals per service and per operation for the whole trace, the
    /// critical path taken from the main root.
    pub fn breakdown(&self) -> Breakdown {
        let self_times = self.self_times();
        let critical = self
            .main_root()
            .map(|r| self.critical_times(r))
            .unwrap_or_default();
        let mut services: HashMap<Arc<str>, Totals> = HashMap::new();
        let mut operations: HashMap<OperationKey, Totals> = HashMap::new();
        for (i, s) in self.spans.iter().enumerate() {
            let cp = critical.get(i).copied().unwrap_or(0);
            for totals in [
                services.entry(Arc::clone(&s.service)).or_default(),
                operations
                    .entry((Arc::clone(&s.service), Arc::clone(&s.name)))
                    .or_default(),
            ] {
                totals.add(s.duration, self_times[i], cp, s.error);
            }
        }
        Breakdown {
            self_times,
            critical,
            services: sorted(services.into_iter().collect()),
            operations: sorted(operations.into_iter().collect()),
        }
    }

    /// Spans of `service` (named `operation` when given) entered from
    /// outside: no parent, or a parent on another service.
    pub fn entry_spans(&self, service: &str, operation: Option<&str>) -> Vec<usize> {
        (0..self.spans.len())
            .filter(|&i| {
                let s = &self.spans[i];
                &*s.service == service
                    && operation.is_none_or(|op| &*s.name == op)
                    && self.parent[i].is_none_or(|p| &*self.spans[p].service != service)
            })
            .collect()
    }
}

/// By critical-path time, then total time, then name: the same trace
/// always gives the same order.
fn sorted<K: Ord>(mut v: Vec<(K, Totals)>) -> Vec<(K, Totals)> {
    v.sort_by(|a, b| {
        b.1.critical_ns
            .cmp(&a.1.critical_ns)
            .then(b.1.total_ns.cmp(&a.1.total_ns))
            .then_with(|| a.0.cmp(&b.0))
    });
    v
}

/// Time spent by a group of spans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub total_ns: i64,
    pub self_ns: i64,
    pub critical_ns: i64,
    pub spans: u64,
    pub errors: u64,
}

impl Totals {
    fn add(&mut self, total: i64, self_ns: i64, critical: i64, error: bool) {
        self.total_ns += total;
        self.self_ns += self_ns;
        self.critical_ns += critical;
        self.spans += 1;
        self.errors += u64::from(error);
    }
}

/// Per-trace latency breakdown.
#[derive(Debug)]
pub struct Breakdown {
    pub self_times: Vec<i64>,
    pub critical: Vec<i64>,
    pub services: Vec<(Arc<str>, Totals)>,
    pub operations: Vec<(OperationKey, Totals)>,
}

/// The `p`-quantile (0..=1) of sorted values by linear interpolation between
/// closest ranks, as SQL's `percentile_cont`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = p * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

/// Aggregates, across requests, where their critical path went.
#[derive(Debug, Default)]
pub struct CrossTrace {
    traces: u64,
    durations: Vec<f64>,
    /// Per (service, operation): critical-path ns in each request, sparse.
    parts: HashMap<OperationKey, Vec<(usize, i64)>>,
}

/// Distribution of one downstream operation's part of the requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub service: Arc<str>,
    pub operation: Arc<str>,
    /// Requests in which it is on the critical path.
    pub requests: usize,
    /// Share of each request's critical path (0..=1): avg, p50, p95, p99.
    pub share: Stats,
    /// Critical-path time in ns: avg, p50, p95, p99.
    pub time_ns: Stats,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub avg: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Stats {
    /// Stats of `values`, sorting them.
    pub fn of(values: &mut [f64]) -> Self {
        values.sort_by(f64::total_cmp);
        let avg = if values.is_empty() {
            f64::NAN
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        };
        Self {
            avg,
            p50: percentile(values, 0.5),
            p95: percentile(values, 0.95),
            p99: percentile(values, 0.99),
        }
    }
}

/// Result of [`CrossTrace::finish`].
#[derive(Debug)]
pub struct CrossTraceReport {
    pub traces: u64,
    pub requests: usize,
    pub duration_ns: Stats,
    pub parts: Vec<Part>,
}

impl CrossTrace {
    /// Adds the requests of `service` (and `operation`) found in one trace.
    pub fn add_trace(&mut self, tree: &Tree, service: &str, operation: Option<&str>) {
        let entries = tree.entry_spans(service, operation);
        if entries.is_empty() {
            return;
        }
        self.traces += 1;
        for r in entries {
            let request = self.durations.len();
            self.durations.push(tree.spans[r].duration as f64);
            let mut here: HashMap<OperationKey, i64> = HashMap::new();
            for s in tree.critical_path(r) {
                let span = &tree.spans[s.span];
                *here
                    .entry((Arc::clone(&span.service), Arc::clone(&span.name)))
                    .or_default() += s.end - s.start;
            }
            for (key, ns) in here {
                self.parts.entry(key).or_default().push((request, ns));
            }
        }
    }

    /// Percentiles over all requests; a request where an operation is not on
    /// the critical path counts as 0 for it. Parts are sorted by average
    /// share, largest first. Zero-length requests count 0 in every share.
    pub fn finish(self) -> CrossTraceReport {
        let n = self.durations.len();
        let mut parts: Vec<Part> = self
            .parts
            .into_iter()
            .map(|((service, operation), hits)| {
                let mut time = vec![0.0; n];
                let mut share = vec![0.0; n];
                for &(r, ns) in &hits {
                    time[r] = ns as f64;
                    if self.durations[r] > 0.0 {
                        share[r] = ns as f64 / self.durations[r];
                    }
                }
                Part {
                    service,
                    operation,
                    requests: hits.len(),
                    share: Stats::of(&mut share),
                    time_ns: Stats::of(&mut time),
                }
            })
            .collect();
        parts.sort_by(|a, b| {
            b.share
                .avg
                .total_cmp(&a.share.avg)
                .then_with(|| a.service.cmp(&b.service))
                .then_with(|| a.operation.cmp(&b.operation))
        });
        let mut durations = self.durations;
        CrossTraceReport {
            traces: self.traces,
            requests: n,
            duration_ns: Stats::of(&mut durations),
            parts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(id, parent, service, name, kind, start, end)` in ms; error when the
    /// name ends with `!`.
    fn trace(spans: &[(u64, u64, &str, &str, &str, i64, i64)]) -> Tree {
        Tree::new(
            spans
                .iter()
                .map(|&(id, parent, service, name, kind, start, end)| Span {
                    key: 0,
                    span_id: id,
                    parent_span_id: (parent != 0).then_some(parent),
                    service: service.into(),
                    name: name.trim_end_matches('!').into(),
                    kind: kind.into(),
                    start: start * 1_000_000,
                    duration: (end - start) * 1_000_000,
                    error: name.ends_with('!'),
                })
                .collect(),
        )
    }

    /// Critical path as (span id, start ms, end ms).
    fn path(t: &Tree, from: usize) -> Vec<(u64, i64, i64)> {
        t.critical_path(from)
            .iter()
            .map(|s| {
                (
                    t.spans[s.span].span_id,
                    s.start / 1_000_000,
                    s.end / 1_000_000,
                )
            })
            .collect()
    }

    fn by_id(t: &Tree, id: u64) -> usize {
        t.spans.iter().position(|s| s.span_id == id).unwrap()
    }

    fn per_span(t: &Tree, values: &[i64]) -> Vec<(u64, i64)> {
        let mut v: Vec<_> = t
            .spans
            .iter()
            .zip(values)
            .map(|(s, &x)| (s.span_id, x / 1_000_000))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn sequential_calls() {
        // frontend 0-100 calls auth 10-30, then db 40-90 (which calls disk 50-70).
        let t = trace(&[
            (1, 0, "frontend", "GET /", "SERVER", 0, 100),
            (2, 1, "auth", "check", "SERVER", 10, 30),
            (3, 1, "db", "query", "SERVER", 40, 90),
            (4, 3, "db", "disk!", "INTERNAL", 50, 70),
        ]);
        assert_eq!(
            per_span(&t, &t.self_times()),
            [(1, 30), (2, 20), (3, 30), (4, 20)]
        );
        assert_eq!(
            path(&t, 0),
            [
                (1, 0, 10),
                (2, 10, 30),
                (1, 30, 40),
                (3, 40, 50),
                (4, 50, 70),
                (3, 70, 90),
                (1, 90, 100)
            ]
        );
        let b = t.breakdown();
        let db = b.services.iter().find(|(s, _)| &**s == "db").unwrap().1;
        assert_eq!(
            db,
            Totals {
                total_ns: 70_000_000,
                self_ns: 50_000_000,
                critical_ns: 50_000_000,
                spans: 2,
                errors: 1
            }
        );
        // Services sorted by critical-path time: db 50, frontend 30, auth 20.
        let order: Vec<_> = b.services.iter().map(|(s, _)| s.to_string()).collect();
        assert_eq!(order, ["db", "frontend", "auth"]);
        let cp: i64 = b.critical.iter().sum();
        assert_eq!(cp, 100_000_000, "the path tiles the root");
    }

    #[test]
    fn parallel_fan_out() {
        // api 0-100 fans out to a 10-60, b 10-80, c 20-50; then d 85-95.
        let t = trace(&[
            (1, 0, "api", "GET", "SERVER", 0, 100),
            (2, 1, "a", "x", "SERVER", 10, 60),
            (3, 1, "b", "y", "SERVER", 10, 80),
            (4, 1, "c", "z", "SERVER", 20, 50),
            (5, 1, "d", "w", "SERVER", 85, 95),
        ]);
        // Union of children: 10-80 and 85-95 = 80 → self 20.
        assert_eq!(per_span(&t, &t.self_times())[0], (1, 20));
        // Last to finish is d; before d started (85) b finished last (80); b
        // started at 10, and nothing ended before 10.
        assert_eq!(
            path(&t, 0),
            [
                (1, 0, 10),
                (3, 10, 80),
                (1, 80, 85),
                (5, 85, 95),
                (1, 95, 100)
            ]
        );
    }

    #[test]
    fn async_children_outliving_the_parent() {
        // handler 0-50 starts a job 40-120 (same service, overflows) and
        // publishes a message; the consumer 60-90 runs after the producer.
        let t = trace(&[
            (1, 0, "web", "POST", "SERVER", 0, 50),
            (2, 1, "web", "job", "INTERNAL", 40, 120),
            (3, 1, "web", "publish", "PRODUCER", 10, 20),
            (4, 3, "worker", "consume", "CONSUMER", 60, 90),
        ]);
        // Self time clips children: job covers 40-50, publish 10-20 → 30.
        assert_eq!(
            per_span(&t, &t.self_times()),
            [(1, 30), (2, 80), (3, 10), (4, 30)]
        );
        // The job is clipped to 40-50; the consumer is not on the path.
        assert_eq!(
            path(&t, 0),
            [(1, 0, 10), (3, 10, 20), (1, 20, 40), (2, 40, 50)]
        );
        // No skew shift: the consumer starts after its parent (async).
        assert!(t.shifts.is_empty());
    }

    #[test]
    fn missing_parents_and_multiple_roots() {
        let t = trace(&[
            (1, 0, "web", "GET", "SERVER", 0, 100),
            (2, 1, "web", "child", "INTERNAL", 10, 20),
            (3, 99, "api", "lost", "SERVER", 30, 40),
            (4, 3, "api", "under-lost", "INTERNAL", 32, 38),
            (5, 0, "cron", "tick", "INTERNAL", 0, 10),
        ]);
        let roots: Vec<_> = t.roots.iter().map(|&r| t.spans[r].span_id).collect();
        assert_eq!(roots, [1, 5, 3], "true roots by start, then orphans");
        assert!(t.orphan[by_id(&t, 3)] && !t.orphan[by_id(&t, 4)]);
        // Main root: earliest start, longest on a tie → 1 (not the cron tick).
        assert_eq!(t.spans[t.main_root().unwrap()].span_id, 1);
        let order: Vec<_> = t.order.iter().map(|&i| t.spans[i].span_id).collect();
        assert_eq!(order, [1, 2, 5, 3, 4]);
        assert_eq!(t.depth[by_id(&t, 4)], 1);
        let b = t.breakdown();
        assert_eq!(
            per_span(&t, &b.critical),
            [(1, 90), (2, 10), (3, 0), (4, 0), (5, 0)]
        );
        // An orphan alone: it is its own main root.
        let lone = trace(&[(7, 8, "x", "y", "SERVER", 5, 9)]);
        assert_eq!(lone.main_root(), Some(0));
        assert_eq!(path(&lone, 0), [(7, 5, 9)]);
    }

    #[test]
    fn clock_skew_between_services() {
        // The backend's clock is 100 ms behind: its server span (20 ms long)
        // and its db call appear before the client span 0-50.
        let t = trace(&[
            (1, 0, "frontend", "GET", "SERVER", 0, 60),
            (2, 1, "frontend", "call", "CLIENT", 5, 55),
            (3, 2, "backend", "handle", "SERVER", -95, -75),
            (4, 3, "backend", "db", "CLIENT", -90, -80),
        ]);
        // Centred in the client: 5 + (50 - 20) / 2 = 20 → shift +115 ms,
        // and the db call moves with it.
        assert_eq!(
            t.shifts,
            [SkewShift {
                span: by_id(&t, 3),
                parent: by_id(&t, 2),
                delta: 115_000_000
            }]
        );
        assert_eq!(per_span(&t, &t.skew), [(1, 0), (2, 0), (3, 115), (4, 115)]);
        assert_eq!(t.start(by_id(&t, 4)), 25_000_000);
        let order: Vec<_> = t.order.iter().map(|&i| t.spans[i].span_id).collect();
        assert_eq!(order, [1, 2, 3, 4]);
        assert_eq!(
            path(&t, t.main_root().unwrap()),
            [
                (1, 0, 5),
                (2, 5, 20),
                (3, 20, 25),
                (4, 25, 35),
                (3, 35, 40),
                (2, 40, 55),
                (1, 55, 60)
            ]
        );
        // Longer than its parent: only the starts are aligned.
        let t = trace(&[
            (1, 0, "a", "call", "CLIENT", 100, 110),
            (2, 1, "b", "serve", "SERVER", 90, 130),
        ]);
        assert_eq!(per_span(&t, &t.skew), [(1, 0), (2, 10)]);
        // A server span inside its client is never moved.
        let t = trace(&[
            (1, 0, "a", "call", "CLIENT", 0, 100),
            (2, 1, "b", "serve", "SERVER", 1, 99),
        ]);
        assert!(t.shifts.is_empty());
    }

    #[test]
    fn shared_client_server_span_ids() {
        // Zipkin's B3 model: the server half reuses the client's span id;
        // the server's child names that id as its parent.
        let t = trace(&[
            (1, 0, "web", "GET", "SERVER", 0, 100),
            (2, 1, "web", "call", "CLIENT", 10, 90),
            (2, 1, "api", "serve", "SERVER", 20, 80),
            (3, 2, "api", "db", "CLIENT", 30, 70),
        ]);
        let name = |i: usize| t.spans[i].name.to_string();
        let tree: Vec<_> = t
            .order
            .iter()
            .map(|&i| (name(i), t.depth[i], t.parent[i].map(name)))
            .collect();
        assert_eq!(
            tree,
            [
                ("GET".to_string(), 0, None),
                ("call".into(), 1, Some("GET".into())),
                ("serve".into(), 2, Some("call".into())),
                ("db".into(), 3, Some("serve".into())),
            ]
        );
        assert!(t.orphan.iter().all(|o| !o));
    }

    #[test]
    fn cross_trace_breakdown() {
        let mut x = CrossTrace::default();
        // Request 1: api 0-100, db on the path for 60.
        x.add_trace(
            &trace(&[
                (1, 0, "api", "GET", "SERVER", 0, 100),
                (2, 1, "db", "q", "SERVER", 20, 80),
            ]),
            "api",
            Some("GET"),
        );
        // Request 2: api 0-40 with no db call; request 3 is another
        // operation and is not counted.
        x.add_trace(
            &trace(&[(1, 0, "api", "GET", "SERVER", 0, 40)]),
            "api",
            Some("GET"),
        );
        x.add_trace(
            &trace(&[(1, 0, "api", "POST", "SERVER", 0, 40)]),
            "api",
            Some("GET"),
        );
        let r = x.finish();
        assert_eq!((r.traces, r.requests), (2, 2));
        let db = r.parts.iter().find(|p| &*p.service == "db").unwrap();
        // Shares 0.6 and 0: avg 0.3, p50 0.3, p95 0.57, p99 0.594.
        assert_eq!(db.requests, 1);
        assert!((db.share.avg - 0.3).abs() < 1e-12);
        assert!((db.share.p95 - 0.57).abs() < 1e-12);
        assert!((db.share.p99 - 0.594).abs() < 1e-12);
        let api = &r.parts[0];
        // api's own time: 40 of 100 and 40 of 40 → avg 0.7.
        assert_eq!(&*api.service, "api");
        assert!((api.share.avg - 0.7).abs() < 1e-12);
        assert_eq!(api.time_ns.p50, 40e6);
        assert_eq!(r.duration_ns.p50, 70e6);
    }

    #[test]
    fn percentiles_interpolate_like_percentile_cont() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert!((percentile(&v, 0.99) - 3.97).abs() < 1e-12);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
