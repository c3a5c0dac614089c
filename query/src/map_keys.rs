//! Attribute-map lookups in the files whose maps lack the key.
//!
//! Every data file lists the keys of its attribute maps in its Delta `Add`
//! tags ([`tracelake_schema::spans::map_keys_tag`]). A lookup of any other
//! key (`span_attributes['k']`, or the `coalesce(<column>,
//! span_attributes['k'])` that [`crate::dedicated`] makes of a key with a
//! column) is null in that file. The spans table applies its conditions
//! itself (it tells DataFusion they are exact): for each set of files whose
//! maps lack the same looked-up keys it puts nulls in place of those
//! lookups ([`file_sets`]), so that
//! - the map is not read where no lookup of it remains: a search on a
//!   dedicated key reads its column alone, not the long-tail map where the
//!   column is null (nor the resource map a bare key also looks in);
//! - what remains prunes row groups and pages by their statistics (and
//!   bloom filters) like any column condition (`coalesce(CAST(c AS Utf8),
//!   NULL) = 'v'` is `c = 'v'`, in the `CASE` form DataFusion's simplifier
//!   gives a `coalesce` too);
//! - the files where the condition became false or null are not read at
//!   all (a key no file of an hour has).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode as _, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, Result, ScalarValue};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::expr::{Case, ScalarFunction};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use tracelake_schema::spans::{KEYED_MAPS, map_keys_tag};

use crate::scan::DataFile;

/// The keys of each of [`KEYED_MAPS`] in one file; `None` where the file
/// does not say (too many keys, or written before files listed them).
pub(crate) type FileKeys = [Option<HashSet<String>>; KEYED_MAPS.len()];

/// A file's [`FileKeys`], from its `Add` action's tags.
pub(crate) fn file_keys(tags: Option<&HashMap<String, Option<String>>>) -> FileKeys {
    KEYED_MAPS.map(|(map, _)| {
        let text = tags?.get(&map_keys_tag(map))?.as_deref()?;
        let keys: Vec<String> = serde_json::from_str(text).ok()?;
        Some(keys.into_iter().collect())
    })
}

/// A lookup of a literal key in one of [`KEYED_MAPS`] (or its type-code
/// map): `map` indexes [`KEYED_MAPS`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Lookup {
    map: usize,
    key: String,
    /// In the type-code map (`Int8` values), not the text map.
    types: bool,
}

impl Lookup {
    /// `expr` as a lookup, if it is `get_field(<keyed map>, '<key>')`.
    fn of(expr: &Expr) -> Option<Self> {
        let Expr::ScalarFunction(ScalarFunction { func, args }) = expr else {
            return None;
        };
        if func.name() != "get_field" || args.len() != 2 {
            return None;
        }
        let Expr::Column(column) = &args[0] else {
            return None;
        };
        let (map, types) = KEYED_MAPS
            .iter()
            .enumerate()
            .find_map(|(i, (map, types))| {
                if column.name == *map {
                    Some((i, false))
                } else if column.name == *types {
                    Some((i, true))
                } else {
                    None
                }
            })?;
        let key = match &args[1] {
            Expr::Literal(
                ScalarValue::Utf8(Some(k))
                | ScalarValue::Utf8View(Some(k))
                | ScalarValue::LargeUtf8(Some(k)),
                _,
            ) => k.clone(),
            _ => return None,
        };
        Some(Self { map, key, types })
    }

    /// Whether the file with `keys` lacks the key.
    pub(crate) fn absent_in(&self, keys: &FileKeys) -> bool {
        keys[self.map]
            .as_ref()
            .is_some_and(|keys| !keys.contains(&self.key))
    }

    /// The null a lookup of an absent key gives.
    fn null(&self) -> Expr {
        let value = if self.types {
            ScalarValue::Int8(None)
        } else {
            ScalarValue::Utf8(None)
        };
        Expr::Literal(value, None)
    }
}

/// The lookups `expr` makes, each once, in order.
fn lookups<'a>(exprs: impl IntoIterator<Item = &'a Expr>) -> Vec<Lookup> {
    let mut out = Vec::new();
    for expr in exprs {
        expr.apply(|e| {
            if let Some(l) = Lookup::of(e) {
                if !out.contains(&l) {
                    out.push(l);
                }
                return Ok(TreeNodeRecursion::Jump);
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .expect("infallible");
    }
    out
}

/// `files` in sets that each need the same conditions: `conditions` with
/// the lookups of the keys the set's maps lack made null ([`without`]),
/// those that became true left out; the files where a condition became
/// false or null are in no set. `schema` is the table's SQL schema.
pub(crate) fn file_sets(
    files: Vec<DataFile>,
    conditions: &[Expr],
    schema: &DFSchemaRef,
) -> Result<Vec<(Vec<Expr>, Vec<DataFile>)>> {
    let lookups = lookups(conditions);
    let mut by_absent: BTreeMap<Vec<bool>, Vec<DataFile>> = BTreeMap::new();
    for file in files {
        let absent = lookups.iter().map(|l| l.absent_in(&file.keys)).collect();
        by_absent.entry(absent).or_default().push(file);
    }
    let mut sets: Vec<(Vec<Expr>, Vec<DataFile>)> = Vec::new();
    'sets: for (absent, files) in by_absent {
        let absent: Vec<Lookup> = lookups
            .iter()
            .zip(absent)
            .filter(|(_, absent)| *absent)
            .map(|(l, _)| l.clone())
            .collect();
        let mut kept = Vec::with_capacity(conditions.len());
        for condition in conditions {
            let condition = without(condition.clone(), &absent, schema)?;
            if keeps_nothing(&condition) {
                continue 'sets;
            }
            if !keeps_all(&condition) {
                kept.push(condition);
            }
        }
        // Sets left with the same conditions are read as one.
        match sets.iter_mut().find(|(c, _)| *c == kept) {
            Some((_, same)) => same.extend(files),
            None => sets.push((kept, files)),
        }
    }
    Ok(sets)
}

/// `filter` in the files where each lookup `absent` names is null, made as
/// simple as DataFusion makes it (so that the Parquet scan prunes by what
/// remains): a `coalesce` loses its null arguments, a comparison with null
/// becomes null. `schema` is the table's SQL schema.
fn without(filter: Expr, absent: &[Lookup], schema: &DFSchemaRef) -> Result<Expr> {
    if absent.is_empty() {
        return Ok(filter);
    }
    let nulled = filter
        .transform_up(|e| {
            if let Some(l) = Lookup::of(&e)
                && absent.contains(&l)
            {
                return Ok(Transformed::yes(l.null()));
            }
            match e {
                Expr::ScalarFunction(ScalarFunction { func, args })
                    if func.name() == "coalesce" =>
                {
                    let kept: Vec<Expr> = args.iter().filter(|a| !is_null(a)).cloned().collect();
                    Ok(match kept.len() {
                        n if n == args.len() => {
                            Transformed::no(Expr::ScalarFunction(ScalarFunction { func, args }))
                        }
                        // All null: the first (typed) null stands for them.
                        0 => Transformed::yes(args.into_iter().next().expect("an argument")),
                        1 => Transformed::yes(kept.into_iter().next().expect("one")),
                        _ => Transformed::yes(Expr::ScalarFunction(ScalarFunction {
                            func: Arc::clone(&func),
                            args: kept,
                        })),
                    })
                }
                // DataFusion's simplifier makes `coalesce(a, b)` into
                // `CASE WHEN a IS NOT NULL THEN a ELSE b END` before the
                // conditions reach the table: the same, in that form.
                Expr::Case(case) if is_coalesce(&case) => {
                    let else_null = case.else_expr.as_deref().is_none_or(is_null);
                    let kept: Vec<(Box<Expr>, Box<Expr>)> = case
                        .when_then_expr
                        .iter()
                        .filter(|(_, then)| !is_null(then))
                        .cloned()
                        .collect();
                    if kept.len() == case.when_then_expr.len() && !else_null {
                        return Ok(Transformed::no(Expr::Case(case)));
                    }
                    Ok(Transformed::yes(match (kept.len(), case.else_expr) {
                        (0, Some(e)) => *e,
                        // All null: the first (typed) null stands for them.
                        (0, None) => *case.when_then_expr[0].1.clone(),
                        (1, _) if else_null => *kept[0].1.clone(),
                        (_, else_expr) => Expr::Case(Case {
                            expr: None,
                            when_then_expr: kept,
                            else_expr: else_expr.filter(|_| !else_null),
                        }),
                    }))
                }
                e => Ok(Transformed::no(e)),
            }
        })?
        .data;
    let context = SimplifyContext::builder()
        .with_schema(Arc::clone(schema))
        .build();
    ExprSimplifier::new(context).simplify(nulled)
}

/// Whether `case` is a `coalesce` as DataFusion writes one: no operand,
/// and each branch `WHEN x IS NOT NULL THEN x`.
fn is_coalesce(case: &Case) -> bool {
    case.expr.is_none()
        && !case.when_then_expr.is_empty()
        && case
            .when_then_expr
            .iter()
            .all(|(when, then)| matches!(&**when, Expr::IsNotNull(x) if x == then))
}

fn is_null(expr: &Expr) -> bool {
    matches!(expr, Expr::Literal(v, _) if v.is_null())
}

/// Whether condition `expr` (simplified) keeps no row: false or null.
fn keeps_nothing(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::Literal(
            ScalarValue::Boolean(Some(false)) | ScalarValue::Boolean(None) | ScalarValue::Null,
            _
        )
    )
}

/// Whether condition `expr` (simplified) keeps every row.
fn keeps_all(expr: &Expr) -> bool {
    matches!(expr, Expr::Literal(ScalarValue::Boolean(Some(true)), _))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::DFSchema;
    use datafusion::functions::core::expr_fn::get_field;
    use datafusion::logical_expr::{cast, col, lit};
    use datafusion::prelude::coalesce;
    use tracelake_schema::spans::{SPAN_ATTRIBUTES, attributes_type};

    use super::*;

    fn schema() -> DFSchemaRef {
        Arc::new(
            DFSchema::try_from(Schema::new(vec![
                Field::new("http_route", DataType::Utf8View, true),
                Field::new(SPAN_ATTRIBUTES, attributes_type(), true),
                Field::new(KEYED_MAPS[1].0, attributes_type(), true),
                Field::new("service_name", DataType::Utf8View, true),
            ]))
            .unwrap(),
        )
    }

    fn route() -> Expr {
        get_field(col(SPAN_ATTRIBUTES), "http.route")
    }

    /// What `crate::dedicated` makes of `span_attributes['http.route'] = '/a'`.
    fn dedicated_condition() -> Expr {
        coalesce(vec![cast(col("http_route"), DataType::Utf8), route()]).eq(lit("/a"))
    }

    /// The names of the columns `expr` reads.
    fn columns(expr: &Expr) -> Vec<String> {
        expr.column_refs()
            .into_iter()
            .map(|c| c.name.clone())
            .collect()
    }

    /// `condition` as the table gets it: simplified by DataFusion's
    /// optimizer, which makes each `coalesce` a `CASE`.
    fn simplified(condition: Expr) -> Expr {
        let context = SimplifyContext::builder().with_schema(schema()).build();
        let condition = ExprSimplifier::new(context).simplify(condition).unwrap();
        assert!(condition.to_string().contains("CASE"), "{condition}");
        condition
    }

    #[test]
    fn a_file_without_the_key_reads_the_column_alone() {
        let schema = schema();
        // The span's key, and a bare key as the search API asks it (the
        // span's map, else the resource's).
        let resource_route = get_field(col(KEYED_MAPS[1].0), "http.route");
        let bare = coalesce(vec![
            coalesce(vec![cast(col("http_route"), DataType::Utf8), route()]),
            resource_route,
        ])
        .eq(lit("/a"));
        for (condition, lookups_made) in [(dedicated_condition(), 1), (bare, 2)] {
            let condition = simplified(condition);
            let found = lookups([&condition]);
            assert_eq!(found.len(), lookups_made, "{condition}");
            let clean = without(condition.clone(), &found, &schema).unwrap();
            assert_eq!(columns(&clean), ["http_route"], "{clean}");
            // A plain comparison of the column, which statistics and bloom
            // filters prune by: no cast, no coalesce or `CASE` left.
            assert!(
                matches!(&clean, Expr::BinaryExpr(b) if matches!(*b.left, Expr::Column(_))),
                "{clean}"
            );
            // Where the file says nothing, the lookup stays.
            assert_eq!(without(condition.clone(), &[], &schema).unwrap(), condition);
        }
    }

    /// A `coalesce` of both maps and a default, as the optimizer writes it:
    /// each map a file lacks leaves the `CASE`, the default stays; a `CASE`
    /// whose value is not what it tests is left to DataFusion.
    #[test]
    fn a_coalesce_as_case_keeps_what_is_not_null() {
        let schema = schema();
        let resource_route = get_field(col(KEYED_MAPS[1].0), "http.route");
        let condition =
            simplified(coalesce(vec![route(), resource_route, lit("none")]).eq(lit("none")));
        let found = lookups([&condition]);
        assert_eq!(found.len(), 2, "{condition}");
        // Neither map has the key: the default alone, which holds.
        let neither = without(condition.clone(), &found, &schema).unwrap();
        assert!(keeps_all(&neither), "{neither}");
        // The span map lacks it: the resource map's value, else the default.
        let span: Vec<Lookup> = found.iter().filter(|l| l.map == 0).cloned().collect();
        let resource_only = without(condition.clone(), &span, &schema).unwrap();
        assert_eq!(
            columns(&resource_only),
            [KEYED_MAPS[1].0],
            "{resource_only}"
        );
        assert!(
            resource_only.to_string().contains("none"),
            "{resource_only}"
        );
        let not_coalesce = Case::new(
            None,
            vec![(Box::new(route().is_not_null()), Box::new(lit("x")))],
            None,
        );
        assert!(!is_coalesce(&not_coalesce));
        assert!(!is_coalesce(&Case::new(
            None,
            Vec::new(),
            Some(Box::new(lit("x")))
        )));
    }

    #[test]
    fn a_key_no_file_has_keeps_nothing_there() {
        let schema = schema();
        let condition = get_field(col(SPAN_ATTRIBUTES), "app.nowhere").eq(lit("x"));
        let found = lookups([&condition]);
        let gone = without(condition, &found, &schema).unwrap();
        assert!(keeps_nothing(&gone), "{gone}");
        // `IS NULL` of an absent key holds for every row.
        let condition = get_field(col(SPAN_ATTRIBUTES), "app.nowhere").is_null();
        let all = without(condition, &found, &schema).unwrap();
        assert!(keeps_all(&all), "{all}");
    }

    /// A lookup of a computed key is no lookup of a known key.
    #[test]
    fn only_literal_keys_of_the_attribute_maps_are_lookups() {
        assert!(lookups([&col("service_name").eq(lit("a"))]).is_empty());
        let computed = datafusion::functions::core::get_field()
            .call(vec![col(SPAN_ATTRIBUTES), col("service_name")])
            .is_null();
        assert!(lookups([&computed]).is_empty());
        assert_eq!(
            lookups([&route().eq(lit("/a")).or(route().is_null())]).len(),
            1
        );
    }

    #[test]
    fn file_keys_come_from_the_tags() {
        let tags: HashMap<String, Option<String>> = [(
            map_keys_tag(SPAN_ATTRIBUTES),
            Some(r#"["amount","http.route"]"#.to_string()),
        )]
        .into();
        let keys = file_keys(Some(&tags));
        let amount = lookups([&get_field(col(SPAN_ATTRIBUTES), "amount").is_null()]);
        let other = lookups([&route().is_null()]);
        assert!(!amount[0].absent_in(&keys));
        let missing = lookups([&get_field(col(SPAN_ATTRIBUTES), "team").is_null()]);
        assert!(missing[0].absent_in(&keys));
        assert!(!other[0].absent_in(&keys));
        // No tag for the resource map: any key may be there.
        let resource = lookups([&get_field(col(KEYED_MAPS[1].0), "team").is_null()]);
        assert!(!resource[0].absent_in(&keys));
        assert!(file_keys(None).iter().all(Option::is_none));
    }
}
