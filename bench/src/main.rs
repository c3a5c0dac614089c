//! `tracelake-bench drive`: sends a seeded, realistic workload to an OTLP
//! endpoint and reports spans/s, MB/s, acknowledgement latency and
//! rejections, as a table and as JSON (`--json`).

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracelake_bench::ceiling;
use tracelake_bench::driver::{self, Config};
use tracelake_bench::runner::{self, RunConfig};

#[derive(Parser)]
#[command(name = "tracelake-bench", about = "tracelake's load driver")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send the workload and report
    Drive {
        /// http://host:4318 (OTLP/HTTP protobuf) or grpc://host:4317
        #[arg(long, default_value = "http://127.0.0.1:4318")]
        endpoint: String,
        /// Concurrent streams
        #[arg(long, default_value_t = 4)]
        streams: usize,
        /// Stop after this many spans
        #[arg(long)]
        spans: Option<u64>,
        /// Stop after this many seconds
        #[arg(long)]
        seconds: Option<f64>,
        /// Spans per request
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Workload seed
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Most memory for pre-encoded requests, in MiB (the pool repeats beyond)
        #[arg(long, default_value_t = 512)]
        pool_mib: usize,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
        /// OTLP/HTTP body encoding: protobuf or json
        #[arg(long, default_value = "protobuf")]
        encoding: driver::Encoding,
        /// Send this token (`Authorization: Bearer`)
        #[arg(long, env = "TRACELAKE_BENCH_TOKEN")]
        token: Option<String>,
        /// PEM CA file for an https:// endpoint
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
        /// Start the first trace this many seconds ago (default: ten
        /// minutes): hours ago fills closed hours, which compaction takes
        #[arg(long)]
        start_seconds_ago: Option<u64>,
    },
    /// Put the workload on a Kafka topic as otlp_proto messages (what the
    /// OpenTelemetry Collector's Kafka exporter writes); report as JSON
    Kafka {
        /// Bootstrap brokers, host:port comma-separated
        #[arg(long, value_delimiter = ',')]
        brokers: Vec<String>,
        #[arg(long, default_value = "otlp_spans")]
        topic: String,
        /// Partitions of the topic when it is created
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        #[arg(long, default_value_t = 1_000_000)]
        spans: u64,
        /// Spans per message
        #[arg(long, default_value_t = 500)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Start the server, ingest, compact, run the query suite and DuckDB;
    /// report (see BENCHMARKS.md)
    Run {
        /// Spans to ingest
        #[arg(long, default_value_t = 1_000_000)]
        spans: u64,
        /// Spread the spans over this many closed hours
        #[arg(long, default_value_t = 6)]
        hours: u64,
        /// http or grpc
        #[arg(long, default_value = "http")]
        protocol: String,
        #[arg(long, default_value_t = 4)]
        streams: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Memory for pre-encoded requests, MiB (beyond, the pool repeats
        /// as other traces)
        #[arg(long, default_value_t = 2048)]
        pool_mib: usize,
        /// Runs of each query
        #[arg(long, default_value_t = 50)]
        repeat: usize,
        /// Skip the DuckDB baseline
        #[arg(long)]
        no_duckdb: bool,
        /// The tracelake binary [default: next to this one]
        #[arg(long)]
        server: Option<std::path::PathBuf>,
        /// Keep the store here (default: a temporary directory)
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Longest wait for flushes and compaction, seconds
        #[arg(long, default_value_t = 3600)]
        settle_timeout: u64,
        /// Also write the JSON report here
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Run the SQL suite against running servers, interleaved, in one
    /// sitting (and DuckDB, with --duckdb): medians, ratios to the first
    /// server, equal answers
    Sql {
        /// A server's HTTP address (http://host:3200); repeat for several
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
        /// Runs of each query on each server
        #[arg(long, default_value_t = 10)]
        repeat: usize,
        /// DuckDB too, over the files a runner's data directory lists
        /// (`D/duckdb_input.json`)
        #[arg(long)]
        duckdb: Option<std::path::PathBuf>,
    },
    /// Run the reads of the query suite (trace by id, absent ids, the
    /// searches and the cross-trace breakdown) against running servers,
    /// interleaved: medians, ratios to the first server, equal answers
    Reads {
        /// A server's HTTP address (http://host:3200); repeat for several
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
        /// Reads of each kind on each server
        #[arg(long, default_value_t = 20)]
        repeat: usize,
    },
    /// Decode the same workload into Arrow without sending or storing it
    Ceiling {
        /// Threads (the server's ingest uses every core)
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Spans in the pool
        #[arg(long, default_value_t = 200_000)]
        spans: u64,
        /// Passes over the pool
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Decoders to measure, each in turn: protobuf, protobuf-prost,
        /// json, json-serde (the reference paths through the OTLP structs)
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "protobuf,protobuf-prost,json,json-serde"
        )]
        paths: Vec<String>,
    },
    /// Encode the workload's spans as one flushed Parquet file, in memory,
    /// with the server's writer: CPU per span and bytes per span
    Flush {
        /// Spans in the file
        #[arg(long, default_value_t = 500_000)]
        spans: u64,
        /// Files written (the median is reported)
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Columns written as nulls in every row (a comma list of the
        /// spans table's top-level columns), to measure what they cost
        #[arg(long, value_delimiter = ',')]
        null_columns: Vec<String>,
    },
}

/// The server's allocator (src/main.rs).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Drive {
            endpoint,
            streams,
            spans,
            seconds,
            batch,
            seed,
            pool_mib,
            json,
            encoding,
            token,
            ca_file,
            start_seconds_ago,
        } => {
            let report = driver::run(Config {
                streams,
                spans,
                duration: seconds.map(Duration::from_secs_f64),
                batch,
                seed,
                pool_bytes: pool_mib << 20,
                encoding,
                token,
                ca_file,
                start_unix_ns: start_seconds_ago.map(|s| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64);
                    now - s * 1_000_000_000
                }),
                ..Config::new(endpoint)
            })
            .await?;
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            if report.failed_requests > 0 {
                anyhow::bail!("{} requests failed", report.failed_requests);
            }
        }
        Command::Run {
            spans,
            hours,
            protocol,
            streams,
            batch,
            seed,
            pool_mib,
            repeat,
            no_duckdb,
            server,
            data_dir,
            settle_timeout,
            out,
        } => {
            let server = match server {
                Some(s) => s,
                None => std::env::current_exe()?
                    .parent()
                    .map(|d| d.join("tracelake"))
                    .context("no directory for the tracelake binary")?,
            };
            let report = runner::run(&RunConfig {
                server,
                spans,
                hours,
                protocol,
                streams,
                batch,
                seed,
                pool_mib,
                repeat,
                duckdb: !no_duckdb,
                data_dir,
                settle_timeout: Duration::from_secs(settle_timeout),
            })
            .await?;
            if let Some(out) = out {
                std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
            eprint!("{}", runner::table(&report));
        }
        Command::Kafka {
            brokers,
            topic,
            partitions,
            spans,
            batch,
            seed,
        } => {
            let report =
                tracelake_bench::kafka::produce(brokers, &topic, partitions, spans, batch, seed)
                    .await?;
            println!("{report}");
        }
        Command::Sql {
            endpoints,
            repeat,
            duckdb,
        } => {
            let report = runner::sql_suite(&endpoints, repeat, duckdb.as_deref()).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Reads { endpoints, repeat } => {
            let report = runner::reads_suite(&endpoints, repeat).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Ceiling {
            threads,
            spans,
            rounds,
            batch,
            seed,
            paths,
        } => {
            let config = Config {
                streams: threads,
                spans: Some(spans),
                batch,
                seed,
                pool_bytes: usize::MAX,
                ..Config::new("")
            };
            let mut out = serde_json::Map::new();
            for name in paths {
                let path = ceiling::Path::ALL
                    .into_iter()
                    .find(|p| p.name() == name)
                    .with_context(|| format!("unknown decoder {name:?}"))?;
                let (decoded, seconds) = ceiling::run(&config, threads, rounds, path);
                out.insert(
                    name,
                    serde_json::json!({
                        "spans_decoded": decoded,
                        "seconds": seconds,
                        "spans_per_second": decoded as f64 / seconds,
                    }),
                );
            }
            out.insert("threads".into(), threads.into());
            println!("{}", serde_json::Value::Object(out));
        }
        Command::Flush {
            spans,
            rounds,
            batch,
            seed,
            null_columns,
        } => {
            let config = Config {
                spans: Some(spans),
                batch,
                seed,
                pool_bytes: usize::MAX,
                ..Config::new("")
            };
            let batches = tracelake_bench::flush::batches(&config);
            let batches = tracelake_bench::flush::with_nulls(batches, &null_columns)?;
            let rounds = tracelake_bench::flush::run(&batches, rounds);
            // µs a span, each round's, sorted.
            let per_span = |seconds: fn(&tracelake_bench::flush::Round) -> f64| {
                let mut us: Vec<f64> = rounds
                    .iter()
                    .map(|r| seconds(r) * 1e6 / r.spans as f64)
                    .collect();
                us.sort_by(f64::total_cmp);
                us
            };
            let (elapsed, cpu) = (per_span(|r| r.seconds), per_span(|r| r.cpu_seconds));
            let r = rounds[0];
            println!(
                "{}",
                serde_json::json!({
                    "spans": r.spans,
                    "rounds": rounds.len(),
                    "flush_us_per_span_median": elapsed[elapsed.len() / 2],
                    "flush_us_per_span": elapsed,
                    "flush_cpu_us_per_span_median": cpu[cpu.len() / 2],
                    "flush_cpu_us_per_span": cpu,
                    "bytes_per_span": r.bytes as f64 / r.spans as f64,
                })
            );
        }
    }
    Ok(())
}
