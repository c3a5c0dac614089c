//! SQL behaviour as sqllogictest files (`query/slt/*.slt`), run against the
//! engine over the shared test trace (`crate::testing`): what the `spans`
//! table holds and how, which functions work, and what the read-only
//! engine refuses. Values print as Arrow displays them; `NULL` for null.

use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::{QueryEngine, QueryError};

struct Engine(Arc<QueryEngine>);

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Engine {
    type Error = QueryError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, QueryError> {
        let (schema, batches) = self.0.sql(sql).await?;
        let types = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                t if t.is_integer() => DefaultColumnType::Integer,
                t if t.is_floating() => DefaultColumnType::FloatingPoint,
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
                    DefaultColumnType::Text
                }
                _ => DefaultColumnType::Any,
            })
            .collect();
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| QueryError::Internal(e.to_string()))?;
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| f.value(row).to_string())
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "tracelake"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_behaviour_files() {
    let f = crate::testing::fixture();
    // The directory `cargo test` names at run time, so that a test binary
    // built in another checkout (a shared target directory) reads this
    // checkout's files; the one it was built in otherwise.
    let dir = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    for file in files {
        let engine = Arc::clone(&f.engine);
        let mut runner = sqllogictest::Runner::new(move || {
            let engine = Arc::clone(&engine);
            async move { Ok::<_, QueryError>(Engine(engine)) }
        });
        // The trace's start, so that files can name times relative to it.
        runner.set_var("T0".into(), f.t0.to_string());
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {}", file.display(), e.display(true)));
    }
}
