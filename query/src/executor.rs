//! The query executor: the one place where query CPU work runs.
//!
//! Every query — SQL over HTTP and Flight SQL, and every API request with
//! its post-processing (trace assembly, analysis, TraceQL evaluation) — runs
//! as a task on a tokio runtime of its own, with its own threads (lowered in
//! CPU priority), never on the runtime that serves the listeners, the WAL and
//! flushes. A query that does not yield can then only delay other queries,
//! and the request's timer, admission and answer stay on the listeners'
//! runtime, which is never starved.
//!
//! Each request gets one [`Scope`]: a deadline (the query timeout from the
//! request's arrival, shared by all the statements it runs) and a cancel
//! flag, set when the deadline passes or the client goes away. DataFusion
//! only stops a stream when it is polled, and an operator that never returns
//! `Pending` (a cross join feeding an aggregate) is never polled from
//! outside; so every node of every physical plan is wrapped
//! ([`interruptible`]) in a node that checks the scope each time a batch
//! passes and ends the stream with an error once the scope is over. A
//! runaway query thus stops at its next batch, whichever operator it is in.
//!
//! Admission: at most `max_concurrent` requests run at once, of which
//! `reserved_interactive` slots only interactive reads (trace by id, the
//! lists behind the UI's drop-downs) may take, so heavy SQL cannot lock out
//! the people reading traces; up to `max_queued` wait, and beyond that a
//! request is refused at once ([`QueryError::Overloaded`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::joins::NestedLoopJoinExec;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::QueryError;

/// How the executor runs queries.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Worker threads of the query runtime.
    pub threads: usize,
    /// Nice value of the heavy queries' threads (0 = the server's; 19 =
    /// lowest), so that ingest wins the CPU when both want it; interactive
    /// reads run at half of it.
    pub nice: i32,
    /// Requests running at once.
    pub max_concurrent: usize,
    /// Of those, slots only interactive reads may take.
    pub reserved_interactive: usize,
    /// Requests waiting for a slot; more are refused.
    pub max_queued: usize,
    /// Time limit of a request, from its arrival, over all its statements.
    pub timeout: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            nice: 10,
            max_concurrent: 4,
            reserved_interactive: 1,
            max_queued: 32,
            timeout: Duration::from_secs(30),
        }
    }
}

/// What a request is, for admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Cheap reads people wait for: trace by id, service and operation lists.
    Interactive,
    /// Everything else: SQL, search, analytics.
    Heavy,
}

impl Class {
    fn label(self) -> &'static str {
        match self {
            Class::Interactive => "interactive",
            Class::Heavy => "heavy",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

/// Why a request's scope ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Running = 0,
    TimedOut = 1,
    Cancelled = 2,
}

/// One request's deadline and how it ended, shared by everything it runs.
#[derive(Debug)]
pub struct Scope {
    deadline: Instant,
    timeout: Duration,
    /// An [`End`]: running until the deadline passes or the client leaves.
    end: AtomicU8,
    /// What the answer should say it lacks (an ingest node that did not
    /// answer), shown as `Warning` headers.
    warnings: parking_lot::Mutex<Vec<String>>,
}

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

impl Scope {
    fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            deadline: Instant::now() + timeout,
            timeout,
            end: AtomicU8::new(End::Running as u8),
            warnings: parking_lot::Mutex::new(Vec::new()),
        })
    }

    /// Notes that the answer is partial, and why (each reason once).
    pub fn warn(&self, warning: String) {
        let mut warnings = self.warnings.lock();
        if !warnings.contains(&warning) {
            warnings.push(warning);
        }
    }

    /// The warnings noted so far.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().clone()
    }

    /// How many warnings are noted, to [`Scope::keep_warnings`] when what
    /// noted the later ones is done again.
    pub(crate) fn warning_count(&self) -> usize {
        self.warnings.lock().len()
    }

    /// Forgets the warnings noted after the first `count`.
    pub(crate) fn keep_warnings(&self, count: usize) {
        self.warnings.lock().truncate(count);
    }

    /// The scope of the request being run, or a fresh one with `timeout`
    /// for code run outside the executor (tests, tools).
    pub fn current_or(timeout: Duration) -> Arc<Scope> {
        SCOPE
            .try_with(Arc::clone)
            .unwrap_or_else(|_| Scope::new(timeout))
    }

    /// Ends the scope, unless it has ended already (the first reason stays).
    fn end(&self, why: End) {
        let _ = self.end.compare_exchange(
            End::Running as u8,
            why as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// `Ok` while the request may go on; the error to stop with otherwise.
    pub fn check(&self) -> Result<(), QueryError> {
        if self.end.load(Ordering::Relaxed) == End::Running as u8 {
            if Instant::now() < self.deadline {
                return Ok(());
            }
            self.end(End::TimedOut);
        }
        Err(self.error())
    }

    fn ended(&self) -> End {
        match self.end.load(Ordering::SeqCst) {
            1 => End::TimedOut,
            2 => End::Cancelled,
            _ => End::Running,
        }
    }

    fn error(&self) -> QueryError {
        match self.ended() {
            End::Cancelled => QueryError::Cancelled,
            _ => QueryError::Timeout(self.timeout),
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Runs `f` until the scope's deadline; the scope's error after it.
    pub async fn bound<T>(
        &self,
        f: impl Future<Output = Result<T, QueryError>>,
    ) -> Result<T, QueryError> {
        self.check()?;
        match tokio::time::timeout_at(self.deadline.into(), f).await {
            // Whatever failed once the scope is over failed because of it.
            Ok(Err(e)) => Err(self.check().err().unwrap_or(e)),
            Ok(ok) => ok,
            Err(_elapsed) => {
                self.end(End::TimedOut);
                Err(self.error())
            }
        }
    }
}

/// Checks the current request's scope (for loops of post-processing work
/// between queries). Outside the executor it never fails.
pub fn checkpoint() -> Result<(), QueryError> {
    SCOPE.try_with(|s| s.check()).unwrap_or(Ok(()))
}

#[derive(Default)]
struct Metrics {
    running: Family<ClassLabel, Gauge>,
    queued: Family<ClassLabel, Gauge>,
    admitted: Family<ClassLabel, Counter>,
    rejected: Family<ClassLabel, Counter>,
    cancelled: Family<ClassLabel, Counter>,
    timed_out: Family<ClassLabel, Counter>,
    /// Queries run again in batches of fewer rows.
    rerun: Counter,
}

/// The query runtime and its admission control.
pub struct Executor {
    runtimes: Vec<tokio::runtime::Runtime>,
    /// Where each [`Class`] runs: heavy, interactive.
    handles: [tokio::runtime::Handle; 2],
    /// Slots any request may take.
    shared: Arc<Semaphore>,
    /// Slots only interactive requests may take.
    reserved: Arc<Semaphore>,
    queued: AtomicUsize,
    config: ExecutorConfig,
    metrics: Metrics,
    /// Name of the heavy query threads (`tl-query`, then `tl-query1`, ...;
    /// the interactive ones are `tl-qint`, `tl-qint1`, ...).
    thread_name: String,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("config", &self.config)
            .finish()
    }
}

static EXECUTORS: AtomicUsize = AtomicUsize::new(0);

impl Executor {
    pub fn new(config: ExecutorConfig) -> std::io::Result<Self> {
        let id = EXECUTORS.fetch_add(1, Ordering::Relaxed);
        let suffix = if id == 0 {
            String::new()
        } else {
            id.to_string()
        };
        let thread_name = format!("tl-query{suffix}");
        let threads = config.threads.max(1);
        let heavy = runtime(&thread_name, threads, config.nice)?;
        // Interactive reads get threads of their own, at half the nice
        // value: the OS gives them a larger share of the CPU than the heavy
        // queries' threads, and a trace lookup never waits behind a
        // saturated heavy runtime's task queue.
        let interactive = runtime(
            &format!("tl-qint{suffix}"),
            threads.div_ceil(2),
            config.nice / 2,
        )?;
        let reserved = config
            .reserved_interactive
            .min(config.max_concurrent.saturating_sub(1));
        Ok(Self {
            handles: [heavy.handle().clone(), interactive.handle().clone()],
            runtimes: vec![heavy, interactive],
            shared: Arc::new(Semaphore::new(config.max_concurrent.max(1) - reserved)),
            reserved: Arc::new(Semaphore::new(reserved)),
            queued: AtomicUsize::new(0),
            config,
            metrics: Metrics::default(),
            thread_name,
        })
    }

    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// Name of the query threads (as `ps -L` and `/proc` show them).
    pub fn thread_name(&self) -> &str {
        &self.thread_name
    }

    /// Registers `tracelake_queries_*`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.metrics;
        registry.register(
            "tracelake_queries_running",
            "Requests running on the query executor",
            m.running.clone(),
        );
        registry.register(
            "tracelake_queries_queued",
            "Requests waiting for a query slot",
            m.queued.clone(),
        );
        registry.register(
            "tracelake_queries_admitted",
            "Requests admitted to the query executor",
            m.admitted.clone(),
        );
        registry.register(
            "tracelake_queries_rejected",
            "Requests refused because every query slot and the queue were taken",
            m.rejected.clone(),
        );
        registry.register(
            "tracelake_queries_cancelled",
            "Requests stopped because the client went away",
            m.cancelled.clone(),
        );
        registry.register(
            "tracelake_queries_timed_out",
            "Requests stopped at the query time limit",
            m.timed_out.clone(),
        );
        registry.register(
            "tracelake_queries_rerun_smaller_batches",
            "Queries run again in batches of fewer rows, as a batch's values of a column \
             were more than one array holds",
            m.rerun.clone(),
        );
    }

    /// Counts a query run again in smaller batches.
    pub(crate) fn count_rerun(&self) {
        self.metrics.rerun.inc();
    }

    /// Runs `work` on the query runtime under admission control and one
    /// deadline, within a [`Scope`] that every query it makes shares.
    ///
    /// Waiting for the answer happens here, on the caller's runtime: when the
    /// deadline passes the caller gets [`QueryError::Timeout`] at once and
    /// the work is stopped at its next check; when the returned future is
    /// dropped (the client went away) the work is stopped the same way.
    pub async fn run<T, F>(&self, class: Class, work: F) -> Result<T, QueryError>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let label = ClassLabel {
            class: class.label(),
        };
        let scope = Scope::new(self.config.timeout);
        let permit = self.admit(class, &label, scope.deadline).await?;
        self.metrics.admitted.get_or_create(&label).inc();
        let running = self.metrics.running.get_or_create(&label).clone();
        running.inc();
        let handle = &self.handles[match class {
            Class::Heavy => 0,
            Class::Interactive => 1,
        }];
        let task = handle.spawn(SCOPE.scope(Arc::clone(&scope), async move {
            let out = work.await;
            drop(permit);
            out
        }));
        // Dropped before the answer (the client went away): stop the work.
        let mut guard = StopOnDrop {
            scope: Arc::clone(&scope),
            abort: task.abort_handle(),
            cancelled: self.metrics.cancelled.get_or_create(&label).clone(),
            running: running.clone(),
            armed: true,
        };
        let out = tokio::time::timeout_at(scope.deadline.into(), task).await;
        guard.armed = false;
        running.dec();
        let out = match out {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(join)) => {
                tracing::error!("query task failed: {join}");
                Err(QueryError::Internal("the query task failed".into()))
            }
            Err(_elapsed) => {
                scope.end(End::TimedOut);
                guard.abort.abort();
                Err(QueryError::Timeout(self.config.timeout))
            }
        };
        if scope.ended() == End::TimedOut {
            self.metrics.timed_out.get_or_create(&label).inc();
        }
        out
    }

    /// A slot for a request of `class`, waiting at most until `deadline`.
    async fn admit(
        &self,
        class: Class,
        label: &ClassLabel,
        deadline: Instant,
    ) -> Result<Permit, QueryError> {
        if let Some(permit) = self.try_permit(class) {
            return Ok(permit);
        }
        // Wait in the queue, if there is room.
        let position = self.queued.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(&self.queued);
        if position >= self.config.max_queued {
            self.metrics.rejected.get_or_create(label).inc();
            return Err(QueryError::Overloaded(format!(
                "{} queries are running and {} are waiting",
                self.config.max_concurrent, self.config.max_queued
            )));
        }
        // Counted while waiting, also when the client leaves meanwhile.
        let _waiting = Waiting::new(self.metrics.queued.get_or_create(label).clone());
        let wait = async {
            match class {
                Class::Heavy => Arc::clone(&self.shared).acquire_owned().await,
                Class::Interactive => tokio::select! {
                    p = Arc::clone(&self.reserved).acquire_owned() => p,
                    p = Arc::clone(&self.shared).acquire_owned() => p,
                },
            }
        };
        let got = tokio::time::timeout_at(deadline.into(), wait).await;
        match got {
            Ok(Ok(permit)) => Ok(Permit(permit)),
            Ok(Err(_closed)) => Err(QueryError::Internal("the query executor stopped".into())),
            Err(_elapsed) => {
                self.metrics.rejected.get_or_create(label).inc();
                Err(QueryError::Overloaded(format!(
                    "no query slot became free within the time limit of {:?}",
                    self.config.timeout
                )))
            }
        }
    }

    fn try_permit(&self, class: Class) -> Option<Permit> {
        let shared = Arc::clone(&self.shared).try_acquire_owned();
        match (class, shared) {
            (_, Ok(p)) => Some(Permit(p)),
            (Class::Interactive, Err(_)) => Arc::clone(&self.reserved)
                .try_acquire_owned()
                .ok()
                .map(Permit),
            (Class::Heavy, Err(_)) => None,
        }
    }
}

impl Executor {
    /// Runs a long-lived service on the heavy query runtime: the SQL
    /// worker, whose stages are query work like any other.
    pub fn spawn_service<F>(&self, service: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[0].spawn(service)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Dropping a runtime blocks; inside async code (tests) that panics.
        for runtime in self.runtimes.drain(..) {
            runtime.shutdown_background();
        }
    }
}

struct Permit(#[allow(dead_code)] OwnedSemaphorePermit);

/// A gauge raised for as long as it lives.
struct Waiting(Gauge);

impl Waiting {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct StopOnDrop {
    scope: Arc<Scope>,
    abort: tokio::task::AbortHandle,
    cancelled: Counter,
    running: Gauge,
    armed: bool,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.scope.end(End::Cancelled);
            self.abort.abort();
            self.cancelled.inc();
            self.running.dec();
        }
    }
}

fn runtime(name: &str, threads: usize, nice: i32) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .max_blocking_threads(threads * 4)
        .thread_name(name)
        .on_thread_start(move || lower_priority(nice))
        .enable_all()
        .build()
}

/// Lowers the calling thread's CPU priority (Linux: per-thread nice); the
/// query threads' and the compaction thread's.
pub fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice != 0 {
        let tid = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(tid), nice) {
            tracing::warn!(%error, nice, "cannot lower a thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Wraps every node of `plan` so that its output stops with the scope's
/// error once the scope is over (see the module docs). A distributed plan
/// is wrapped above its head only: what is under it is sent to the SQL
/// workers, which know only DataFusion's own nodes; the workers stop when
/// the head, stopped here, drops their streams.
pub fn interruptible(
    plan: Arc<dyn ExecutionPlan>,
    scope: &Arc<Scope>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let node = if crate::distributed::is_distributed(&plan) {
        plan
    } else {
        let children = plan
            .children()
            .into_iter()
            .map(|child| interruptible(Arc::clone(child), scope))
            .collect::<DfResult<Vec<_>>>()?;
        let node = if children.is_empty() {
            plan
        } else {
            datafusion::physical_plan::replace_children_if_necessary(plan, children)?
        };
        checked_join_filter(node, scope)?
    };
    Ok(Arc::new(Interruptible {
        input: node,
        scope: Arc::clone(scope),
    }))
}

/// A nested-loop join evaluates its filter for every buffered left row
/// against a right batch and may go through millions of rows before it has
/// a batch to emit (`a.x < b.y` over large inputs), all in one poll: its
/// filter checks the scope on each evaluation, so it stops there too.
fn checked_join_filter(
    node: Arc<dyn ExecutionPlan>,
    scope: &Arc<Scope>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let Some(join) = node.downcast_ref::<NestedLoopJoinExec>() else {
        return Ok(node);
    };
    let Some(filter) = join.filter() else {
        return Ok(node);
    };
    let checked = JoinFilter::new(
        Arc::new(CheckedExpr {
            inner: Arc::clone(filter.expression()),
            scope: Arc::clone(scope),
        }),
        filter.column_indices().to_vec(),
        Arc::clone(filter.schema()),
    );
    Ok(Arc::new(NestedLoopJoinExec::try_new(
        Arc::clone(join.left()),
        Arc::clone(join.right()),
        Some(checked),
        join.join_type(),
        join.projection().as_ref().map(|p| p.to_vec()),
    )?))
}

/// An expression that checks the request's scope before each evaluation.
#[derive(Debug)]
struct CheckedExpr {
    inner: Arc<dyn PhysicalExpr>,
    scope: Arc<Scope>,
}

impl PartialEq for CheckedExpr {
    fn eq(&self, other: &Self) -> bool {
        self.inner.as_ref() == other.inner.as_ref()
    }
}

impl Eq for CheckedExpr {}

impl std::hash::Hash for CheckedExpr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.as_ref().hash(state);
    }
}

impl fmt::Display for CheckedExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl PhysicalExpr for CheckedExpr {
    fn data_type(
        &self,
        input_schema: &arrow::datatypes::Schema,
    ) -> DfResult<arrow::datatypes::DataType> {
        self.inner.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &arrow::datatypes::Schema) -> DfResult<bool> {
        self.inner.nullable(input_schema)
    }

    fn return_field(
        &self,
        input_schema: &arrow::datatypes::Schema,
    ) -> DfResult<arrow::datatypes::FieldRef> {
        self.inner.return_field(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> DfResult<datafusion::logical_expr::ColumnarValue> {
        self.scope.check().map_err(stop)?;
        self.inner.evaluate(batch)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.inner]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> DfResult<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(CheckedExpr {
            inner: children.swap_remove(0),
            scope: Arc::clone(&self.scope),
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_sql(f)
    }
}

/// A plan node that passes its input's batches through while the request's
/// scope lasts, and yields to the runtime's scheduler budget.
#[derive(Debug)]
struct Interruptible {
    input: Arc<dyn ExecutionPlan>,
    scope: Arc<Scope>,
}

impl DisplayAs for Interruptible {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Interruptible")
    }
}

impl ExecutionPlan for Interruptible {
    fn name(&self) -> &str {
        "Interruptible"
    }

    fn downcast_delegate(&self) -> Option<&dyn ExecutionPlan> {
        Some(self.input.as_ref())
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "Interruptible has exactly one child".into(),
            ));
        }
        Ok(Arc::new(Self {
            input: children.swap_remove(0),
            scope: Arc::clone(&self.scope),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.scope.check().map_err(stop)?;
        let input = self.input.execute(partition, context)?;
        Ok(Box::pin(InterruptibleStream {
            input,
            scope: Arc::clone(&self.scope),
        }))
    }
}

/// The scope's error as a DataFusion error that [`QueryError::from`] turns
/// back into it.
fn stop(e: QueryError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

struct InterruptibleStream {
    input: SendableRecordBatchStream,
    scope: Arc<Scope>,
}

impl Stream for InterruptibleStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Err(e) = self.scope.check() {
            return Poll::Ready(Some(Err(stop(e))));
        }
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let next = self.input.poll_next_unpin(cx);
        if next.is_ready() {
            coop.made_progress();
        }
        next
    }
}

impl RecordBatchStream for InterruptibleStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}

/// The [`QueryError`] inside a DataFusion error made by [`stop`], if any.
pub(crate) fn stopped(e: &DataFusionError) -> Option<QueryError> {
    match e.find_root() {
        DataFusionError::External(inner) => match inner.downcast_ref::<QueryError>()? {
            QueryError::Cancelled => Some(QueryError::Cancelled),
            QueryError::Timeout(d) => Some(QueryError::Timeout(*d)),
            _ => None,
        },
        _ => None,
    }
}

/// How an API renders a query error in its own envelope.
pub type Render = fn(QueryError) -> axum::response::Response;

#[derive(Clone)]
struct Placement {
    engine: Arc<crate::QueryEngine>,
    class: Class,
    render: Render,
}

/// Runs every route of `router` on the query executor, as requests of
/// `class`: the handler — its queries and all its post-processing — runs on
/// the query threads under one deadline; refusals (overload, time limit)
/// are rendered by `render`, with `Retry-After` when waiting helps.
pub fn on_executor(
    router: axum::Router,
    engine: &Arc<crate::QueryEngine>,
    class: Class,
    render: Render,
) -> axum::Router {
    let placement = Placement {
        engine: Arc::clone(engine),
        class,
        render,
    };
    router.route_layer(axum::middleware::from_fn_with_state(placement, placed))
}

/// `warning` as the value of a `Warning` header (RFC 9111: code 199,
/// "miscellaneous warning"), in the printable ASCII a header (or gRPC
/// metadata) allows.
pub fn warning_value(warning: &str) -> String {
    let warning: String = warning
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect();
    format!("199 tracelake \"{warning}\"")
}

async fn placed(
    axum::extract::State(p): axum::extract::State<Placement>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let answer = async move {
        let mut response = next.run(request).await;
        // An answer some source could not complete: say so.
        for warning in Scope::current_or(Duration::ZERO).warnings() {
            if let Ok(value) = axum::http::HeaderValue::from_str(&warning_value(&warning)) {
                response
                    .headers_mut()
                    .append(axum::http::header::WARNING, value);
            }
        }
        response
    };
    match p.engine.executor().run(p.class, answer).await {
        Ok(response) => response,
        // The envelope's rendering adds `Retry-After` where it applies.
        Err(e) => (p.render)(e),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::QueryEngine;

    /// A query whose operators never return `Pending`: a cross join of two
    /// huge series feeding an aggregate (the case that once stopped the
    /// whole server).
    const RUNAWAY: &str =
        "SELECT count(*) FROM generate_series(1, 100000000) a, generate_series(1, 100000000) b";

    /// A nested-loop join that goes through millions of left rows between
    /// two output batches.
    const NESTED_LOOP: &str = "SELECT count(*) FROM generate_series(1, 10000000) a \
         JOIN generate_series(1, 10000000) b ON a.value < b.value";

    fn engine(timeout: Duration, config: ExecutorConfig) -> (tempfile::TempDir, Arc<QueryEngine>) {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let config = crate::QueryConfig {
            executor: ExecutorConfig { timeout, ..config },
            memory_limit_bytes: 1 << 30,
            trace_metadata_bytes: crate::trace_index::DEFAULT_METADATA_BUDGET,
            max_result_rows: 1000,
            distributed: None,
        };
        (dir, Arc::new(QueryEngine::new(url, None, config).unwrap()))
    }

    fn sql(
        engine: &Arc<QueryEngine>,
        sql: &'static str,
    ) -> impl Future<Output = Result<usize, QueryError>> + Send + 'static {
        let engine = Arc::clone(engine);
        async move {
            let (_, batches) = engine.sql(sql).await?;
            Ok(batches.iter().map(RecordBatch::num_rows).sum())
        }
    }

    /// The caller's side: one thread, like a busy listener's runtime.
    fn caller_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// CPU seconds used so far by the threads of `executor`'s runtime.
    fn query_cpu_seconds(executor: &Executor) -> f64 {
        let name = executor.thread_name();
        let mut ticks = 0u64;
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            if &stat[open + 1..close] != name {
                continue;
            }
            // Fields after the name: state is the 3rd field, utime the 14th.
            let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
            ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        }
        ticks as f64 / 100.0
    }

    /// Waits until the query threads have used (almost) no CPU for a whole
    /// second; returns how long that took.
    fn wait_quiet(executor: &Executor, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let before = query_cpu_seconds(executor);
            std::thread::sleep(Duration::from_secs(1));
            let used = query_cpu_seconds(executor) - before;
            if used < 0.05 {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "the query threads still use CPU ({used:.2} s in the last second) {:?} after the query ended",
                start.elapsed()
            );
        }
    }

    #[test]
    fn a_nested_loop_join_stops_at_the_deadline_and_frees_its_cpu() {
        let rt = caller_runtime();
        let (_dir, engine) = engine(Duration::from_millis(500), ExecutorConfig::default());
        let started = Instant::now();
        let err = rt
            .block_on(
                engine
                    .executor()
                    .run(Class::Heavy, sql(&engine, NESTED_LOOP)),
            )
            .and_then(|r| r)
            .unwrap_err();
        assert!(matches!(err, QueryError::Timeout(_)), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        wait_quiet(engine.executor(), Duration::from_secs(5));
    }

    #[test]
    fn a_query_that_never_yields_stops_at_the_deadline_and_frees_its_cpu() {
        let rt = caller_runtime();
        let (_dir, engine) = engine(Duration::from_millis(500), ExecutorConfig::default());
        let started = Instant::now();
        let (err, lateness) = rt.block_on(async {
            let run = engine.executor().run(Class::Heavy, sql(&engine, RUNAWAY));
            // Meanwhile this runtime keeps its timers.
            let ticker = async {
                let mut worst = Duration::ZERO;
                loop {
                    let t = Instant::now();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    worst = worst.max(t.elapsed().saturating_sub(Duration::from_millis(10)));
                    if started.elapsed() > Duration::from_millis(400) {
                        return worst;
                    }
                }
            };
            let (out, worst) = tokio::join!(run, ticker);
            // The runaway's own statement or the caller's timer, whichever
            // noticed the deadline first.
            (out.and_then(|r| r).unwrap_err(), worst)
        });
        let answered = started.elapsed();
        assert!(matches!(err, QueryError::Timeout(_)), "{err}");
        assert!(err.to_string().contains("500ms"), "{err}");
        assert!(
            answered < Duration::from_secs(3),
            "answered after {answered:?}"
        );
        assert!(
            lateness < Duration::from_millis(200),
            "timers late by {lateness:?}"
        );
        let quiet = wait_quiet(engine.executor(), Duration::from_secs(5));
        eprintln!("answered after {answered:?}, query threads quiet {quiet:?} later");
    }

    #[test]
    fn a_client_that_goes_away_stops_its_query() {
        let rt = caller_runtime();
        let (_dir, engine) = engine(Duration::from_secs(600), ExecutorConfig::default());
        rt.block_on(async {
            let mut run =
                std::pin::pin!(engine.executor().run(Class::Heavy, sql(&engine, RUNAWAY)));
            // Polled until the query has run on its threads (however busy
            // the machine is), then dropped, as a server drops a handler
            // whose connection closed.
            let deadline = Instant::now() + Duration::from_secs(30);
            while query_cpu_seconds(engine.executor()) <= 0.1 && Instant::now() < deadline {
                assert!(
                    tokio::time::timeout(Duration::from_millis(100), &mut run)
                        .await
                        .is_err(),
                    "the runaway query ended"
                );
            }
        });
        assert!(
            query_cpu_seconds(engine.executor()) > 0.1,
            "the query never ran"
        );
        wait_quiet(engine.executor(), Duration::from_secs(5));
        let mut registry = Registry::default();
        engine.executor().register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.lines()
                .any(|l| l == "tracelake_queries_cancelled_total{class=\"heavy\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn admission_queues_then_refuses_and_keeps_a_slot_for_interactive_reads() {
        let rt = caller_runtime();
        let config = ExecutorConfig {
            max_concurrent: 2,
            reserved_interactive: 1,
            max_queued: 1,
            ..ExecutorConfig::default()
        };
        let (_dir, engine) = engine(Duration::from_secs(3), config);
        rt.block_on(async {
            let exec = engine.executor();
            // One runaway takes the only shared slot, a second waits.
            let first = exec.run(Class::Heavy, sql(&engine, RUNAWAY));
            let second = exec.run(Class::Heavy, sql(&engine, RUNAWAY));
            let later = async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                // The queue is full: refused at once.
                let t = Instant::now();
                let third = exec.run(Class::Heavy, sql(&engine, "SELECT 1")).await;
                assert!(matches!(third, Err(QueryError::Overloaded(_))), "{third:?}");
                assert!(t.elapsed() < Duration::from_millis(200));
                // An interactive read takes the reserved slot.
                let t = Instant::now();
                let read = exec.run(Class::Interactive, sql(&engine, "SELECT 1")).await;
                assert_eq!(read.unwrap().unwrap(), 1);
                assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
            };
            let (first, second, ()) = tokio::join!(first, second, later);
            assert!(
                matches!(
                    first,
                    Ok(Err(QueryError::Timeout(_))) | Err(QueryError::Timeout(_))
                ),
                "{first:?}"
            );
            // The second waited for the first's slot: refused at its
            // deadline, or (when the first let go just before it) timed out.
            assert!(
                matches!(
                    second.and_then(|r| r),
                    Err(QueryError::Overloaded(_) | QueryError::Timeout(_))
                ),
                "the queued query was neither refused nor stopped"
            );
        });
    }
}
