//! `span_attributes` (`resource_attributes`) in SQL holds every span
//! (resource) attribute, dedicated or not.
//!
//! An attribute with a [dedicated column](tracelake_schema::spans::DEDICATED_SCOPES)
//! is stored in that column when its value has the column's type, and only
//! otherwise in the stored `span_attributes` (`resource_attributes`) map. This analyzer rule keeps
//! SQL's view of the map whole, at the least cost:
//! - `span_attributes['k']` of a dedicated key becomes
//!   `coalesce(<column as text>, span_attributes['k'])`, and
//!   `span_attribute_types['k']` of an integer one gives the integer type
//!   code when the column has the value: a search on such a key reads one
//!   narrow column (with its statistics), not the map;
//! - any other use of the whole map (`SELECT span_attributes`,
//!   `map_keys(span_attributes)`) reads it merged with the dedicated columns
//!   (`with_dedicated_span_attributes`, `with_dedicated_span_attribute_types`:
//!   [`merge`]).
//!
//! Expressions whose input has no dedicated columns (a subquery that
//! selected only the map) are left alone.
//!
//! The configured dedicated columns of a table ([`tracelake_schema::layout`])
//! are found by their field metadata in the plan's schemas and rewritten
//! the same way; the merge functions take them as `key, column` pairs
//! after the built-in columns, so that a SQL worker needs no configuration.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use arrow::array::builder::{Int8Builder, MapBuilder, MapFieldNames, StringBuilder};
use arrow::array::{Array, ArrayRef, AsArray, MapArray};
use arrow::datatypes::{DataType, Field, Int64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode as _, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, cast, lit, when,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::coalesce;
use tracelake_schema::attributes::TypeCode;
use tracelake_schema::layout::{AttributeSet, Configured};
use tracelake_schema::spans::{
    DEDICATED_SCOPES, MAP_ENTRIES, MAP_KEY, MAP_VALUE, attribute_types_type, attributes_type,
};

#[derive(Debug, Default)]
pub struct DedicatedAttributes;

impl AnalyzerRule for DedicatedAttributes {
    fn name(&self) -> &str {
        "tracelake_dedicated_attributes"
    }

    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> Result<LogicalPlan> {
        // Every column some node of the plan has: what an outer reference
        // (in a correlated subquery) can point at.
        let mut known = HashSet::new();
        // The configured columns any node has: (scope, key) -> (name, int).
        let mut configured = HashMap::new();
        plan.apply_with_subqueries(|node| {
            known.extend(node.schema().columns());
            for field in node.schema().fields() {
                if let Some(Ok(c)) = Configured::of_field(field) {
                    let scope = match c.set {
                        AttributeSet::Span => 0,
                        AttributeSet::Resource => 1,
                    };
                    configured
                        .entry((scope, c.key))
                        .or_insert_with(|| (field.name().clone(), c.int));
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        // In column order, for the merges.
        let mut configured: Vec<ConfiguredColumn> = configured.into_iter().collect();
        configured.sort();
        plan.transform_up_with_subqueries(|node| {
            let inputs: Vec<DFSchemaRef> = node
                .inputs()
                .iter()
                .map(|i| Arc::clone(i.schema()))
                .collect();
            if inputs.is_empty() {
                return Ok(Transformed::no(node));
            }
            let cx = Cx {
                inputs: &inputs,
                known: &known,
                configured: &configured,
            };
            let preserver = NamePreserver::new(&node);
            node.map_expressions(|expr| {
                let name = preserver.save(&expr);
                let rewritten = expr.transform_down(|e| rewrite(e, &cx))?;
                Ok(rewritten.update_data(|e| name.restore(e)))
            })
        })
        .map(|t| t.data)
    }
}

/// What an expression of one plan node can refer to.
struct Cx<'a> {
    /// The node's inputs, for its own columns.
    inputs: &'a [DFSchemaRef],
    /// Every column of the plan, for outer references.
    known: &'a HashSet<Column>,
    /// The configured dedicated columns of the plan's tables:
    /// `((scope, key), (column, int))`, sorted.
    configured: &'a [ConfiguredColumn],
}

/// A configured dedicated column: `((scope, key), (column, int))`.
type ConfiguredColumn = ((usize, String), (String, bool));

impl Cx<'_> {
    /// The configured column of `key` in scope `scope`: its name and
    /// whether it holds integers.
    fn configured(&self, scope: usize, key: &str) -> Option<(&str, bool)> {
        self.configured
            .iter()
            .find(|((s, k), _)| *s == scope && k == key)
            .map(|(_, (name, int))| (name.as_str(), *int))
    }
}

/// The column an input column or an outer reference names.
fn map_column(expr: &Expr) -> Option<&Column> {
    match expr {
        Expr::Column(c) | Expr::OuterReferenceColumn(_, c) => Some(c),
        _ => None,
    }
}

/// The type of a dedicated column in SQL's `spans` table (text as views:
/// `Layout::sql_schema`).
fn sql_type(int: bool) -> DataType {
    if int {
        DataType::Int64
    } else {
        DataType::Utf8View
    }
}

/// The column `name` beside the map `map` refers to (same relation, same
/// kind of reference), if there is one.
fn beside(map: &Expr, name: &str, data_type: DataType, cx: &Cx<'_>) -> Option<Expr> {
    match map {
        Expr::Column(c) => {
            let column = Column::new(c.relation.clone(), name);
            cx.inputs
                .iter()
                .any(|s| s.has_column(&column))
                .then_some(Expr::Column(column))
        }
        Expr::OuterReferenceColumn(_, c) => {
            let column = Column::new(c.relation.clone(), name);
            cx.known.contains(&column).then(|| {
                Expr::OuterReferenceColumn(Arc::new(Field::new(name, data_type, true)), column)
            })
        }
        _ => None,
    }
}

/// Every dedicated column of scope `scope` beside `map`, or `None` when one
/// is missing.
fn dedicated_columns(scope: usize, map: &Expr, cx: &Cx<'_>) -> Option<Vec<Expr>> {
    DEDICATED_SCOPES[scope]
        .columns
        .iter()
        .map(|d| beside(map, d.column, sql_type(d.int), cx))
        .collect()
}

/// The scope whose map (or type-code map, `true`) is the column `name`.
fn scope_of(name: &str) -> Option<(usize, bool)> {
    DEDICATED_SCOPES.iter().enumerate().find_map(|(i, s)| {
        if name == s.map {
            Some((i, false))
        } else if name == s.types {
            Some((i, true))
        } else {
            None
        }
    })
}

fn rewrite(expr: Expr, cx: &Cx<'_>) -> Result<Transformed<Expr>> {
    match &expr {
        Expr::ScalarFunction(ScalarFunction { func, args })
            if func.name() == "get_field" && args.len() == 2 =>
        {
            let Some(map) = map_column(&args[0]) else {
                return Ok(Transformed::no(expr));
            };
            let Some((scope, types)) = scope_of(&map.name) else {
                return Ok(Transformed::no(expr));
            };
            let key = match &args[1] {
                Expr::Literal(
                    ScalarValue::Utf8(Some(k))
                    | ScalarValue::Utf8View(Some(k))
                    | ScalarValue::LargeUtf8(Some(k)),
                    _,
                ) => k,
                _ => return Ok(Transformed::no(expr)),
            };
            let column = match DEDICATED_SCOPES[scope].get(key) {
                Some(d) => beside(&args[0], d.column, sql_type(d.int), cx).map(|c| (d.int, c)),
                None => cx.configured(scope, key).and_then(|(name, int)| {
                    beside(&args[0], name, sql_type(int), cx).map(|c| (int, c))
                }),
            };
            let Some((int, column)) = column else {
                // A key of the map alone: the stored map, not the merged one.
                return Ok(Transformed::new(expr, false, TreeNodeRecursion::Jump));
            };
            let new = match (types, int) {
                // As the map's text (this rule runs after type coercion).
                (false, _) => coalesce(vec![cast(column, DataType::Utf8), expr.clone()]),
                (true, true) => coalesce(vec![
                    when(column.is_not_null(), lit(TypeCode::Int as i8)).end()?,
                    expr.clone(),
                ]),
                // A text value has no type code; in the map it may have one.
                (true, false) => expr.clone(),
            };
            Ok(Transformed::new(new, true, TreeNodeRecursion::Jump))
        }
        Expr::Column(c) | Expr::OuterReferenceColumn(_, c) => {
            let Some((scope, types)) = scope_of(&c.name) else {
                return Ok(Transformed::no(expr));
            };
            let Some(columns) = dedicated_columns(scope, &expr, cx) else {
                return Ok(Transformed::no(expr));
            };
            let columns: Vec<Expr> = DEDICATED_SCOPES[scope]
                .columns
                .iter()
                .zip(columns)
                .filter(|(d, _)| !types || d.int)
                .map(|(_, c)| c)
                .collect();
            let mut args = vec![expr.clone()];
            args.extend(columns);
            // The configured columns beside this map, as `key, column`.
            for ((s, key), (name, int)) in cx.configured {
                if *s != scope || (types && !int) {
                    continue;
                }
                if let Some(column) = beside(&expr, name, sql_type(*int), cx) {
                    args.push(lit(key.as_str()));
                    args.push(column);
                }
            }
            Ok(Transformed::new(
                Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(merge(scope, types)), args)),
                true,
                TreeNodeRecursion::Jump,
            ))
        }
        _ => Ok(Transformed::no(expr)),
    }
}

/// `with_dedicated_<map>(<map>, <every dedicated column of its scope>[,
/// key, column]...)` (`with_dedicated_span_attributes`): the map with each
/// column's value (integers as text) added, the built-in columns first,
/// then the configured ones as pairs of key and column; with `types`,
/// `with_dedicated_<type-code map>(<type-code map>, <every integer
/// column>[, key, column]...)`: the codes with the integer code added for
/// each integer column that holds a value. `scope` indexes
/// [`DEDICATED_SCOPES`].
pub fn merge(scope: usize, types: bool) -> ScalarUDF {
    let map = if types {
        DEDICATED_SCOPES[scope].types
    } else {
        DEDICATED_SCOPES[scope].map
    };
    ScalarUDF::new_from_impl(Merge {
        name: format!("with_dedicated_{map}"),
        scope,
        types,
        signature: Signature::variadic_any(Volatility::Immutable),
    })
}

/// Every function [`merge`] makes.
pub fn merges() -> impl Iterator<Item = ScalarUDF> {
    (0..DEDICATED_SCOPES.len()).flat_map(|scope| [merge(scope, false), merge(scope, true)])
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Merge {
    /// `with_dedicated_<map column>`: one name per function, so a SQL
    /// worker finds each by name ([`crate::distributed`]).
    name: String,
    scope: usize,
    types: bool,
    signature: Signature,
}

fn field_names() -> MapFieldNames {
    MapFieldNames {
        entry: MAP_ENTRIES.into(),
        key: MAP_KEY.into(),
        value: MAP_VALUE.into(),
    }
}

impl ScalarUDFImpl for Merge {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let want = if self.types {
            attribute_types_type()
        } else {
            attributes_type()
        };
        if args.first() != Some(&want) {
            return exec_err!("{} expects the map column first", self.name());
        }
        // After the built-in columns, pairs of a text key and a column of
        // text or integers (integers only for the type codes).
        let builtin = DEDICATED_SCOPES[self.scope]
            .columns
            .iter()
            .filter(|d| !self.types || d.int)
            .count();
        let pairs = args.get(1 + builtin..).unwrap_or_default();
        let fits = args.len() > builtin
            && pairs.len().is_multiple_of(2)
            && pairs.chunks(2).all(|pair| {
                matches!(
                    pair[0],
                    DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
                ) && (pair[1] == DataType::Int64
                    || (!self.types && matches!(pair[1], DataType::Utf8 | DataType::Utf8View)))
            });
        if !fits {
            return exec_err!(
                "{} takes the map, {builtin} columns, then pairs of a text key and a column",
                self.name()
            );
        }
        Ok(want)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let mut keys: Vec<&str> = DEDICATED_SCOPES[self.scope]
            .columns
            .iter()
            .filter(|d| !self.types || d.int)
            .map(|d| d.key)
            .collect();
        let builtin = keys.len();
        if args.args.len() < 1 + builtin || !(args.args.len() - 1 - builtin).is_multiple_of(2) {
            return exec_err!(
                "{} takes the map, {builtin} columns, then pairs of key and column",
                self.name()
            );
        }
        let mut arrays = vec![args.args[0].to_array(rows)?];
        for a in &args.args[1..1 + builtin] {
            arrays.push(a.to_array(rows)?);
        }
        for pair in args.args[1 + builtin..].chunks(2) {
            let ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(key))
                | ScalarValue::Utf8View(Some(key))
                | ScalarValue::LargeUtf8(Some(key)),
            ) = &pair[0]
            else {
                return exec_err!("{}: a configured column's key must be text", self.name());
            };
            keys.push(key);
            arrays.push(pair[1].to_array(rows)?);
        }
        let map = arrays[0].as_map();
        let columns = &arrays[1..];
        let out: ArrayRef = if self.types {
            Arc::new(merge_types(map, &keys, columns)?)
        } else {
            Arc::new(merge_values(map, &keys, columns)?)
        };
        Ok(ColumnarValue::Array(out))
    }
}

fn merge_values(map: &MapArray, keys: &[&str], columns: &[ArrayRef]) -> Result<MapArray> {
    let mut out = MapBuilder::with_capacity(
        Some(field_names()),
        StringBuilder::new(),
        StringBuilder::new(),
        map.len(),
    );
    let map_keys = map.keys().as_string::<i32>();
    let map_values = map.values().as_string::<i32>();
    for row in 0..map.len() {
        let Some(entries) = row_entries(map, columns, row) else {
            out.append(false)?;
            continue;
        };
        for i in entries.clone() {
            out.keys().append_value(map_keys.value(i));
            out.values()
                .append_option(map_values.is_valid(i).then(|| map_values.value(i)));
        }
        for (key, column) in keys.iter().zip(columns) {
            if !adds(column, row, key, map_keys, &entries) {
                continue;
            }
            out.keys().append_value(key);
            if let Some(text) = column.as_string_view_opt() {
                out.values().append_value(text.value(row));
            } else if let Some(text) = column.as_string_opt::<i32>() {
                out.values().append_value(text.value(row));
            } else {
                let v = column.as_primitive::<Int64Type>().value(row);
                out.values().append_value(v.to_string());
            }
        }
        out.append(true)?;
    }
    Ok(out.finish())
}

fn merge_types(map: &MapArray, keys: &[&str], columns: &[ArrayRef]) -> Result<MapArray> {
    let mut out = MapBuilder::with_capacity(
        Some(field_names()),
        StringBuilder::new(),
        Int8Builder::new(),
        map.len(),
    );
    let map_keys = map.keys().as_string::<i32>();
    let map_codes = map.values().as_primitive::<arrow::datatypes::Int8Type>();
    for row in 0..map.len() {
        let Some(entries) = row_entries(map, columns, row) else {
            out.append(false)?;
            continue;
        };
        for i in entries.clone() {
            out.keys().append_value(map_keys.value(i));
            out.values()
                .append_option(map_codes.is_valid(i).then(|| map_codes.value(i)));
        }
        for (key, column) in keys.iter().zip(columns) {
            if adds(column, row, key, map_keys, &entries) {
                out.keys().append_value(key);
                out.values().append_value(TypeCode::Int as i8);
            }
        }
        out.append(true)?;
    }
    Ok(out.finish())
}

/// The map's entries of `row`, or `None` for a null row: a null map with
/// no column value either.
fn row_entries(map: &MapArray, columns: &[ArrayRef], row: usize) -> Option<Range<usize>> {
    if map.is_null(row) {
        return columns.iter().any(|c| c.is_valid(row)).then_some(0..0);
    }
    let offsets = map.value_offsets();
    Some(offsets[row] as usize..offsets[row + 1] as usize)
}

/// Whether `column` adds `key` to the row: it has a value, and the map
/// has not the key already (a map merged once, in a query over a query
/// that selected both the map and the columns).
fn adds(
    column: &ArrayRef,
    row: usize,
    key: &str,
    map_keys: &arrow::array::StringArray,
    entries: &Range<usize>,
) -> bool {
    column.is_valid(row) && !entries.clone().any(|i| map_keys.value(i) == key)
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::LogicalPlan;

    /// The columns the `spans` scan of `sql`'s optimized plan reads: its
    /// projection, then those of the conditions it applies itself.
    async fn scanned(sql: &str) -> Vec<String> {
        let f = crate::testing::fixture();
        let plan = f
            .engine
            .context()
            .sql(sql)
            .await
            .unwrap()
            .into_optimized_plan()
            .unwrap();
        let mut columns = Vec::new();
        plan.apply(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                columns.extend(
                    scan.projected_schema
                        .fields()
                        .iter()
                        .map(|f| f.name().clone()),
                );
                for filter in &scan.filters {
                    columns.extend(filter.column_refs().iter().map(|c| c.name.clone()));
                }
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        columns
    }

    use datafusion::common::tree_node::TreeNode as _;

    /// A table of spans in a layout with configured columns, queried with
    /// the rule: the keys are found by the columns' metadata.
    #[tokio::test]
    async fn configured_columns_are_read_for_their_keys() {
        use std::sync::Arc;

        use datafusion::arrow::util::pretty::pretty_format_batches;
        use datafusion::datasource::MemTable;
        use datafusion::prelude::SessionContext;
        use tracelake_schema::layout::{AttributeSet, Configured, Layout};
        use tracelake_schema::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use tracelake_schema::opentelemetry_proto::tonic::common::v1::any_value::Value;
        use tracelake_schema::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
        use tracelake_schema::opentelemetry_proto::tonic::trace::v1::{
            ResourceSpans, ScopeSpans, Span,
        };
        use tracelake_schema::otlp::{Acceptance, SpansBuilder};

        let layout = Layout::new(vec![
            Configured::text(AttributeSet::Span, "app.tenant"),
            Configured::int(AttributeSet::Span, "app.retries"),
        ])
        .unwrap();
        let kv = |key: &str, value: Value| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        };
        let span = |id: u8, attributes| Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            name: "op".into(),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            attributes,
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        span(
                            1,
                            vec![
                                kv("app.tenant", Value::StringValue("acme".into())),
                                kv("app.retries", Value::IntValue(2)),
                            ],
                        ),
                        // A value of another type than the column's: in
                        // the map.
                        span(2, vec![kv("app.retries", Value::StringValue("two".into()))]),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut builder = SpansBuilder::for_layout(Arc::clone(&layout), 2);
        builder.append_request(&request, &Acceptance::ANY_TIME);
        let batch = builder.finish();
        let ctx = SessionContext::new();
        for udf in super::merges() {
            ctx.register_udf(udf);
        }
        ctx.add_analyzer_rule(Arc::new(super::DedicatedAttributes));
        let table = MemTable::try_new(Arc::clone(layout.schema()), vec![vec![batch]]).unwrap();
        ctx.register_table("spans", Arc::new(table)).unwrap();
        let run = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let df = ctx.sql(sql).await.unwrap();
                pretty_format_batches(&df.collect().await.unwrap())
                    .unwrap()
                    .to_string()
            }
        };
        let text = run(
            "SELECT span_attributes['app.tenant'] AS t, span_attributes['app.retries'] AS r, \
             span_attribute_types['app.retries'] AS c FROM spans ORDER BY span_id",
        )
        .await;
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(
            rows,
            [
                "| t    | r   | c |",
                "| acme | 2   | 2 |",
                "|      | two |   |"
            ],
            "{text}"
        );
        let text =
            run("SELECT count(*) AS n FROM spans WHERE span_attributes['app.tenant'] = 'acme'")
                .await;
        assert!(text.contains("| 1 |"), "{text}");
        // The whole map has every key, the configured ones included.
        let text =
            run("SELECT array_sort(map_keys(span_attributes)) AS k FROM spans ORDER BY span_id")
                .await;
        assert!(text.contains("[app.retries, app.tenant]"), "{text}");
        assert!(text.contains("| [app.retries]"), "{text}");
        let text = run("SELECT span_attribute_types FROM spans ORDER BY span_id").await;
        assert!(text.contains("{app.retries: 2}"), "{text}");
    }

    #[tokio::test]
    async fn a_dedicated_key_reads_its_column_not_the_map() {
        let columns =
            scanned("SELECT count(*) FROM spans WHERE span_attributes['http.route'] = '/checkout'")
                .await;
        assert!(columns.contains(&"http_route".to_string()), "{columns:?}");
        // The map is read only for a value of another type than the column's.
        let columns = scanned("SELECT span_attributes['amount'] FROM spans").await;
        assert_eq!(columns, ["span_attributes"]);
        let columns = scanned("SELECT map_keys(span_attributes) FROM spans").await;
        assert!(
            columns.contains(&"thread_name".to_string()),
            "merged: {columns:?}"
        );
    }
}
