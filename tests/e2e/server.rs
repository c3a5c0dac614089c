//! A real `tracelake serve` process on free loopback ports.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde_json::Value;

use crate::procs;

/// The public conformance fixtures in the workplace's shared folder, or
/// `None` where that folder is absent: the test skips ([`crate::skip`];
/// in CI it fails).
pub(crate) fn fixtures() -> Option<std::path::PathBuf> {
    let dir = crate::checkout("../shared/fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        crate::skip::skip(&format!(
            "{} is absent (fixtures live in the workplace's shared folder)",
            dir.display()
        ));
        None
    }
}

/// The Python interpreter (`TRACELAKE_PYTHON`, else `python3`) if it can
/// `import` the given modules. Without them the test skips
/// ([`crate::skip`]), except in CI, where `.ci/run` installs `packages`
/// (pinned, in a virtual environment named by `TRACELAKE_PYTHON`, which CI
/// must set) and their absence fails the test.
pub(crate) fn python_with(imports: &str, packages: &str) -> Option<String> {
    assert!(
        std::env::var_os("CI").is_none() || std::env::var_os("TRACELAKE_PYTHON").is_some(),
        "CI runs the pinned virtual environment's python, named in TRACELAKE_PYTHON (see .ci/run)"
    );
    let python = std::env::var("TRACELAKE_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", &format!("import {imports}")])
        .output();
    if probe.as_ref().is_ok_and(|o| o.status.success()) {
        return Some(python);
    }
    let why = match probe {
        Ok(o) => String::from_utf8_lossy(&o.stderr)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string(),
        Err(e) => e.to_string(),
    };
    crate::skip::skip(&format!(
        "{python} cannot import {imports} ({why}; install {packages} from tests/python/requirements.txt)"
    ));
    None
}

/// The value of the sample named exactly `name` (labels included) in a
/// Prometheus text exposition; 0 when absent.
pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `--flush-max-bytes` for a server that a test flushes with
/// [`TestServer::flush_with_filler`]: far above what a test's own few spans
/// take in the buffer, so they stay there until the filler comes.
pub(crate) const FLUSH_BYTES: &str = "4000000";

/// The partition of [`TestServer::flush_with_filler`]'s spans.
pub(crate) const FILLER_PARTITION: &str = "date=2001-01-01/hour=00";

pub(crate) struct TestServer {
    /// The server in a process group of its own; killed with the group
    /// when dropped (the test ends, passed or failed).
    child: Option<procs::Guard>,
    pub(crate) grpc: SocketAddr,
    pub(crate) otlp_http: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) flight_sql: SocketAddr,
    pub(crate) zipkin: SocketAddr,
    pub(crate) jaeger_http: SocketAddr,
    pub(crate) jaeger_compact: SocketAddr,
    pub(crate) jaeger_binary: SocketAddr,
    /// `http`, or `https` for a server started with TLS.
    scheme: &'static str,
    client: reqwest::Client,
}

/// Whether process `pid` holds the TCP socket listening on `port`: its
/// inode in `/proc/<pid>/net/tcp` is one of the process's descriptors.
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let sockets: std::collections::HashSet<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    ["tcp", "tcp6"].iter().any(|table| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                f.len() > 9
                    && f[3] == "0A"
                    && f[1].rsplit(':').next() == Some(&format!("{port:04X}"))
                    && sockets.contains(f[9])
            })
    })
}

/// A loopback address for a server a test is about to start: its port is
/// free for TCP and UDP now, and nothing but a deliberate bind takes it
/// before the server does.
///
/// A port the kernel hands out for `127.0.0.1:0` lies in its ephemeral
/// range, from which every outgoing connection also takes its local port:
/// while a server starts (seconds, when it waits for an upgrade or replays
/// its WAL) the tests' clients and the servers' calls to S3 open many, and
/// one taking the port ends the start with "address in use". So ports come
/// from below that range, where only binds land, and a counter keeps this
/// process from handing one out twice.
pub(crate) fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOWEST: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // The first port of the kernel's ephemeral range (Linux's default
    // where the file cannot be read).
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral < LOWEST + 1_000 {
        // Too little room below it: whatever the kernel hands out.
        return TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
    }
    let span = ephemeral - LOWEST;
    // Another test process starts elsewhere in the range.
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let port = LOWEST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if TcpListener::bind(addr).is_ok() && std::net::UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free loopback port below {ephemeral}");
}

impl TestServer {
    /// Starts the binary on `data_dir` with `args` appended and waits until
    /// it is ready. Ports are picked free just before the start; another
    /// process can take one first, so a server that exits while starting is
    /// started again on new ports.
    pub(crate) async fn start(data_dir: &Path, args: &[&str]) -> Self {
        Self::start_with_env(data_dir, args, &[]).await
    }

    /// [`TestServer::start`] with environment variables set for the server.
    pub(crate) async fn start_with_env(
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        Self::start_with_client(data_dir, args, envs, None).await
    }

    /// [`TestServer::start`] for a server with TLS on (`args` name its
    /// files): `client` trusts its CA; [`TestServer::url`] and the helpers
    /// speak `https` through it.
    pub(crate) async fn start_tls(data_dir: &Path, args: &[&str], client: reqwest::Client) -> Self {
        Self::start_with_client(data_dir, args, &[], Some(client)).await
    }

    /// [`TestServer::start_tls`] with environment variables set.
    pub(crate) async fn start_tls_with_env(
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        client: reqwest::Client,
    ) -> Self {
        Self::start_with_client(data_dir, args, envs, Some(client)).await
    }

    async fn start_with_client(
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        tls_client: Option<reqwest::Client>,
    ) -> Self {
        for attempt in 1..=5 {
            let mut server = Self::spawn(data_dir, args, envs);
            if let Some(client) = &tls_client {
                server.scheme = "https";
                server.client = client.clone();
            }
            if server.wait_ready().await {
                return server;
            }
            eprintln!(
                "tracelake exited while starting (attempt {attempt}); retrying on other ports"
            );
        }
        panic!("tracelake did not start in 5 attempts");
    }

    /// Starts the binary without waiting for it to be ready: for a server
    /// that a fault point ends while it starts ([`TestServer::wait_exit`]).
    pub(crate) fn spawn_unready(data_dir: &Path, args: &[&str]) -> Self {
        Self::spawn(data_dir, args, &[])
    }

    /// [`TestServer::spawn_unready`] with environment variables set.
    pub(crate) fn spawn_unready_with_env(
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        Self::spawn(data_dir, args, envs)
    }

    fn spawn(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let (grpc, otlp_http, http, flight_sql, zipkin, jaeger_http) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let (jaeger_compact, jaeger_binary) = (free_port(), free_port());
        let child = procs::Guard::spawn(
            Command::new(server_binary())
                .arg("serve")
                .arg("--data-dir")
                .arg(data_dir)
                .args(["--otlp-grpc-listen", &grpc.to_string()])
                .args(["--otlp-http-listen", &otlp_http.to_string()])
                .args(["--http-listen", &http.to_string()])
                .args(["--flight-sql-listen", &flight_sql.to_string()])
                .args(["--zipkin-listen", &zipkin.to_string()])
                .args(["--jaeger-http-listen", &jaeger_http.to_string()])
                .args(["--jaeger-compact-listen", &jaeger_compact.to_string()])
                .args(["--jaeger-binary-listen", &jaeger_binary.to_string()])
                .args(args)
                // `TRACELAKE_TEST_LOG` sets the servers' log filter when a
                // failure needs more than this.
                .env(
                    "TRACELAKE_LOG",
                    std::env::var("TRACELAKE_TEST_LOG")
                        .unwrap_or_else(|_| "warn,tracelake_collector=info".into()),
                )
                .envs(envs.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
            "server",
        )
        .expect("tracelake binary starts");
        Self {
            child: Some(child),
            grpc,
            otlp_http,
            http,
            flight_sql,
            zipkin,
            jaeger_http,
            jaeger_compact,
            jaeger_binary,
            scheme: "http",
            client: reqwest::Client::new(),
        }
    }

    /// Waits until a server started with [`TestServer::spawn_unready`] is
    /// ready; panics if it exits first.
    pub(crate) async fn until_ready(&mut self) {
        assert!(self.wait_ready().await, "the server exited while starting");
    }

    /// True once the server answers `/ready`; false if it exited first.
    /// A `/ready` from another process that took the port first does not
    /// count: the answer must come from a socket our child holds.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().unwrap().is_some()
            {
                return false;
            }
            if let Ok(r) = self.client.get(self.url("/ready")).send().await
                && r.status().is_success()
                && listens_on(self.pid(), self.http.port())
            {
                return true;
            }
            assert!(Instant::now() < deadline, "server not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.http)
    }

    /// Posts an OTLP/HTTP protobuf request and expects 200.
    pub(crate) async fn export(&self, request: &ExportTraceServiceRequest) {
        let r = self
            .client
            .post(self.otlp_url())
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    pub(crate) fn otlp_url(&self) -> String {
        format!("{}://{}/v1/traces", self.scheme, self.otlp_http)
    }

    /// The plan of type `plan_type` (`physical_plan`,
    /// `physical_plan_with_schema`, ...) that `explain` (`EXPLAIN ...` or
    /// `EXPLAIN VERBOSE ...`) shows.
    pub(crate) async fn plan(&self, explain: &str, plan_type: &str) -> String {
        let rows = self.sql(explain).await;
        rows.iter()
            .find(|r| r["plan_type"] == plan_type)
            .and_then(|r| r["plan"].as_str())
            .unwrap_or_else(|| panic!("no {plan_type} in {rows:?}"))
            .to_string()
    }

    /// Runs SQL and returns the JSON rows; panics on an error status.
    pub(crate) async fn sql(&self, sql: &str) -> Vec<Value> {
        let (status, body) = self.sql_response(sql).await;
        assert_eq!(status, 200, "{sql}: {body}");
        body["rows"].as_array().unwrap().clone()
    }

    pub(crate) async fn sql_response(&self, sql: &str) -> (u16, Value) {
        let r = self
            .client
            .post(self.url("/api/v1/sql"))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether the server has stopped itself (a `stop` fault point): every
    /// thread in state `T` (`/proc/<pid>/task/<tid>/stat`; the process's
    /// own stat shows its main thread only, which may stop before others).
    pub(crate) fn is_stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return false;
        };
        let mut any = false;
        for task in tasks.flatten() {
            let stopped = std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|s| Some(s.rsplit_once(')')?.1.trim_start().starts_with('T')));
            match stopped {
                Some(true) => any = true,
                // A thread that ended meanwhile has no say.
                None => {}
                Some(false) => return false,
            }
        }
        any
    }

    /// Waits up to 60 s for the server to stop itself at a `stop` fault
    /// point (`what` names that point in the failure message); fails if it
    /// exits instead.
    pub(crate) async fn until_stopped(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.is_stopped() {
            assert!(self.try_exit().is_none(), "exited before {what}");
            assert!(Instant::now() < deadline, "never reached {what} in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGCONT: a server stopped at a fault point runs on.
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    /// Sends `signal` (`-TERM`) to the server with kill(1).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}: {status}");
    }

    /// The server's exit status if it has exited by itself.
    pub(crate) fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child.take().unwrap().kill();
        Some(status)
    }

    /// Waits up to `limit` for the server to exit by itself (a fault point
    /// aborted it); its exit status.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut().expect("the server is running");
            if let Some(status) = child.try_wait().unwrap() {
                self.child.take().unwrap().kill();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Rows committed to the table per partition (`/api/v1/storage`).
    pub(crate) async fn committed(&self) -> std::collections::BTreeMap<String, u64> {
        let (status, body) = self.get("/api/v1/storage").await;
        assert_eq!(status, 200, "{body}");
        body["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["partition"].as_str().unwrap().to_string(),
                    p["rows"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Makes the server flush everything it buffers now. It must run with
    /// `--flush-max-bytes` [`FLUSH_BYTES`], no retention and a span age that
    /// accepts 2001: filler spans (service `filler`, in
    /// [`FILLER_PARTITION`]) fill the buffer past that size, and once they
    /// are committed so is everything sent before them (a flush takes every
    /// partition at once). The filler partition is left out of the answer:
    /// the rows now committed in every other partition.
    pub(crate) async fn flush_with_filler(&self) -> std::collections::BTreeMap<String, u64> {
        use opentelemetry_proto::tonic::trace::v1::Span;
        const START: u64 = 978_307_200_000_000_000; // 2001-01-01T00:00:00Z
        let filler = |batch: u64| {
            (0..5_000u64)
                .map(|i| Span {
                    trace_id: (0xf111_u128 << 64 | u128::from(batch))
                        .to_be_bytes()
                        .to_vec(),
                    span_id: (batch << 32 | (i + 1)).to_be_bytes().to_vec(),
                    name: format!("filler {i}"),
                    kind: 1,
                    start_time_unix_nano: START + i * 1000,
                    end_time_unix_nano: START + i * 1000 + 500,
                    ..Default::default()
                })
                .collect::<Vec<_>>()
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        for batch in 0.. {
            self.export(&crate::spans::request("filler", filler(batch)))
                .await;
            let wait = Instant::now() + Duration::from_secs(5);
            while Instant::now() < wait {
                let mut committed = self.committed().await;
                if committed.remove(FILLER_PARTITION).is_some() {
                    return committed;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                Instant::now() < deadline,
                "{} filler batches and no flush: is the server running with --flush-max-bytes {FLUSH_BYTES}?",
                batch + 1
            );
        }
        unreachable!()
    }

    /// `/metrics` as text.
    /// A Flight SQL statement, as `tenant` when given: GetFlightInfo, then
    /// DoGet of its ticket; the DoGet's `warning` headers and the batches.
    pub(crate) async fn flight_sql(
        &self,
        sql: &str,
        tenant: Option<&str>,
    ) -> (Vec<String>, Vec<arrow_array::RecordBatch>) {
        use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt as _};
        use futures::TryStreamExt as _;

        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.flight_sql))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
        fn with_tenant<T>(message: T, tenant: Option<&str>) -> tonic::Request<T> {
            let mut request = tonic::Request::new(message);
            if let Some(tenant) = tenant {
                request
                    .metadata_mut()
                    .insert("x-scope-orgid", tenant.parse().unwrap());
            }
            request
        }
        let command = CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        };
        let descriptor = arrow_flight::FlightDescriptor::new_cmd(command.as_any().encode_to_vec());
        let info = client
            .get_flight_info(with_tenant(descriptor, tenant))
            .await
            .unwrap()
            .into_inner();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let response = client.do_get(with_tenant(ticket, tenant)).await.unwrap();
        let warnings = response
            .metadata()
            .get_all("warning")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let data: Vec<arrow_flight::FlightData> =
            response.into_inner().try_collect().await.unwrap();
        (
            warnings,
            arrow_flight::utils::flight_data_to_batches(&data).unwrap(),
        )
    }

    /// `/ready`'s text, whatever its status.
    pub(crate) async fn ready_text(&self) -> String {
        let r = self.client.get(self.url("/ready")).send().await.unwrap();
        r.text().await.unwrap()
    }

    pub(crate) async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        body.as_str().unwrap().to_string()
    }

    /// SIGKILL: no chance to flush.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Sends SIGTERM and returns at once (see [`TestServer::wait_exit`]).
    pub(crate) fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// SIGTERM and wait for a clean exit.
    pub(crate) fn terminate(&mut self) {
        self.signal("-TERM");
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "server exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "server did not stop within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The server binary the tests start: this build's, or for measurements
/// against another build (a release binary) the one `TRACELAKE_SERVER_BIN`
/// names. Refused under CI, where every test runs this build.
pub(crate) fn server_binary() -> std::ffi::OsString {
    match std::env::var_os("TRACELAKE_SERVER_BIN") {
        Some(path) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "TRACELAKE_SERVER_BIN is for measurements, not for CI"
            );
            path
        }
        None => env!("CARGO_BIN_EXE_tracelake").into(),
    }
}
