//! `tracelake-bench drive`: sends a seeded, realistic workload to an OTLP
//! endpoint and reports spans/s, MB/s, acknowledgement latency and
//! rejections, as a table and as JSON (`--json`).

use std::time::Duration;

use clap::{Parser, Subcommand};
use tracelake_bench::ceiling;
use tracelake_bench::driver::{self, Config};

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
    },
}

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
        } => {
            let report = driver::run(Config {
                endpoint,
                streams,
                spans,
                duration: seconds.map(Duration::from_secs_f64),
                batch,
                seed,
                pool_bytes: pool_mib << 20,
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
        Command::Ceiling {
            threads,
            spans,
            rounds,
            batch,
            seed,
        } => {
            let config = Config {
                endpoint: String::new(),
                streams: threads,
                spans: Some(spans),
                duration: None,
                batch,
                seed,
                pool_bytes: usize::MAX,
            };
            let (decoded, seconds) = ceiling::run(&config, threads, rounds);
            println!(
                "{}",
                serde_json::json!({
                    "spans_decoded": decoded,
                    "seconds": seconds,
                    "spans_per_second": decoded as f64 / seconds,
                    "threads": threads,
                })
            );
        }
    }
    Ok(())
}
