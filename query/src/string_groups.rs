//! The partial stage of a grouping on string columns, by the strings'
//! views.
//!
//! DataFusion hashes every row's whole string to find its group
//! (`GroupValuesBytesView`; two or more keys go through their own
//! builders). Most string columns of the spans table are stored with a
//! dictionary, and the Parquet reader makes each row's view point at the
//! one copy of its value in that dictionary: within a batch, the rows of
//! one value carry the same 16-byte view. [`StringGroups`] replaces each
//! partial aggregation whose keys are all string-view columns with
//! [`PartialStringAggregateExec`], which finds a row's group by its view
//! in a small cache first and hashes the string only when the cache has
//! not seen that view in the batch (once per distinct value and batch
//! where a batch has fewer values than the cache's 256 slots). A grouping
//! by `service_name` took 60% of its time in DataFusion's string hashing
//! and comparison (BENCHMARKS.md, "Grouping on strings by their views").
//!
//! It is a partial stage, as the node it replaces: it emits the same
//! columns (the keys, then each aggregate's state), and the final stage
//! above merges them unchanged. Partial states may be emitted at any time,
//! which bounds its memory without spilling: when the query's memory pool
//! refuses it more, it emits what it holds and starts again; and where
//! nearly every row is a group of its own (DataFusion's
//! `skip_partial_aggregation_probe_*` settings), it emits after every
//! batch, as DataFusion then skips the partial stage. States that are
//! lists of values (an exact percentile's) go out in pieces once they pass
//! a megabyte ([`PIECE`]).
//!
//! Plans sent to SQL workers keep DataFusion's own node, which the workers
//! know ([`crate::distributed`] leaves this rule out).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringViewArray, StringViewBuilder, UInt32Array};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{HashMap, Result, Statistics, internal_err};
use datafusion::config::ConfigOptions;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::OrderingRequirements;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, aggregate_expressions};
use datafusion::physical_plan::execution_plan::{
    CardinalityEffect, ChildrenPropertiesMode, ReplaceChildrenOptions,
};
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements,
    InputOrderMode, PlanProperties, SendableRecordBatchStream, StatisticsArgs,
};
use futures::StreamExt;

/// The physical optimizer rule: every eligible partial aggregation (see
/// [`PartialStringAggregateExec::try_new`]) becomes a
/// [`PartialStringAggregateExec`].
#[derive(Debug, Default)]
pub struct StringGroups;

impl StringGroups {
    pub const NAME: &'static str = "partial_string_aggregation";
}

impl PhysicalOptimizerRule for StringGroups {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(
            |node| match PartialStringAggregateExec::try_new(Arc::clone(&node)) {
                Some(exec) => Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>)),
                None => Ok(Transformed::no(node)),
            },
        )
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        Self::NAME
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A partial aggregation grouped by string-view columns, by their views.
#[derive(Debug)]
pub struct PartialStringAggregateExec {
    /// The node this one stands for: its input, keys, aggregates, schema
    /// and properties.
    aggregate: Arc<dyn ExecutionPlan>,
    /// The keys' positions in the input.
    keys: Vec<usize>,
    metrics: ExecutionPlanMetricsSet,
}

impl PartialStringAggregateExec {
    /// The node standing for `plan` where it is a partial aggregation of
    /// one grouping set, grouped by input columns that are all string
    /// views, with no limit, over unordered input, and every aggregate has
    /// a groups accumulator and no `DISTINCT`.
    pub fn try_new(plan: Arc<dyn ExecutionPlan>) -> Option<Self> {
        let aggregate = plan.downcast_ref::<AggregateExec>()?;
        let group_by = aggregate.group_expr();
        let eligible = *aggregate.mode() == AggregateMode::Partial
            && group_by.is_single()
            && !group_by.has_grouping_set()
            && !group_by.expr().is_empty()
            && aggregate.limit_options().is_none()
            && *aggregate.input_order_mode() == InputOrderMode::Linear
            && aggregate
                .aggr_expr()
                .iter()
                .all(|a| a.groups_accumulator_supported() && !a.is_distinct());
        if !eligible {
            return None;
        }
        let input = aggregate.input().schema();
        let keys = group_by
            .expr()
            .iter()
            .map(|(expr, _)| {
                let column = expr.downcast_ref::<Column>()?;
                (input.field(column.index()).data_type() == &DataType::Utf8View)
                    .then_some(column.index())
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            aggregate: plan,
            keys,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn inner(&self) -> &AggregateExec {
        self.aggregate
            .downcast_ref::<AggregateExec>()
            .expect("made from an AggregateExec")
    }
}

impl DisplayAs for PartialStringAggregateExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !matches!(t, DisplayFormatType::TreeRender) {
            write!(f, "PartialStringAggregateExec: ")?;
        }
        self.inner().fmt_as(t, f)
    }
}

impl ExecutionPlan for PartialStringAggregateExec {
    fn name(&self) -> &str {
        "PartialStringAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.aggregate.input_distribution_requirements()
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        self.aggregate.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        self.aggregate.cardinality_effect()
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.aggregate.child_stats_requests(partition)
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.aggregate.statistics_from_inputs(input_stats, args)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.aggregate.children()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let aggregate = Arc::clone(&self.aggregate).replace_children(children, options)?;
        match Self::try_new(Arc::clone(&aggregate)) {
            Some(exec) => Ok(Arc::new(exec)),
            // A child whose schema differs: DataFusion's node.
            None => Ok(aggregate),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let aggregate = self.inner();
        let input = aggregate.input().execute(partition, Arc::clone(&context))?;
        let options = &context.session_config().options().execution;
        // As DataFusion's: off at a ratio of 1 or more.
        let probe = (options.skip_partial_aggregation_probe_ratio_threshold < 1.0).then_some((
            options.skip_partial_aggregation_probe_rows_threshold,
            options.skip_partial_aggregation_probe_ratio_threshold,
        ));
        let groups = Groups {
            interners: self.keys.iter().map(|_| Interner::new()).collect(),
            keys: self.keys.clone(),
            accumulators: aggregate
                .aggr_expr()
                .iter()
                .map(|a| a.create_groups_accumulator())
                .collect::<Result<_>>()?,
            arguments: aggregate_expressions(aggregate.aggr_expr(), aggregate.mode(), 0)?,
            filters: aggregate.filter_expr().to_vec(),
            levels: self.keys.iter().skip(1).map(|_| Level::default()).collect(),
            codes: Vec::new(),
            indices: Vec::new(),
            len: 0,
        };
        let schema = aggregate.schema();
        let state = Stream {
            input,
            groups,
            schema: Arc::clone(&schema),
            // It gives memory back by emitting early, as DataFusion's
            // partial stages, which count as spilling.
            reservation: MemoryConsumer::new(format!("PartialStringAggregateExec[{partition}]"))
                .with_can_spill(true)
                .register(context.memory_pool()),
            batch_size: context.session_config().batch_size(),
            probe,
            rows_seen: 0,
            groups_emitted: 0,
            lists: aggregate.aggr_expr().iter().any(|a| {
                a.state_fields().is_ok_and(|fields| {
                    fields.iter().any(|f| {
                        matches!(
                            f.data_type(),
                            DataType::List(_) | DataType::LargeList(_) | DataType::ListView(_)
                        )
                    })
                })
            }),
            first: None,
            every_batch: false,
            pending: VecDeque::new(),
            done: false,
            metrics: BaselineMetrics::new(&self.metrics, partition),
        };
        let stream = futures::stream::try_unfold(state, |mut state| async move {
            loop {
                if let Some(batch) = state.pending.pop_front() {
                    state.metrics.record_output(batch.num_rows());
                    return Ok(Some((batch, state)));
                }
                if state.done {
                    return Ok(None);
                }
                match state.input.next().await {
                    Some(batch) => state.add(&batch?)?,
                    None => {
                        state.done = true;
                        state.emit()?;
                    }
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// States that are lists of values (an exact percentile's or median's,
/// `array_agg`'s: a list among an aggregate's state fields) grow with the
/// rows rather than the groups, and are emitted in pieces: once the states
/// pass `PIECE` bytes and hold `GROWN` times the bytes a group they held
/// after the first batch since the last emit (more than the slack of a
/// vector's capacity explains: many groups of short lists stay together).
/// The final stage merges the pieces as it would the partitions' states.
/// A percentile per operation over 100 M spans took 4.5-5.4 s emitted
/// whole and 3.1-3.6 s in pieces of 1 MiB (BENCHMARKS.md, "Grouping on
/// strings by their views"). Other states (counts, sums, sketches,
/// strings) stay until the end, as in DataFusion's node.
const PIECE: usize = 1 << 20;
const GROWN: usize = 4;

/// The state of one partition's stream.
struct Stream {
    input: SendableRecordBatchStream,
    groups: Groups,
    schema: SchemaRef,
    reservation: MemoryReservation,
    batch_size: usize,
    /// DataFusion's skip-partial-aggregation probe: (rows, ratio of groups
    /// to rows); `None`: off.
    probe: Option<(usize, f64)>,
    /// Rows in, and groups out before the ones held (a group once per
    /// emit that held it).
    rows_seen: usize,
    groups_emitted: usize,
    /// Whether an aggregate's state is a list of values; and the
    /// accumulators' bytes a group after the first batch since the last
    /// emit.
    lists: bool,
    first: Option<usize>,
    /// Nearly every row is a group of its own: emit after every batch.
    every_batch: bool,
    pending: VecDeque<RecordBatch>,
    done: bool,
    metrics: BaselineMetrics,
}

impl Stream {
    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let timer = self.metrics.elapsed_compute().timer();
        self.groups.update(batch)?;
        self.rows_seen += batch.num_rows();
        if let Some((rows, ratio)) = self.probe
            && !self.every_batch
            && self.rows_seen >= rows
        {
            let groups = self.groups_emitted + self.groups.len as usize;
            self.every_batch = groups as f64 / self.rows_seen as f64 > ratio;
        }
        let states = self.groups.states();
        let fits = self
            .reservation
            .try_resize(self.groups.size(states))
            .is_ok();
        // Bytes a group after the first batch since the last emit, and now.
        let groups = (self.groups.len as usize).max(1);
        let first = *self.first.get_or_insert(states / groups);
        let piece = self.lists && states > PIECE && states / groups > GROWN * first.max(1);
        timer.done();
        if self.every_batch || !fits || piece {
            self.emit()?;
        }
        Ok(())
    }

    /// Queues every group's keys and states for output, and starts anew.
    fn emit(&mut self) -> Result<()> {
        let timer = self.metrics.elapsed_compute().timer();
        self.groups_emitted += self.groups.len as usize;
        if let Some(batch) = self.groups.emit(&self.schema)? {
            let mut at = 0;
            while at < batch.num_rows() {
                let len = self.batch_size.max(1).min(batch.num_rows() - at);
                self.pending.push_back(batch.slice(at, len));
                at += len;
            }
        }
        self.first = None;
        self.reservation
            .try_resize(self.groups.size(self.groups.states()))?;
        timer.done();
        Ok(())
    }
}

/// The groups of one partition and their accumulators.
struct Groups {
    /// The keys' positions in the input.
    keys: Vec<usize>,
    /// One per key: its values' codes.
    interners: Vec<Interner>,
    /// One per key after the first: the groups of the keys up to it.
    levels: Vec<Level>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Each accumulator's arguments, and its `FILTER (WHERE ...)`.
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// Scratch: each key's codes for a batch, and the batch's groups (the
    /// first key's codes swapped in; its vector then holds the last
    /// batch's groups, cleared before it is filled again).
    codes: Vec<Vec<usize>>,
    indices: Vec<usize>,
    len: u32,
}

/// The groups of the first `i + 1` keys: each is a group of the first `i`
/// and a code of key `i`, numbered 0, 1, ... in the order first seen. The
/// first key's codes are its groups.
#[derive(Default)]
struct Level {
    ids: HashMap<u64, u32>,
    /// By group: the group of the keys before, and this key's code.
    of: Vec<(u32, u32)>,
}

impl Level {
    fn group(&mut self, before: u32, code: u32) -> u32 {
        let next = self.of.len() as u32;
        let id = *self
            .ids
            .entry(u64::from(before) << 32 | u64::from(code))
            .or_insert(next);
        if id == next {
            self.of.push((before, code));
        }
        id
    }
}

impl Groups {
    /// Takes a batch of one or more rows ([`Stream::add`] skips empty
    /// ones) into its groups and accumulators.
    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        self.codes.resize_with(self.keys.len(), Vec::new);
        for ((key, interner), codes) in self
            .keys
            .iter()
            .zip(&mut self.interners)
            .zip(&mut self.codes)
        {
            codes.clear();
            let Some(values) = batch.column(*key).as_string_view_opt() else {
                return internal_err!(
                    "PartialStringAggregateExec: key column {key} is {}, not a string view",
                    batch.column(*key).data_type()
                );
            };
            interner.codes(values, codes);
        }
        // The first key's codes are its groups; each level after takes the
        // groups before and its key's codes.
        std::mem::swap(&mut self.indices, &mut self.codes[0]);
        for (level, codes) in self.levels.iter_mut().zip(&self.codes[1..]) {
            for (group, &code) in self.indices.iter_mut().zip(codes) {
                *group = level.group(*group as u32, code as u32) as usize;
            }
        }
        self.len = match self.levels.last() {
            Some(level) => level.of.len() as u32,
            None => self.interners[0].len(),
        };
        for ((accumulator, arguments), filter) in self
            .accumulators
            .iter_mut()
            .zip(&self.arguments)
            .zip(&self.filters)
        {
            let values = arguments
                .iter()
                .map(|e| e.evaluate(batch)?.into_array(n))
                .collect::<Result<Vec<_>>>()?;
            let filter = match filter {
                Some(f) => Some(f.evaluate(batch)?.into_array(n)?),
                None => None,
            };
            accumulator.update_batch(
                &values,
                &self.indices,
                filter.as_ref().map(|f| f.as_boolean()),
                self.len as usize,
            )?;
        }
        Ok(())
    }

    /// Every group's keys and states as one batch of `schema`, and the
    /// groups cleared.
    fn emit(&mut self, schema: &SchemaRef) -> Result<Option<RecordBatch>> {
        if self.len == 0 {
            return Ok(None);
        }
        // Each key's code for every group, from the last key back.
        let mut codes: Vec<Vec<u32>> = vec![Vec::new(); self.keys.len()];
        let mut before: Vec<u32> = (0..self.len).collect();
        for (i, level) in self.levels.iter().enumerate().rev() {
            codes[i + 1] = before.iter().map(|&g| level.of[g as usize].1).collect();
            before = before.iter().map(|&g| level.of[g as usize].0).collect();
        }
        codes[0] = before;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (interner, codes) in self.interners.iter_mut().zip(codes) {
            let values = interner.take();
            if self.levels.is_empty() {
                // The codes are the groups.
                columns.push(Arc::new(values));
            } else {
                let codes = UInt32Array::from(codes);
                columns.push(arrow::compute::take(&values, &codes, None)?);
            }
        }
        for accumulator in &mut self.accumulators {
            columns.extend(accumulator.state(EmitTo::All)?);
        }
        for level in &mut self.levels {
            *level = Level::default();
        }
        // The scratch too: what is held after an emit is next to nothing.
        self.indices = Vec::new();
        self.codes = Vec::new();
        self.len = 0;
        Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
    }

    /// Bytes the accumulators' states hold.
    fn states(&self) -> usize {
        self.accumulators.iter().map(|a| a.size()).sum()
    }

    /// Bytes held: the keys' values and codes, the levels, the
    /// accumulators' `states` and the scratch.
    fn size(&self, states: usize) -> usize {
        let interners: usize = self.interners.iter().map(Interner::size).sum();
        let levels: usize = self
            .levels
            .iter()
            .map(|l| {
                l.ids.capacity() * (size_of::<(u64, u32)>() + 1)
                    + l.of.capacity() * size_of::<(u32, u32)>()
            })
            .sum();
        let scratch: usize =
            self.codes.iter().map(Vec::capacity).sum::<usize>() + self.indices.capacity();
        interners + levels + states + scratch * size_of::<usize>()
    }
}

/// The per-batch cache of views has `1 << CACHE_BITS` slots.
const CACHE_BITS: u32 = 8;
const CACHE_SLOTS: usize = 1 << CACHE_BITS;

/// The codes of one key's values: 0, 1, ... in the order first seen.
struct Interner {
    codes: HashMap<Box<[u8]>, u32>,
    null: Option<u32>,
    /// The values by code.
    values: StringViewBuilder,
    len: u32,
    bytes: usize,
    /// Views seen in the current batch and their codes (`u32::MAX`: an
    /// empty slot). A view names its bytes by position in its array's
    /// buffers, so it is good for one batch.
    cache: Box<[(u128, u32)]>,
}

impl Interner {
    fn new() -> Self {
        Self {
            codes: HashMap::default(),
            null: None,
            values: StringViewBuilder::new(),
            len: 0,
            bytes: 0,
            cache: vec![(0, u32::MAX); CACHE_SLOTS].into_boxed_slice(),
        }
    }

    fn len(&self) -> u32 {
        self.len
    }

    /// Appends the code of each of `array`'s values to `out`.
    fn codes(&mut self, array: &StringViewArray, out: &mut Vec<usize>) {
        self.cache.fill((0, u32::MAX));
        let views = array.views();
        out.reserve(views.len());
        let nulls = array.nulls().filter(|n| n.null_count() > 0);
        for (row, &view) in views.iter().enumerate() {
            if nulls.is_some_and(|n| n.is_null(row)) {
                let code = self.null_code();
                out.push(code as usize);
                continue;
            }
            let folded = (view as u64) ^ ((view >> 64) as u64);
            let slot = (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE_BITS)) as usize;
            let (seen, code) = self.cache[slot];
            if seen == view && code != u32::MAX {
                out.push(code as usize);
                continue;
            }
            let code = self.code(array.value(row));
            self.cache[slot] = (view, code);
            out.push(code as usize);
        }
    }

    fn code(&mut self, value: &str) -> u32 {
        if let Some(&code) = self.codes.get(value.as_bytes()) {
            return code;
        }
        let code = self.next();
        self.codes.insert(value.as_bytes().into(), code);
        self.values.append_value(value);
        self.bytes += value.len();
        code
    }

    fn null_code(&mut self) -> u32 {
        match self.null {
            Some(code) => code,
            None => {
                let code = self.next();
                self.null = Some(code);
                self.values.append_null();
                code
            }
        }
    }

    fn next(&mut self) -> u32 {
        let code = self.len;
        self.len += 1;
        code
    }

    /// The values by code; the codes start again from 0.
    fn take(&mut self) -> StringViewArray {
        let values = std::mem::replace(&mut self.values, StringViewBuilder::new()).finish();
        self.codes = HashMap::default();
        self.null = None;
        self.len = 0;
        self.bytes = 0;
        values
    }

    fn size(&self) -> usize {
        self.codes.capacity() * (size_of::<(Box<[u8]>, u32)>() + 1)
            + self.bytes
            + self.values.allocated_size()
            + CACHE_SLOTS * size_of::<(u128, u32)>()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array, RecordBatch, StringViewArray, UInt32Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::catalog::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    use datafusion::physical_plan::{ExecutionPlan, collect};
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::{PartialStringAggregateExec, StringGroups};

    /// Values longer than a view holds inline, and short ones.
    const SERVICES: [&str; 5] = [
        "frontend",
        "checkout-service-long-name",
        "ad",
        "",
        "recommendation",
    ];

    /// `rows` rows from `seed`: `service` of a few values (every seventh
    /// null) in views that share the value's bytes where `shared` (as the
    /// Parquet reader makes them from a dictionary), else one copy per row;
    /// `host` of three; `id` unique; `k` of 1,000, each three times, its
    /// rows a `service` apart but not a `host`; `g` one a row, the same in
    /// every batch; `x` with nulls.
    fn batch(seed: usize, rows: usize, shared: bool) -> RecordBatch {
        let service: Vec<Option<&str>> = (0..rows)
            .map(|i| (i % 7 != 3).then_some(SERVICES[(i * 31 + seed) % SERVICES.len()]))
            .collect();
        let service = if shared {
            let values = StringViewArray::from(SERVICES.to_vec());
            let codes: UInt32Array = service
                .iter()
                .map(|s| s.map(|s| SERVICES.iter().position(|v| *v == s).unwrap() as u32))
                .collect();
            arrow::compute::take(&values, &codes, None).unwrap()
        } else {
            Arc::new(StringViewArray::from(service)) as _
        };
        let host: StringViewArray = (0..rows)
            .map(|i| Some(format!("host-{}-of-the-cluster", (i + seed) % 3)))
            .collect();
        let id: StringViewArray = (0..rows).map(|i| Some(format!("id-{seed}-{i}"))).collect();
        let k: StringViewArray = (0..rows)
            .map(|i| Some(format!("key-number-{}", i % 1000)))
            .collect();
        let g: StringViewArray = (0..rows).map(|i| Some(format!("group-{i}"))).collect();
        let x: Int64Array = (0..rows)
            .map(|i| (i % 5 != 0).then_some(((i * 7919 + seed) % 1000) as i64))
            .collect();
        RecordBatch::try_new(
            schema(),
            vec![
                service,
                Arc::new(host),
                Arc::new(id),
                Arc::new(k),
                Arc::new(g),
                Arc::new(x),
            ],
        )
        .unwrap()
    }

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("service", DataType::Utf8View, true),
            Field::new("host", DataType::Utf8View, false),
            Field::new("id", DataType::Utf8View, false),
            Field::new("k", DataType::Utf8View, false),
            Field::new("g", DataType::Utf8View, false),
            Field::new("x", DataType::Int64, true),
        ]))
    }

    /// A session over two partitions of batches of both kinds, with the
    /// rule or without, whose memory pool holds `memory` bytes.
    fn session(rule: bool, config: SessionConfig, memory: Option<usize>) -> SessionContext {
        let mut builder = SessionStateBuilder::new()
            .with_config(config.with_target_partitions(2))
            .with_default_features();
        if let Some(memory) = memory {
            let runtime = RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::new(GreedyMemoryPool::new(memory)))
                .build_arc()
                .unwrap();
            builder = builder.with_runtime_env(runtime);
        }
        if rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(StringGroups));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let partitions = (0..2)
            .map(|p| (0..4).map(|b| batch(p * 4 + b, 3000, b % 2 == 0)).collect())
            .collect();
        let table = MemTable::try_new(schema(), partitions).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    /// A session whose skip-partial probe looks after 1,000 rows.
    fn probing(ratio: f64) -> SessionConfig {
        let mut config = SessionConfig::new();
        let execution = &mut config.options_mut().execution;
        execution.skip_partial_aggregation_probe_rows_threshold = 1000;
        execution.skip_partial_aggregation_probe_ratio_threshold = ratio;
        config
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    async fn plan(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
        ctx.sql(sql)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap()
    }

    /// The nodes of `plan` that the rule made.
    fn replaced(plan: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn ExecutionPlan>> {
        let mut out: Vec<_> = plan.children().into_iter().flat_map(replaced).collect();
        if plan.downcast_ref::<PartialStringAggregateExec>().is_some() {
            out.push(Arc::clone(plan));
        }
        out
    }

    #[tokio::test]
    async fn groupings_on_strings_give_datafusions_answers() {
        // `id` is a group a row: emitted batch by batch after the probe.
        let ours = session(true, probing(0.8), None);
        let theirs = session(false, probing(0.8), None);
        for sql in [
            "SELECT service, count(*), count(x), sum(x), avg(x), min(x), max(host) \
             FROM t GROUP BY service ORDER BY service",
            "SELECT service, host, count(*), sum(x) FROM t GROUP BY service, host \
             ORDER BY service, host",
            // A filter that is null where `x` is; an ordered-set aggregate;
            // an aggregate with an ordering of its own.
            "SELECT host, service, count(*) FILTER (WHERE x > 500), \
             percentile_cont(0.9) WITHIN GROUP (ORDER BY x), \
             first_value(x ORDER BY x DESC NULLS LAST) \
             FROM t GROUP BY host, service ORDER BY host, service",
            "SELECT k, service, host, count(*), max(x) FROM t GROUP BY k, service, host \
             ORDER BY k, service, host",
            // Keys null in every row; no rows at all.
            "SELECT service, count(*), sum(x) FROM t WHERE service IS NULL GROUP BY service",
            "SELECT service, count(*) FROM t WHERE x > 100000 GROUP BY service",
            "SELECT count(*), sum(n) FROM (SELECT id, count(*) AS n FROM t GROUP BY id)",
            "SELECT id, sum(x) FROM t GROUP BY id ORDER BY id LIMIT 5",
        ] {
            assert_eq!(replaced(&plan(&ours, sql).await).len(), 1, "{sql}");
            assert!(replaced(&plan(&theirs, sql).await).is_empty(), "{sql}");
            assert_eq!(rows(&ours, sql).await, rows(&theirs, sql).await, "{sql}");
        }
        // The answers are not empty.
        let answer = rows(
            &ours,
            "SELECT service, count(*) FROM t GROUP BY service ORDER BY 1",
        )
        .await;
        assert!(answer.contains("checkout-service-long-name"), "{answer}");
        assert_eq!(answer.lines().count(), 4 + 6, "{answer}");
        // A key of another type, or an expression, stays DataFusion's.
        for sql in [
            "SELECT x, count(*) FROM t GROUP BY x",
            "SELECT lower(service), count(*) FROM t GROUP BY 1",
        ] {
            assert!(replaced(&plan(&ours, sql).await).is_empty(), "{sql}");
        }
        // A node given its children again (as the executor wraps them) is
        // still this one.
        let sql = "SELECT service, count(*) FROM t GROUP BY service";
        let node = replaced(&plan(&ours, sql).await).remove(0);
        let children = node.children().into_iter().cloned().collect();
        #[expect(deprecated, reason = "what DataFusion's own rewrites call")]
        let again = node.with_new_children(children).unwrap();
        assert!(again.downcast_ref::<PartialStringAggregateExec>().is_some());
    }

    /// Runs the partial stage of `sql` alone: its batches, every partition's.
    async fn partial(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
        let node = replaced(&plan(ctx, sql).await).remove(0);
        let node = Arc::new(CoalescePartitionsExec::new(node));
        collect(node, ctx.task_ctx()).await.unwrap()
    }

    fn rows_in(batches: &[RecordBatch]) -> usize {
        batches.iter().map(|b| b.num_rows()).sum()
    }

    /// Each group in `batches` (`keys` keys, then `count(*)`'s state) and
    /// its count summed over the batches.
    fn counts(batches: &[RecordBatch], keys: usize) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for b in batches {
            let n = b.column(keys).as_primitive::<arrow::datatypes::Int64Type>();
            for i in 0..b.num_rows() {
                let key: Vec<&str> = (0..keys)
                    .map(|k| b.column(k).as_string_view().value(i))
                    .collect();
                *out.entry(key.join("|")).or_insert(0) += n.value(i);
            }
        }
        out
    }

    #[tokio::test]
    async fn a_partial_stage_short_of_memory_emits_what_it_holds() {
        // Partition 0 alone, so that it alone draws on the pool.
        async fn first(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
            let node = replaced(&plan(ctx, sql).await).remove(0);
            let stream = node.execute(0, ctx.task_ctx()).unwrap();
            datafusion::physical_plan::common::collect(stream)
                .await
                .unwrap()
        }
        let roomy = session(true, SessionConfig::new(), None);
        let tight = session(true, SessionConfig::new(), Some(96 * 1024));
        // 3,000 groups in every batch, four batches; then pairs with `host`.
        for (sql, keys) in [
            ("SELECT g, count(*) FROM t GROUP BY g", 1),
            ("SELECT g, host, count(*) FROM t GROUP BY g, host", 2),
        ] {
            let whole = first(&roomy, sql).await;
            let parts = first(&tight, sql).await;
            // Short of memory, it emitted groups more than once, and their
            // counts add up to the same.
            assert!(
                rows_in(&parts) > rows_in(&whole),
                "{sql}: {} against {}",
                rows_in(&parts),
                rows_in(&whole)
            );
            assert_eq!(counts(&parts, keys), counts(&whole, keys), "{sql}");
            assert_eq!(counts(&whole, keys).values().sum::<i64>(), 12_000);
        }
        // With room, each group once.
        let whole = first(&roomy, "SELECT g, count(*) FROM t GROUP BY g").await;
        assert_eq!(rows_in(&whole), 3000);
        assert!(counts(&whole, 1).values().all(|&n| n == 4));
    }

    #[tokio::test]
    async fn where_nearly_every_row_is_a_group_it_emits_after_every_batch() {
        let sql = "SELECT id, count(*) FROM t GROUP BY id";
        let batches = partial(&session(true, probing(0.8), None), sql).await;
        // Four batches of 3,000 rows a partition, every id once: a batch
        // out for each batch in.
        assert_eq!(batches.len(), 8);
        assert!(batches.iter().all(|b| b.num_rows() == 3000));
        // Without the probe (after 100,000 rows, or at a ratio of 1): what
        // each partition holds, at the end.
        for config in [SessionConfig::new(), probing(1.0)] {
            let batches = partial(&session(true, config, None), sql).await;
            assert_eq!(rows_in(&batches), 24_000);
            assert!(batches.len() < 8, "{}", batches.len());
        }
    }

    #[tokio::test]
    async fn states_that_grow_with_the_rows_go_out_in_pieces() {
        // 400,000 values a partition in five groups: 3.2 MB of percentile
        // state a partition, about a megabyte a piece. Batches of 100,000
        // rows; `name` one a row, the same in every batch.
        let schema = Arc::new(Schema::new(vec![
            Field::new("service", DataType::Utf8View, false),
            Field::new("name", DataType::Utf8View, false),
            Field::new("x", DataType::Float64, false),
        ]));
        let partition = |p: usize| -> Vec<RecordBatch> {
            (0..4)
                .map(|b| {
                    let n = 100_000;
                    let service: StringViewArray =
                        (0..n).map(|i| Some(SERVICES[(i + b + p) % 5])).collect();
                    let x: arrow::array::Float64Array = (0..n)
                        .map(|i| Some(((i * 7919 + b * 31 + p) % 100_003) as f64))
                        .collect();
                    let name: StringViewArray =
                        (0..n).map(|i| Some(format!("operation-{i}"))).collect();
                    RecordBatch::try_new(
                        Arc::clone(&schema),
                        vec![Arc::new(service), Arc::new(name), Arc::new(x)],
                    )
                    .unwrap()
                })
                .collect()
        };
        let context = |rule: bool| {
            // The probe off: `name` is a group a row within a batch.
            let mut builder = SessionStateBuilder::new()
                .with_config(probing(1.0).with_target_partitions(2))
                .with_default_features();
            if rule {
                builder = builder.with_physical_optimizer_rule(Arc::new(StringGroups));
            }
            let ctx = SessionContext::new_with_state(builder.build());
            let table =
                MemTable::try_new(Arc::clone(&schema), vec![partition(0), partition(1)]).unwrap();
            ctx.register_table("big", Arc::new(table)).unwrap();
            ctx
        };
        let (ours, theirs) = (context(true), context(false));
        let sql = "SELECT service, count(*), \
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY x) AS p99, \
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY x) AS p50 \
                   FROM big GROUP BY service ORDER BY service";
        assert_eq!(rows(&ours, sql).await, rows(&theirs, sql).await);
        // Each partition's five groups went out in three pieces or more.
        let pieces = rows_in(&partial(&ours, sql).await);
        assert!(pieces >= 2 * 5 * 3, "{pieces}");
        // A state that is not a list stays whole, though it grows with
        // the rows: `string_agg`'s text, 14 bytes a row here.
        let sql = "SELECT service, length(string_agg(name, ',')) FROM big \
                   GROUP BY service ORDER BY service";
        assert_eq!(rows(&ours, sql).await, rows(&theirs, sql).await);
        assert_eq!(rows_in(&partial(&ours, sql).await), 2 * 5);
        // 100,000 averages (1.6 MB a partition) grow with the groups only:
        // each partition's groups go out once, at the end.
        let sql = "SELECT name, avg(x) FROM big GROUP BY name ORDER BY name";
        assert_eq!(rows(&ours, sql).await, rows(&theirs, sql).await);
        assert_eq!(rows_in(&partial(&ours, sql).await), 2 * 100_000);
    }
}
