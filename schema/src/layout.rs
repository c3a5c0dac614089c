//! A table's layout: the spans schema of [`crate::spans`] plus the
//! dedicated attribute columns its operators configured.
//!
//! The built-in dedicated columns ([`crate::spans::DEDICATED`],
//! [`crate::spans::RESOURCE_DEDICATED`]) hold the semantic-convention keys
//! most instrumentation sets. An application's own frequent keys
//! (`app.tenant`, `team.name`) can have columns too, as Tempo's vParquet5
//! "dedicated columns" do: up to [`MAX_CONFIGURED_TEXT`] string and
//! [`MAX_CONFIGURED_INT`] integer columns per attribute set (span,
//! resource). Each is stored exactly as a built-in one: a value of the
//! column's type goes to the column and not to the map.
//!
//! The table's schema is the record of which keys have columns: a
//! configured column is a field named `span_<key>` (`resource_<key>`, every
//! character other than a letter, digit or `_` replaced by `_`) whose field
//! metadata names its attribute set and key ([`SET_METADATA`],
//! [`KEY_METADATA`]). Delta keeps field metadata, and so do the Arrow
//! schemas of the Parquet files and of every batch read from them, so each
//! reader ([`crate::model::SpanRows`], the query service's SQL rewrite)
//! finds the configured columns in the schema in hand. Columns are only
//! ever added (Delta cannot drop one without rewriting the table): files
//! written before a column existed read it as null, and their values of
//! that key are in the map, where readers look when the column is null.
//!
//! Configured columns come after every standard column in the stored
//! schema (before the partition columns `date`, `hour`), in the order they
//! were added.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex};

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use crate::spans::{
    DEDICATED, Dedicated, DedicatedScope, PARTITION_COLUMNS, RESOURCE_DEDICATED, RESOURCE_SCOPE,
    SPAN_SCOPE, START_TIME, START_TIME_UNIX_NANO, standard_fields, timestamp_type,
};

/// Field metadata of a configured dedicated column: its attribute set,
/// `span` or `resource`.
pub const SET_METADATA: &str = "tracelake.dedicated.set";
/// Field metadata of a configured dedicated column: the attribute key it
/// holds.
pub const KEY_METADATA: &str = "tracelake.dedicated.key";

/// Most configured string columns per attribute set (Tempo vParquet5's
/// budget).
pub const MAX_CONFIGURED_TEXT: usize = 20;
/// Most configured integer columns per attribute set.
pub const MAX_CONFIGURED_INT: usize = 5;

/// The attribute sets that can have dedicated columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttributeSet {
    Span,
    Resource,
}

impl AttributeSet {
    pub fn name(self) -> &'static str {
        match self {
            Self::Span => "span",
            Self::Resource => "resource",
        }
    }

    /// The built-in columns of this set.
    pub fn builtin(self) -> &'static DedicatedScope {
        match self {
            Self::Span => &SPAN_SCOPE,
            Self::Resource => &RESOURCE_SCOPE,
        }
    }
}

/// A dedicated column chosen by configuration:
/// `SET:KEY` or `SET:TYPE:KEY`, with `SET` `span` or `resource` and `TYPE`
/// `string` (the default) or `int`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Configured {
    pub set: AttributeSet,
    pub key: String,
    /// An `Int64` column of integer values (else `Utf8` of strings).
    pub int: bool,
}

impl Configured {
    pub fn text(set: AttributeSet, key: &str) -> Self {
        Self {
            set,
            key: key.to_string(),
            int: false,
        }
    }

    pub fn int(set: AttributeSet, key: &str) -> Self {
        Self {
            set,
            key: key.to_string(),
            int: true,
        }
    }

    /// The column's name: `span_` or `resource_` and the key, with every
    /// character other than an ASCII letter, digit or `_` as `_`.
    pub fn column(&self) -> String {
        let mut name = format!("{}_", self.set.name());
        name.extend(self.key.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        }));
        name
    }

    fn data_type(&self) -> DataType {
        if self.int {
            DataType::Int64
        } else {
            DataType::Utf8
        }
    }

    /// The column's field, with the metadata that names set and key.
    pub fn field(&self) -> Field {
        Field::new(self.column(), self.data_type(), true).with_metadata(
            [
                (SET_METADATA.to_string(), self.set.name().to_string()),
                (KEY_METADATA.to_string(), self.key.clone()),
            ]
            .into(),
        )
    }

    /// The configured column `field` is, if its metadata says it is one.
    pub fn of_field(field: &Field) -> Option<Result<Self, String>> {
        let set = field.metadata().get(SET_METADATA)?;
        let Some(key) = field.metadata().get(KEY_METADATA) else {
            return Some(Err(format!(
                "column {} names a dedicated attribute set but no key",
                field.name()
            )));
        };
        let set = match set.as_str() {
            "span" => AttributeSet::Span,
            "resource" => AttributeSet::Resource,
            other => {
                return Some(Err(format!(
                    "column {}: unknown attribute set {other:?}",
                    field.name()
                )));
            }
        };
        let int = match field.data_type() {
            DataType::Int64 => true,
            // `Utf8View` in SQL's schema of the table.
            DataType::Utf8 | DataType::Utf8View => false,
            other => {
                return Some(Err(format!(
                    "dedicated column {} has type {other}, not Int64 or Utf8",
                    field.name()
                )));
            }
        };
        Some(Ok(Self {
            set,
            key: key.clone(),
            int,
        }))
    }
}

impl fmt::Display for Configured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.int { "int" } else { "string" };
        write!(f, "{}:{kind}:{}", self.set.name(), self.key)
    }
}

impl FromStr for Configured {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "{s:?}: expected SET:KEY or SET:TYPE:KEY (SET span or resource, TYPE string or int)"
            )
        };
        let (set, rest) = s.split_once(':').ok_or_else(usage)?;
        let set = match set {
            "span" => AttributeSet::Span,
            "resource" => AttributeSet::Resource,
            _ => return Err(usage()),
        };
        let (int, key) = match rest.split_once(':') {
            Some(("int", key)) => (true, key),
            Some(("string", key)) => (false, key),
            _ => (false, rest),
        };
        if key.is_empty() {
            return Err(usage());
        }
        Ok(Self {
            set,
            key: key.to_string(),
            int,
        })
    }
}

/// The dedicated columns of one attribute set in a layout.
#[derive(Debug)]
pub struct SetColumns {
    builtin: &'static DedicatedScope,
    /// The built-in columns, then the configured ones.
    pub columns: Vec<Dedicated>,
}

impl SetColumns {
    fn new(set: AttributeSet, configured: &[Configured]) -> Self {
        let builtin = set.builtin();
        let mut columns = builtin.columns.to_vec();
        columns.extend(
            configured
                .iter()
                .filter(|c| c.set == set)
                .map(|c| Dedicated {
                    key: intern(&c.key),
                    column: intern(&c.column()),
                    int: c.int,
                }),
        );
        Self { builtin, columns }
    }

    /// How many of [`SetColumns::columns`] are built in (they come first).
    pub fn builtin_len(&self) -> usize {
        self.builtin.columns.len()
    }

    /// The position of `key`'s column in [`SetColumns::columns`].
    #[inline]
    pub fn index(&self, key: &str) -> Option<usize> {
        let builtin = self.builtin.columns.len();
        self.builtin.index(key).or_else(|| {
            self.columns[builtin..]
                .iter()
                .position(|d| d.key == key)
                .map(|i| builtin + i)
        })
    }
}

/// Keys and column names of configured columns, kept for the process's
/// life: a layout is made when a table is opened or its schema changes, so
/// there are as many as keys ever configured.
fn intern(s: &str) -> &'static str {
    static SEEN: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = seen.get(s) {
        return s;
    }
    let s: &'static str = Box::leak(s.into());
    seen.insert(s);
    s
}

/// A table's spans layout: the standard schema and its configured dedicated
/// columns.
#[derive(Debug)]
pub struct Layout {
    configured: Vec<Configured>,
    span: SetColumns,
    resource: SetColumns,
    schema: SchemaRef,
    file: SchemaRef,
    scan: SchemaRef,
    sql: SchemaRef,
}

impl Layout {
    /// The layout without configured columns.
    pub fn standard() -> &'static Arc<Layout> {
        static STANDARD: LazyLock<Arc<Layout>> =
            LazyLock::new(|| Layout::new(Vec::new()).expect("the standard layout is valid"));
        &STANDARD
    }

    /// The standard layout with the columns `configured`, in that order.
    pub fn new(configured: Vec<Configured>) -> Result<Arc<Self>, String> {
        check(&configured)?;
        let mut fields = standard_fields();
        let partitions = fields.split_off(fields.len() - PARTITION_COLUMNS.len());
        fields.extend(configured.iter().map(Configured::field));
        let file = Arc::new(Schema::new(fields.clone()));
        fields.extend(partitions.iter().cloned());
        let schema = Arc::new(Schema::new(fields));
        // SQL's table: `start_time` before `start_time_unix_nano`, and the
        // configured columns last, after the partition columns, so that a
        // layout with more columns keeps every column of SQL's schema at its
        // position (a plan made before a column was added still reads the
        // columns it names).
        let mut sql: Vec<Field> = Vec::with_capacity(schema.fields().len() + 1);
        for field in standard_fields() {
            if field.name() == START_TIME_UNIX_NANO {
                sql.push(Field::new(START_TIME, timestamp_type(), true));
            }
            sql.push(field);
        }
        sql.extend(configured.iter().map(Configured::field));
        let scan = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| as_view(f))
                .collect::<Vec<_>>(),
        ));
        Ok(Arc::new(Self {
            span: SetColumns::new(AttributeSet::Span, &configured),
            resource: SetColumns::new(AttributeSet::Resource, &configured),
            configured,
            schema,
            file,
            scan,
            sql: Arc::new(Schema::new(sql.iter().map(as_view).collect::<Vec<_>>())),
        }))
    }

    /// The layout whose stored schema is `schema` (a table's): the
    /// configured columns its field metadata names.
    pub fn of_schema(schema: &Schema) -> Result<Arc<Self>, String> {
        let configured = schema
            .fields()
            .iter()
            .filter_map(|f| Configured::of_field(f))
            .collect::<Result<Vec<_>, _>>()?;
        if configured.is_empty() {
            return Ok(Arc::clone(Self::standard()));
        }
        Self::new(configured)
    }

    /// This layout with the columns of `wanted` it lacks added after its
    /// own; a key this layout has as a column of the other type is an error.
    pub fn with(self: &Arc<Self>, wanted: &[Configured]) -> Result<Arc<Self>, String> {
        let mut configured = self.configured.clone();
        for want in wanted {
            match configured
                .iter()
                .find(|c| c.set == want.set && c.key == want.key)
            {
                Some(have) if have.int != want.int => {
                    return Err(format!(
                        "dedicated column {want}: the table has {have} (a column keeps its type)"
                    ));
                }
                Some(_) => {}
                None => configured.push(want.clone()),
            }
        }
        if configured.len() == self.configured.len() {
            return Ok(Arc::clone(self));
        }
        Self::new(configured)
    }

    /// The configured columns, in schema order.
    pub fn configured(&self) -> &[Configured] {
        &self.configured
    }

    pub fn span(&self) -> &SetColumns {
        &self.span
    }

    pub fn resource(&self) -> &SetColumns {
        &self.resource
    }

    /// The names of the dedicated string columns of both sets (those the
    /// writer gives bloom filters).
    pub fn text_columns(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.span
            .columns
            .iter()
            .chain(&self.resource.columns)
            .filter(|d| !d.int)
            .map(|d| d.column)
    }

    /// The stored schema (the Delta table's and the buffered rows'),
    /// partition columns last.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The data files' schema: [`Layout::schema`] without the partition
    /// columns.
    pub fn file_schema(&self) -> &SchemaRef {
        &self.file
    }

    /// SQL's `spans` table: the stored columns, `start_time` (computed)
    /// before `start_time_unix_nano`, the configured columns last; its
    /// string columns as `Utf8View` ([`Layout::scan_schema`]).
    pub fn sql_schema(&self) -> &SchemaRef {
        &self.sql
    }

    /// The stored schema as queries read it: the top-level string columns
    /// as `Utf8View`. Parquet turns a dictionary-encoded page (the
    /// low-cardinality columns that queries group by: services,
    /// operations, statuses, systems) into views of the dictionary's
    /// values without copying a string, and DataFusion groups and compares
    /// views without following them for strings of up to 12 bytes
    /// (BENCHMARKS.md, "String columns as views"). The nested maps keep
    /// `Utf8`.
    pub fn scan_schema(&self) -> &SchemaRef {
        &self.scan
    }

    /// `batch` (rows of this or an older layout of the table, the standard
    /// columns with or without the partition columns) with exactly
    /// `schema`'s columns: each found by name, one it lacks as nulls.
    pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
        if batch.schema_ref() == schema {
            return Ok(batch.clone());
        }
        let rows = batch.num_rows();
        let columns = schema
            .fields()
            .iter()
            .map(|f| match batch.column_by_name(f.name()) {
                Some(c) if c.data_type() == f.data_type() => Ok(Arc::clone(c)),
                Some(c) => Err(ArrowError::SchemaError(format!(
                    "column {} has type {}, expected {}",
                    f.name(),
                    c.data_type(),
                    f.data_type()
                ))),
                None => Ok(new_null_array(f.data_type(), rows)),
            })
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        RecordBatch::try_new_with_options(
            Arc::clone(schema),
            columns,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
    }
}

/// `field` with `Utf8View` for a `Utf8` type (top level only).
fn as_view(field: &Field) -> Field {
    match field.data_type() {
        DataType::Utf8 => field.clone().with_data_type(DataType::Utf8View),
        _ => field.clone(),
    }
}

/// Checks configured columns: known sets, within the budget, no key or
/// column name twice, no key with a built-in column, no name of a standard
/// column.
fn check(configured: &[Configured]) -> Result<(), String> {
    let standard: HashSet<String> = standard_fields()
        .iter()
        .map(|f| f.name().to_string())
        .chain([START_TIME.to_string()])
        .collect();
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    for c in configured {
        let builtin = match c.set {
            AttributeSet::Span => DEDICATED,
            AttributeSet::Resource => RESOURCE_DEDICATED,
        };
        if let Some(d) = builtin.iter().find(|d| d.key == c.key) {
            return Err(format!(
                "dedicated column {c}: the key has the built-in column {} already",
                d.column
            ));
        }
        if !keys.insert((c.set, c.key.as_str())) {
            return Err(format!("dedicated column {c}: the key is configured twice"));
        }
        let name = c.column();
        if standard.contains(&name) {
            return Err(format!(
                "dedicated column {c}: its column name {name} is a standard column's"
            ));
        }
        if !names.insert(name.clone()) {
            return Err(format!(
                "dedicated column {c}: its column name {name} is another configured key's \
                 (keys differing only in characters other than letters, digits and _)"
            ));
        }
    }
    for set in [AttributeSet::Span, AttributeSet::Resource] {
        for (int, max) in [(false, MAX_CONFIGURED_TEXT), (true, MAX_CONFIGURED_INT)] {
            let n = configured
                .iter()
                .filter(|c| c.set == set && c.int == int)
                .count();
            if n > max {
                return Err(format!(
                    "{n} {} {} dedicated columns configured; at most {max}",
                    set.name(),
                    if int { "int" } else { "string" }
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_columns_parse_and_name_their_columns() {
        let c: Configured = "span:app.tenant".parse().unwrap();
        assert_eq!(c, Configured::text(AttributeSet::Span, "app.tenant"));
        assert_eq!(c.column(), "span_app_tenant");
        let c: Configured = "resource:int:team/size".parse().unwrap();
        assert_eq!(c, Configured::int(AttributeSet::Resource, "team/size"));
        assert_eq!(c.column(), "resource_team_size");
        // A key may hold colons.
        let c: Configured = "span:string:a:b".parse().unwrap();
        assert_eq!(c.key, "a:b");
        assert_eq!(c.to_string(), "span:string:a:b");
        for bad in ["app.tenant", "scope:x", "span:", "span:int:"] {
            let err = bad.parse::<Configured>().unwrap_err();
            assert!(err.contains("SET:KEY"), "{bad}: {err}");
        }
    }

    #[test]
    fn configured_columns_come_after_the_standard_ones() {
        let layout = Layout::new(vec![
            Configured::text(AttributeSet::Span, "app.tenant"),
            Configured::int(AttributeSet::Resource, "team.size"),
        ])
        .unwrap();
        let standard = Layout::standard();
        let names = |s: &SchemaRef| -> Vec<String> {
            s.fields().iter().map(|f| f.name().to_string()).collect()
        };
        let stored = names(layout.schema());
        let n = standard.schema().fields().len();
        assert_eq!(stored.len(), n + 2);
        assert_eq!(
            &stored[n - 2..],
            ["span_app_tenant", "resource_team_size", "date", "hour"]
        );
        assert_eq!(names(layout.file_schema()), stored[..n].to_vec());
        // SQL's schema only grows at its end.
        let sql = names(layout.sql_schema());
        assert_eq!(sql[..sql.len() - 2], names(standard.sql_schema())[..]);
        // The schema names the keys, and is read back as the same layout.
        let again = Layout::of_schema(layout.schema()).unwrap();
        assert_eq!(again.configured(), layout.configured());
        assert_eq!(again.schema(), layout.schema());
        // Builders find the keys after the built-in ones.
        let builtin = layout.span().builtin_len();
        assert_eq!(layout.span().index("app.tenant"), Some(builtin));
        assert_eq!(
            layout.span().index("http.route"),
            SPAN_SCOPE.index("http.route")
        );
        assert_eq!(layout.span().index("team.size"), None);
        assert_eq!(
            layout.resource().index("team.size"),
            Some(layout.resource().builtin_len())
        );
    }

    #[test]
    fn a_layout_only_grows() {
        let one = Layout::new(vec![Configured::text(AttributeSet::Span, "a")]).unwrap();
        let same = one
            .with(&[Configured::text(AttributeSet::Span, "a")])
            .unwrap();
        assert!(Arc::ptr_eq(&one, &same));
        let two = one
            .with(&[Configured::text(AttributeSet::Span, "b")])
            .unwrap();
        assert_eq!(
            two.configured(),
            [
                Configured::text(AttributeSet::Span, "a"),
                Configured::text(AttributeSet::Span, "b")
            ]
        );
        let err = one
            .with(&[Configured::int(AttributeSet::Span, "a")])
            .unwrap_err();
        assert!(err.contains("keeps its type"), "{err}");
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let refused = |c: Vec<Configured>, says: &str| {
            let err = Layout::new(c).unwrap_err();
            assert!(err.contains(says), "{err}");
        };
        refused(
            vec![Configured::text(AttributeSet::Span, "http.route")],
            "built-in column http_route",
        );
        refused(
            vec![Configured::text(AttributeSet::Span, "attributes")],
            "standard column",
        );
        refused(
            vec![
                Configured::text(AttributeSet::Span, "a.b"),
                Configured::text(AttributeSet::Span, "a/b"),
            ],
            "another configured key",
        );
        refused(
            vec![
                Configured::text(AttributeSet::Span, "a"),
                Configured::int(AttributeSet::Span, "a"),
            ],
            "twice",
        );
        let many = (0..=MAX_CONFIGURED_INT)
            .map(|i| Configured::int(AttributeSet::Resource, &format!("k{i}")))
            .collect();
        refused(many, "at most 5");
        // The same key in both sets is two columns.
        Layout::new(vec![
            Configured::text(AttributeSet::Span, "team"),
            Configured::text(AttributeSet::Resource, "team"),
        ])
        .unwrap();
    }

    #[test]
    fn rows_of_an_older_layout_conform_to_a_newer_one() {
        let layout = Layout::new(vec![Configured::int(AttributeSet::Span, "n")]).unwrap();
        let batch = RecordBatch::new_empty(Arc::clone(Layout::standard().schema()));
        let conformed = Layout::conform(&batch, layout.schema()).unwrap();
        assert_eq!(conformed.schema_ref(), layout.schema());
        let wrong = Arc::new(Schema::new(vec![Field::new(
            crate::spans::TRACE_ID,
            DataType::Utf8,
            false,
        )]));
        let err = Layout::conform(&RecordBatch::new_empty(wrong), layout.schema()).unwrap_err();
        assert!(err.to_string().contains("trace_id"), "{err}");
    }
}
