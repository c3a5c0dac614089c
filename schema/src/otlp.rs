//! OTLP -> Arrow: validates spans and writes them straight into the column
//! builders of the spans schema, without an intermediate per-span struct.
//!
//! PERFORMANCE-CRITICAL: every ingested span passes through
//! [`SpansBuilder::append_span_columns`].

use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Date32Builder, Int32Builder, Int64Builder, StringBuilder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;

#[cfg(any(test, feature = "arbitrary"))]
pub mod arbitrary;
pub mod view;

pub use view::service_name;
use view::{
    AttributeView, Context, EventView, LinkView, ResourceRef, ScopeRef, SpanView, ValueRef,
};

use crate::attributes::{AttributesBuilder, RowOfAttributes, has_repeated_key, last_values};
use crate::layout::{AttributeSet, Layout, MAX_CONFIGURED_INT, MAX_CONFIGURED_TEXT, SetColumns};
use crate::spans::{
    DEDICATED, Dedicated, RESOURCE_DEDICATED, SPAN_KINDS, STATUS_CODES, event_fields, link_fields,
    partition_of, trace_key,
};

/// Service name stored when the resource has no `service.name` (the value
/// OpenTelemetry SDKs use).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Which spans are accepted, checked per span.
#[derive(Debug, Clone, Copy)]
pub struct Acceptance {
    /// Earliest accepted start time (Unix ns).
    pub min_start_unix_nano: i64,
    /// Latest accepted start time (Unix ns).
    pub max_start_unix_nano: i64,
}

impl Acceptance {
    /// Accepts every representable start time.
    pub const ANY_TIME: Self = Self {
        min_start_unix_nano: i64::MIN,
        max_start_unix_nano: i64::MAX,
    };
}

/// Why a span was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    InvalidTraceId,
    InvalidSpanId,
    InvalidParentSpanId,
    InvalidKind,
    InvalidStatusCode,
    EndBeforeStart,
    StartOutsideWindow,
    /// The span's trace is over its tenant's `max_bytes_per_trace`
    /// (decided by the collector, not by the conversion).
    TraceTooLarge,
}

impl Rejection {
    pub fn message(self) -> &'static str {
        match self {
            Self::InvalidTraceId => "trace_id must be 16 bytes and not all zero",
            Self::InvalidSpanId => "span_id must be 8 bytes and not all zero",
            Self::InvalidParentSpanId => "parent_span_id must be empty or 8 bytes",
            Self::InvalidKind => "kind must be a SpanKind number from 0 to 5",
            Self::InvalidStatusCode => "status.code must be a StatusCode number from 0 to 2",
            Self::EndBeforeStart => "end_time_unix_nano is before start_time_unix_nano",
            Self::StartOutsideWindow => "start_time_unix_nano is outside the accepted time window",
            Self::TraceTooLarge => "the trace is over its tenant's max_bytes_per_trace",
        }
    }

    /// Short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidTraceId => "invalid_trace_id",
            Self::InvalidSpanId => "invalid_span_id",
            Self::InvalidParentSpanId => "invalid_parent_span_id",
            Self::InvalidKind => "invalid_kind",
            Self::InvalidStatusCode => "invalid_status_code",
            Self::EndBeforeStart => "end_before_start",
            Self::StartOutsideWindow => "start_outside_window",
            Self::TraceTooLarge => "trace_too_large",
        }
    }
}

/// Spans rejected while converting one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejections {
    pub count: u64,
    /// Count per reason, in [`Rejection`] order of first appearance.
    pub reasons: Vec<(Rejection, u64)>,
}

impl Rejections {
    pub fn add(&mut self, r: Rejection) {
        self.add_n(r, 1);
    }

    /// Counts `n` spans rejected for `r`.
    pub fn add_n(&mut self, r: Rejection, n: u64) {
        if n == 0 {
            return;
        }
        self.count += n;
        match self.reasons.iter_mut().find(|(k, _)| *k == r) {
            Some((_, c)) => *c += n,
            None => self.reasons.push((r, n)),
        }
    }

    /// Human-readable summary for an OTLP `partial_success.error_message`.
    pub fn message(&self) -> String {
        let mut out = String::new();
        for (i, (reason, n)) in self.reasons.iter().enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            let _ = write!(out, "{n} span(s) rejected: {}", reason.message());
        }
        out
    }
}

fn valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|b| *b != 0)
}

/// Checks one span; `Ok` carries its start time and duration in ns.
pub fn validate<S: SpanView>(span: &S, acceptance: &Acceptance) -> Result<(i64, i64), Rejection> {
    if !valid_id(span.trace_id(), 16) {
        return Err(Rejection::InvalidTraceId);
    }
    if !valid_id(span.span_id(), 8) {
        return Err(Rejection::InvalidSpanId);
    }
    let parent = span.parent_span_id();
    if !(parent.is_empty() || parent.len() == 8) {
        return Err(Rejection::InvalidParentSpanId);
    }
    if !(0..SPAN_KINDS.len() as i32).contains(&span.kind()) {
        return Err(Rejection::InvalidKind);
    }
    if let Some((code, _)) = span.status()
        && !(0..STATUS_CODES.len() as i32).contains(&code)
    {
        return Err(Rejection::InvalidStatusCode);
    }
    let (start, end) = (span.start_time_unix_nano(), span.end_time_unix_nano());
    let start_ns = i64::try_from(start).map_err(|_| Rejection::StartOutsideWindow)?;
    if start_ns < acceptance.min_start_unix_nano || start_ns > acceptance.max_start_unix_nano {
        return Err(Rejection::StartOutsideWindow);
    }
    if end < start {
        return Err(Rejection::EndBeforeStart);
    }
    let duration = i64::try_from(end - start).map_err(|_| Rejection::EndBeforeStart)?;
    Ok((start_ns, duration))
}

enum DedicatedBuilder {
    Text(StringBuilder),
    Int(Int64Builder),
}

impl DedicatedBuilder {
    fn for_columns(columns: &[Dedicated], rows: usize) -> Vec<Self> {
        columns
            .iter()
            .map(|d| {
                if d.int {
                    Self::Int(Int64Builder::with_capacity(rows))
                } else {
                    // Most of these columns are null in most rows: no
                    // value bytes up front (they grow as values come).
                    Self::Text(StringBuilder::with_capacity(rows, 0))
                }
            })
            .collect()
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Text(b) => Arc::new(b.finish()),
            Self::Int(b) => Arc::new(b.finish()),
        }
    }
}

/// Most dedicated columns of one attribute set: the built-in ones and the
/// most a configuration adds.
const MAX_DEDICATED: usize = 72;
const _: () = assert!(
    DEDICATED.len() + MAX_CONFIGURED_TEXT + MAX_CONFIGURED_INT <= MAX_DEDICATED
        && RESOURCE_DEDICATED.len() + MAX_CONFIGURED_TEXT + MAX_CONFIGURED_INT <= MAX_DEDICATED
);

/// Where the attributes of one set go, worked out once for every row that
/// holds the set (all the spans of a resource): for each dedicated column of
/// the set's scope, the attribute whose value it takes (its key's last
/// value, when that has the column's type); and the attributes the map
/// keeps (the rest), each key once, with its last value, where the key first
/// appeared. Indices into the set, so a plan holds no borrow and is reused.
struct Plan {
    picked: [Option<u32>; MAX_DEDICATED],
    map: Vec<u32>,
    /// Rows written from this plan since it was made.
    rows: usize,
    /// The map's row as written, once [`Plan::append_n`] has written it.
    row: Option<RowOfAttributes>,
}

impl Plan {
    fn new() -> Self {
        Self {
            picked: [None; MAX_DEDICATED],
            map: Vec::new(),
            rows: 0,
            row: None,
        }
    }

    fn reset(&mut self) {
        self.map.clear();
        self.rows = 0;
        self.row = None;
    }

    fn make<A: AttributeView>(&mut self, attrs: &[A], scope: &SetColumns) {
        self.reset();
        self.picked = [None; MAX_DEDICATED];
        let mut any = false;
        for (i, kv) in attrs.iter().enumerate() {
            if let Some(c) = scope.index(kv.key()) {
                self.picked[c] = Some(i as u32);
                any = true;
            }
        }
        // The attributes the columns take (at most one a column).
        let mut taken = [0u32; MAX_DEDICATED];
        let mut n_taken = 0;
        if any {
            for (pick, column) in self.picked.iter_mut().zip(&scope.columns) {
                let Some(i) = *pick else { continue };
                let fits = matches!(
                    (column.int, attrs[i as usize].value()),
                    (false, ValueRef::Str(_)) | (true, ValueRef::Int(_))
                );
                if fits {
                    taken[n_taken] = i;
                    n_taken += 1;
                } else {
                    *pick = None;
                }
            }
        }
        self.keep(attrs, &taken[..n_taken]);
    }

    /// A plan of a set without dedicated columns (a scope's): the map
    /// keeps every key. (The picks are read only along the set's columns,
    /// so they are left as they are.)
    fn make_unpicked<A: AttributeView>(&mut self, attrs: &[A]) {
        self.reset();
        self.keep(attrs, &[]);
    }

    /// The map keeps each key of `attrs` once, but those `taken`.
    fn keep<A: AttributeView>(&mut self, attrs: &[A], taken: &[u32]) {
        let kept = |i: &u32| !taken.contains(i);
        if has_repeated_key(attrs) {
            self.map.extend(last_values(attrs).filter(kept));
        } else {
            self.map.extend((0..attrs.len() as u32).filter(kept));
        }
    }

    /// One row: the picked values into `columns`, the rest of `attrs` (the
    /// set the plan was made of) into `map`.
    fn append<A: AttributeView>(
        &self,
        attrs: &[A],
        columns: &mut [DedicatedBuilder],
        map: &mut AttributesBuilder,
    ) {
        for (builder, pick) in columns.iter_mut().zip(&self.picked) {
            match (builder, pick.map(|i| attrs[i as usize].value())) {
                (DedicatedBuilder::Text(b), Some(ValueRef::Str(s))) => b.append_value(s),
                (DedicatedBuilder::Int(b), Some(ValueRef::Int(i))) => b.append_value(i),
                (DedicatedBuilder::Text(b), _) => b.append_null(),
                (DedicatedBuilder::Int(b), _) => b.append_null(),
            }
        }
        map.append_unique(self.map.iter().map(|&i| &attrs[i as usize]));
    }

    /// The bytes of the picked string values: what a row adds to the
    /// dedicated text columns.
    fn texts<A: AttributeView>(&self, attrs: &[A], columns: &[DedicatedBuilder]) -> usize {
        columns
            .iter()
            .zip(&self.picked)
            .filter_map(|(builder, pick)| {
                match (builder, pick.map(|i| attrs[i as usize].value())) {
                    (DedicatedBuilder::Text(_), Some(ValueRef::Str(s))) => Some(s.len()),
                    _ => None,
                }
            })
            .sum()
    }

    /// `rows` rows of the same set: each column's value written `rows`
    /// times at once; the map's row written once, kept with the plan while
    /// it is `reused` for later rows (the spans of a context that arrive
    /// one by one; kept from the second, as many contexts hold one span),
    /// and copied into each row. Every row is charged to `repeated`: copies
    /// before they are written (nothing is written over its limit), a row
    /// written from the request once it is (it is no larger than the
    /// request, and nothing more is written once over).
    fn append_n<A: AttributeView>(
        &mut self,
        attrs: &[A],
        columns: &mut [DedicatedBuilder],
        map: &mut AttributesBuilder,
        rows: usize,
        reused: bool,
        repeated: &mut Repeated,
    ) {
        if rows == 0 {
            return;
        }
        let first = self.rows == 0;
        self.rows += rows;
        let texts = self.texts(attrs, columns);
        if rows == 1 && (!reused || first) {
            let before = map.bytes();
            self.append(attrs, columns, map);
            repeated.take(texts + map.bytes() - before, 1);
            return;
        }
        let row = if self.map.is_empty() {
            // Nothing in the map (no attributes, as most scopes): empty
            // rows, no row to copy.
            None
        } else {
            let kept = &self.map;
            Some(&*self.row.get_or_insert_with(|| {
                RowOfAttributes::new(kept.iter().map(|&i| &attrs[i as usize]))
            }))
        };
        if !repeated.take(texts + row.map_or(0, RowOfAttributes::bytes), rows) {
            return;
        }
        for (builder, pick) in columns.iter_mut().zip(&self.picked) {
            match (builder, pick.map(|i| attrs[i as usize].value())) {
                (DedicatedBuilder::Text(b), Some(ValueRef::Str(s))) => b.append_value_n(s, rows),
                (DedicatedBuilder::Int(b), Some(ValueRef::Int(i))) => b.append_value_n(i, rows),
                (DedicatedBuilder::Text(b), _) => b.append_nulls(rows),
                (DedicatedBuilder::Int(b), _) => b.append_nulls(rows),
            }
        }
        match row {
            Some(row) => map.append_row_n(row, rows),
            None => map.append_empty_n(rows),
        }
    }
}

/// The most bytes of values that the rows of one batch may hold of their
/// resources' and scopes' (every span is stored with its resource and
/// scope: a request of a large resource over many small spans grows many
/// times over once decoded). It bounds what one request may take in memory
/// and keeps every column of a batch well under Arrow's 2 GiB of 32-bit
/// offsets.
pub const MAX_REPEATED_BYTES: usize = 256 << 20;

/// A batch whose rows would copy more than [`MAX_REPEATED_BYTES`] of
/// their resources' and scopes' values ([`SpansBuilder::try_finish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "too large once decoded: its spans would hold at least {needed} bytes of their resources' \
     and scopes' values, over the limit of {limit} (each span is stored with its resource and \
     scope): send fewer spans per request, or smaller resources"
)]
pub struct TooLarge {
    pub needed: usize,
    pub limit: usize,
}

/// What the rows of a batch hold of their resources' and scopes' values,
/// against the limit; over it, the builder writes nothing more.
#[derive(Debug)]
struct Repeated {
    used: usize,
    limit: usize,
    over: Option<TooLarge>,
}

impl Repeated {
    fn new(limit: usize) -> Self {
        Self {
            used: 0,
            limit,
            over: None,
        }
    }

    /// Takes `rows` copies of `bytes`: false, and over for good, when that
    /// passes the limit (or when already over).
    #[inline]
    fn take(&mut self, bytes: usize, rows: usize) -> bool {
        if self.over.is_some() {
            return false;
        }
        let needed = bytes
            .checked_mul(rows)
            .and_then(|b| b.checked_add(self.used))
            .unwrap_or(usize::MAX);
        if needed > self.limit {
            self.over = Some(TooLarge {
                needed,
                limit: self.limit,
            });
            return false;
        }
        self.used = needed;
        true
    }
}

/// Column builders for a batch of rows in the spans schema.
pub struct SpansBuilder {
    trace_id: BinaryBuilder,
    trace_key: Int64Builder,
    span_id: BinaryBuilder,
    parent_span_id: BinaryBuilder,
    trace_state: StringBuilder,
    flags: Int64Builder,
    name: StringBuilder,
    kind: StringBuilder,
    service_name: StringBuilder,
    start_time_unix_nano: Int64Builder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    dedicated: Vec<DedicatedBuilder>,
    attributes: AttributesBuilder,
    dropped_attributes_count: Int64Builder,
    events: EventsBuilder,
    dropped_events_count: Int64Builder,
    links: LinksBuilder,
    dropped_links_count: Int64Builder,
    resource_attributes: AttributesBuilder,
    resource_dropped_attributes_count: Int64Builder,
    resource_schema_url: StringBuilder,
    resource_dedicated: Vec<DedicatedBuilder>,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attributes: AttributesBuilder,
    scope_dropped_attributes_count: Int64Builder,
    scope_schema_url: StringBuilder,
    date: Date32Builder,
    hour: Int32Builder,
    rows: usize,
    layout: Arc<Layout>,
    /// The plan of the span attributes, remade for every span.
    span_plan: Plan,
    /// The plan of the resource attributes of [`Context`]
    /// `resource_context` (0: of none), and the index of its
    /// `service.name`.
    resource_plan: Plan,
    resource_service: Option<u32>,
    resource_context: u64,
    /// The plan of the scope attributes of [`Context`] `scope_context`.
    scope_plan: Plan,
    scope_context: u64,
    repeated: Repeated,
}

impl Default for SpansBuilder {
    fn default() -> Self {
        Self::with_capacity(1024)
    }
}

/// Writes `s`, or a null when it is empty (empty and absent mean the same in
/// OTLP, and nulls are cheaper to store and clearer in SQL).
fn append_opt_str(b: &mut StringBuilder, s: &str) {
    if s.is_empty() {
        b.append_null();
    } else {
        b.append_value(s);
    }
}

/// [`append_opt_str`] for `n` rows.
fn append_opt_str_n(b: &mut StringBuilder, s: &str, n: usize) {
    if s.is_empty() {
        b.append_nulls(n);
    } else {
        b.append_value_n(s, n);
    }
}

impl SpansBuilder {
    /// Builders for about `rows` rows in the standard layout.
    pub fn with_capacity(rows: usize) -> Self {
        Self::for_layout(Arc::clone(Layout::standard()), rows)
    }

    /// Builders for about `rows` rows in `layout` (a table's, with its
    /// configured dedicated columns).
    pub fn for_layout(layout: Arc<Layout>, rows: usize) -> Self {
        let text = || StringBuilder::with_capacity(rows, rows * 16);
        let int = || Int64Builder::with_capacity(rows);
        let ids = |len| BinaryBuilder::with_capacity(rows, rows * len);
        Self {
            trace_id: ids(16),
            trace_key: int(),
            span_id: ids(8),
            parent_span_id: ids(8),
            trace_state: text(),
            flags: int(),
            name: text(),
            kind: text(),
            service_name: text(),
            start_time_unix_nano: int(),
            duration_ns: int(),
            status_code: text(),
            status_message: text(),
            dedicated: DedicatedBuilder::for_columns(&layout.span().columns, rows),
            attributes: AttributesBuilder::with_capacity(rows),
            dropped_attributes_count: int(),
            events: EventsBuilder::default(),
            dropped_events_count: int(),
            links: LinksBuilder::default(),
            dropped_links_count: int(),
            resource_attributes: AttributesBuilder::with_capacity(rows),
            resource_dropped_attributes_count: int(),
            resource_schema_url: text(),
            resource_dedicated: DedicatedBuilder::for_columns(&layout.resource().columns, rows),
            scope_name: text(),
            scope_version: text(),
            scope_attributes: AttributesBuilder::with_capacity(rows),
            scope_dropped_attributes_count: int(),
            scope_schema_url: text(),
            date: Date32Builder::with_capacity(rows),
            hour: Int32Builder::with_capacity(rows),
            rows: 0,
            layout,
            span_plan: Plan::new(),
            resource_plan: Plan::new(),
            resource_service: None,
            resource_context: 0,
            scope_plan: Plan::new(),
            scope_context: 0,
            repeated: Repeated::new(MAX_REPEATED_BYTES),
        }
    }

    /// Lowers the limit on copies of resource and scope values from
    /// [`MAX_REPEATED_BYTES`] (it cannot be raised: the limit keeps columns
    /// within 32-bit offsets).
    pub fn limit_repeated_bytes(&mut self, bytes: usize) {
        self.repeated.limit = bytes.min(MAX_REPEATED_BYTES);
    }

    /// No limit on resource and scope values, for rows rewritten from one
    /// stored batch (a row each, no larger than the batch's own, whose
    /// columns fit 32-bit offsets).
    pub(crate) fn without_repeated_limit(mut self) -> Self {
        self.repeated.limit = usize::MAX;
        self
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Validates and appends every span of `request`; rejected spans are
    /// counted, the others appended.
    pub fn append_request(
        &mut self,
        request: &ExportTraceServiceRequest,
        acceptance: &Acceptance,
    ) -> Rejections {
        let mut rejections = Rejections::default();
        let empty_resource = Resource::default();
        let empty_scope = InstrumentationScope::default();
        for rs in &request.resource_spans {
            let resource = rs.resource.as_ref().unwrap_or(&empty_resource);
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref().unwrap_or(&empty_scope);
                let context = Context::new(
                    ResourceRef {
                        attributes: &resource.attributes,
                        dropped_attributes_count: resource.dropped_attributes_count,
                        schema_url: &rs.schema_url,
                    },
                    ScopeRef {
                        name: &scope.name,
                        version: &scope.version,
                        attributes: &scope.attributes,
                        dropped_attributes_count: scope.dropped_attributes_count,
                        schema_url: &ss.schema_url,
                    },
                );
                for span in &ss.spans {
                    if let Err(r) = self.append_span(span, &context, acceptance) {
                        rejections.add(r);
                    }
                }
            }
        }
        rejections
    }

    /// Validates `span` and appends it as one row with its resource and
    /// scope, or leaves the builder as it was and says why not: for writers
    /// that hold OTLP structs ([`append_request`](Self::append_request), the
    /// v2 upgrade). The decoders that write straight from request bodies
    /// (`tracelake_protocols`) write a group's rows with
    /// [`append_span_columns`](Self::append_span_columns) instead.
    pub fn append_span<S: SpanView>(
        &mut self,
        span: &S,
        cx: &Context<'_, S::Attribute>,
        acceptance: &Acceptance,
    ) -> Result<(), Rejection> {
        self.append_span_columns(span, acceptance)?;
        self.scope_columns(&cx.scope, cx.id, 1);
        self.resource_columns(&cx.resource, cx.id, 1);
        Ok(())
    }

    /// The span's own columns of a new row, for decoders that write a
    /// group of spans at a time (and may learn its resource or scope only
    /// after its spans: JSON objects have no field order): they then write
    /// the group's scope and resource columns for all its rows at once with
    /// [`append_scope_columns`](Self::append_scope_columns) and
    /// [`append_resource_columns`](Self::append_resource_columns), before
    /// the next group's rows. Until they have, the builder must not be
    /// finished.
    ///
    /// Once the rows are over the limit on copies ([`TooLarge`]) nothing
    /// more is written: [`try_finish`](Self::try_finish) says so.
    pub fn append_span_columns<S: SpanView>(
        &mut self,
        span: &S,
        acceptance: &Acceptance,
    ) -> Result<(), Rejection> {
        if self.repeated.over.is_some() {
            return Ok(());
        }
        let (start, duration) = validate(span, acceptance)?;
        self.rows += 1;
        let trace_id = span.trace_id();
        self.trace_id.append_value(trace_id);
        self.trace_key.append_value(trace_key(trace_id));
        self.span_id.append_value(span.span_id());
        let parent = span.parent_span_id();
        if parent.is_empty() {
            self.parent_span_id.append_null();
        } else {
            self.parent_span_id.append_value(parent);
        }
        append_opt_str(&mut self.trace_state, span.trace_state());
        self.flags.append_value(i64::from(span.flags()));
        self.name.append_value(span.name());
        self.kind.append_value(SPAN_KINDS[span.kind() as usize]);
        self.start_time_unix_nano.append_value(start);
        self.duration_ns.append_value(duration);
        match span.status() {
            Some((code, message)) => {
                self.status_code.append_value(STATUS_CODES[code as usize]);
                append_opt_str(&mut self.status_message, message);
            }
            None => {
                self.status_code.append_value(STATUS_CODES[0]);
                self.status_message.append_null();
            }
        }
        self.append_attributes(span.attributes());
        self.dropped_attributes_count
            .append_value(i64::from(span.dropped_attributes_count()));
        self.events.append(span.events());
        self.dropped_events_count
            .append_value(i64::from(span.dropped_events_count()));
        self.links.append(span.links());
        self.dropped_links_count
            .append_value(i64::from(span.dropped_links_count()));
        let (date, hour) = partition_of(start);
        self.date.append_value(date);
        self.hour.append_value(hour);
        Ok(())
    }

    /// The scope columns of the last `rows` rows.
    pub fn append_scope_columns<A: AttributeView>(&mut self, scope: &ScopeRef<'_, A>, rows: usize) {
        self.scope_columns(scope, 0, rows);
    }

    /// The scope columns of the last `rows` rows, from the plan made for
    /// the scope of context `context` when it is the last one planned (0:
    /// a scope of no context, planned anew).
    fn scope_columns<A: AttributeView>(
        &mut self,
        scope: &ScopeRef<'_, A>,
        context: u64,
        rows: usize,
    ) {
        let texts = scope.name.len() + scope.version.len() + scope.schema_url.len();
        if rows == 0 || !self.repeated.take(texts, rows) {
            return;
        }
        if context == 0 || context != self.scope_context {
            self.scope_plan.make_unpicked(scope.attributes);
            self.scope_context = context;
        }
        append_opt_str_n(&mut self.scope_name, scope.name, rows);
        append_opt_str_n(&mut self.scope_version, scope.version, rows);
        self.scope_plan.append_n(
            scope.attributes,
            &mut [],
            &mut self.scope_attributes,
            rows,
            context != 0,
            &mut self.repeated,
        );
        self.scope_dropped_attributes_count
            .append_value_n(i64::from(scope.dropped_attributes_count), rows);
        append_opt_str_n(&mut self.scope_schema_url, scope.schema_url, rows);
    }

    /// The resource columns (and the service name) of the last `rows` rows.
    pub fn append_resource_columns<A: AttributeView>(
        &mut self,
        resource: &ResourceRef<'_, A>,
        rows: usize,
    ) {
        self.resource_columns(resource, 0, rows);
    }

    /// The resource columns of the last `rows` rows, from the plan made for
    /// the resource of context `context` when it is the last one planned
    /// (0: a resource of no context, planned anew).
    fn resource_columns<A: AttributeView>(
        &mut self,
        resource: &ResourceRef<'_, A>,
        context: u64,
        rows: usize,
    ) {
        let attrs = resource.attributes;
        if rows == 0 {
            return;
        }
        if context == 0 || context != self.resource_context {
            self.resource_plan.make(attrs, self.layout.resource());
            // The first `service.name`, when it is a string.
            self.resource_service = attrs
                .iter()
                .position(|kv| kv.key() == "service.name")
                .filter(|&i| matches!(attrs[i].value(), ValueRef::Str(_)))
                .map(|i| i as u32);
            self.resource_context = context;
        }
        let service = match self.resource_service.map(|i| attrs[i as usize].value()) {
            Some(ValueRef::Str(s)) => s,
            _ => UNKNOWN_SERVICE,
        };
        if !self
            .repeated
            .take(service.len() + resource.schema_url.len(), rows)
        {
            return;
        }
        self.service_name.append_value_n(service, rows);
        self.resource_plan.append_n(
            attrs,
            &mut self.resource_dedicated,
            &mut self.resource_attributes,
            rows,
            context != 0,
            &mut self.repeated,
        );
        self.resource_dropped_attributes_count
            .append_value_n(i64::from(resource.dropped_attributes_count), rows);
        append_opt_str_n(&mut self.resource_schema_url, resource.schema_url, rows);
    }

    /// The span attributes: each [dedicated](DEDICATED) key (built in or
    /// configured) whose (last) value has its column's type into that
    /// column, the rest into the map.
    fn append_attributes<A: AttributeView>(&mut self, attrs: &[A]) {
        self.span_plan.make(attrs, self.layout.span());
        self.span_plan
            .append(attrs, &mut self.dedicated, &mut self.attributes);
    }

    /// Takes the appended rows as a batch in the spans schema and resets the
    /// builder.
    ///
    /// # Panics
    /// When the rows went over the limit on copies of resource and scope
    /// values: writers of requests from clients use
    /// [`try_finish`](Self::try_finish).
    pub fn finish(&mut self) -> RecordBatch {
        self.try_finish()
            .unwrap_or_else(|e| panic!("rows over the builder's limit: {e}"))
    }

    /// Takes the appended rows as a batch in the spans schema, or says
    /// that they went over the limit on copies of resource and scope values
    /// (and drops them); resets the builder.
    pub fn try_finish(&mut self) -> Result<RecordBatch, TooLarge> {
        let limit = self.repeated.limit;
        if let Some(over) = self.repeated.over {
            let layout = Arc::clone(&self.layout);
            *self = Self::for_layout(layout, 0);
            self.repeated.limit = limit;
            return Err(over);
        }
        self.repeated = Repeated::new(limit);
        let (attributes, attribute_types) = self.attributes.finish();
        let (resource_attributes, resource_attribute_types) = self.resource_attributes.finish();
        let (scope_attributes, scope_attribute_types) = self.scope_attributes.finish();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.trace_key.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.start_time_unix_nano.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
        ];
        let span_builtin = self.layout.span().builtin_len();
        let resource_builtin = self.layout.resource().builtin_len();
        columns.extend(
            self.dedicated[..span_builtin]
                .iter_mut()
                .map(DedicatedBuilder::finish),
        );
        columns.extend([
            Arc::new(attributes) as ArrayRef,
            Arc::new(attribute_types),
            Arc::new(self.dropped_attributes_count.finish()),
            Arc::new(self.events.finish()),
            Arc::new(self.dropped_events_count.finish()),
            Arc::new(self.links.finish()),
            Arc::new(self.dropped_links_count.finish()),
            Arc::new(resource_attributes),
            Arc::new(resource_attribute_types),
            Arc::new(self.resource_dropped_attributes_count.finish()),
            Arc::new(self.resource_schema_url.finish()),
        ]);
        columns.extend(
            self.resource_dedicated[..resource_builtin]
                .iter_mut()
                .map(DedicatedBuilder::finish),
        );
        columns.extend([
            Arc::new(self.scope_name.finish()) as ArrayRef,
            Arc::new(self.scope_version.finish()),
            Arc::new(scope_attributes),
            Arc::new(scope_attribute_types),
            Arc::new(self.scope_dropped_attributes_count.finish()),
            Arc::new(self.scope_schema_url.finish()),
        ]);
        // The configured columns ([`Layout`]) in the order the layout has
        // them (each set's in its own order), before the partition columns.
        let mut span = self.dedicated[span_builtin..].iter_mut();
        let mut resource = self.resource_dedicated[resource_builtin..].iter_mut();
        for configured in self.layout.configured() {
            let builder = match configured.set {
                AttributeSet::Span => span.next(),
                AttributeSet::Resource => resource.next(),
            };
            columns.push(builder.expect("a builder per configured column").finish());
        }
        columns.extend([
            Arc::new(self.date.finish()) as ArrayRef,
            Arc::new(self.hour.finish()),
        ]);
        self.rows = 0;
        Ok(
            RecordBatch::try_new(Arc::clone(self.layout.schema()), columns)
                .expect("builders produce their layout's schema"),
        )
    }
}

/// `events: List<Struct>` built column by column.
struct EventsBuilder {
    offsets: Vec<i32>,
    time: Int64Builder,
    name: StringBuilder,
    attributes: AttributesBuilder,
    dropped: Int64Builder,
}

impl Default for EventsBuilder {
    fn default() -> Self {
        Self {
            offsets: vec![0],
            time: Int64Builder::new(),
            name: StringBuilder::new(),
            attributes: AttributesBuilder::with_capacity(0),
            dropped: Int64Builder::new(),
        }
    }
}

impl EventsBuilder {
    fn append<E: EventView>(&mut self, events: &[E]) {
        for e in events {
            self.time.append_value(e.time_unix_nano() as i64);
            self.name.append_value(e.name());
            self.attributes.append(e.attributes());
            self.dropped
                .append_value(i64::from(e.dropped_attributes_count()));
        }
        let last = *self.offsets.last().expect("offsets start at 0");
        self.offsets.push(last + events.len() as i32);
    }

    fn finish(&mut self) -> ListArray {
        let (attributes, types) = self.attributes.finish();
        let values = StructArray::new(
            event_fields(),
            vec![
                Arc::new(self.time.finish()),
                Arc::new(self.name.finish()),
                Arc::new(attributes),
                Arc::new(types),
                Arc::new(self.dropped.finish()),
            ],
            None,
        );
        finish_list(&mut self.offsets, values)
    }
}

/// `links: List<Struct>` built column by column.
struct LinksBuilder {
    offsets: Vec<i32>,
    trace_id: BinaryBuilder,
    span_id: BinaryBuilder,
    trace_state: StringBuilder,
    flags: Int64Builder,
    attributes: AttributesBuilder,
    dropped: Int64Builder,
}

impl Default for LinksBuilder {
    fn default() -> Self {
        Self {
            offsets: vec![0],
            trace_id: BinaryBuilder::new(),
            span_id: BinaryBuilder::new(),
            trace_state: StringBuilder::new(),
            flags: Int64Builder::new(),
            attributes: AttributesBuilder::with_capacity(0),
            dropped: Int64Builder::new(),
        }
    }
}

impl LinksBuilder {
    fn append<L: LinkView>(&mut self, links: &[L]) {
        for l in links {
            self.trace_id.append_value(l.trace_id());
            self.span_id.append_value(l.span_id());
            append_opt_str(&mut self.trace_state, l.trace_state());
            self.flags.append_value(i64::from(l.flags()));
            self.attributes.append(l.attributes());
            self.dropped
                .append_value(i64::from(l.dropped_attributes_count()));
        }
        let last = *self.offsets.last().expect("offsets start at 0");
        self.offsets.push(last + links.len() as i32);
    }

    fn finish(&mut self) -> ListArray {
        let (attributes, types) = self.attributes.finish();
        let values = StructArray::new(
            link_fields(),
            vec![
                Arc::new(self.trace_id.finish()),
                Arc::new(self.span_id.finish()),
                Arc::new(self.trace_state.finish()),
                Arc::new(self.flags.finish()),
                Arc::new(attributes),
                Arc::new(types),
                Arc::new(self.dropped.finish()),
            ],
            None,
        );
        finish_list(&mut self.offsets, values)
    }
}

fn finish_list(offsets: &mut Vec<i32>, values: StructArray) -> ListArray {
    let offsets = std::mem::replace(offsets, vec![0]);
    let field = match crate::spans::list_of(values.fields().clone()) {
        arrow_schema::DataType::List(field) => field,
        _ => unreachable!("list_of returns a list type"),
    };
    let no_nulls: Option<NullBuffer> = None;
    ListArray::new(
        field,
        OffsetBuffer::new(offsets.into()),
        Arc::new(values),
        no_nulls,
    )
}

#[cfg(test)]
mod tests;
