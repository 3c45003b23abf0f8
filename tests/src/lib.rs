//! The test harness: real stores and real `dcp` processes.
//!
//! - [`Backend::store`] opens a migrated store on a temporary SQLite file or
//!   on a fresh PostgreSQL database (from the server `scripts/pg` starts,
//!   found through `DCP_TEST_PG_URL`);
//! - [`Backend::state`] builds an [`AppState`] for `app(state).oneshot(…)` tests;
//! - [`Server::start`] runs the real `dcp` binary (`DCP_BIN`, or the one
//!   beside the test executable) on a free loopback port;
//! - [`fleet::Fleet::start`] runs real `sshd` hosts on loopback addresses;
//! - [`nginx::NginxHosts::start`] runs nginx balancer nodes beside them;
//! - [`browser::browser`] starts headless Chromium under chromedriver;
//! - [`vcs::GitServer`] and [`vcs::SvnServer`] serve sources for image builds;
//! - [`cloud::Cloud::start`] wires a DCP to the Aliyun simulator in fleet mode.
//!
//! `scripts/test` sets everything up; run tests through it.

#![allow(clippy::missing_panics_doc, clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod cloud;
pub mod docker;
pub mod fleet;
pub mod haproxy;
pub mod nginx;
pub mod sse;
pub mod vcs;

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, LazyLock, Mutex, mpsc},
    time::{Duration, Instant},
};

use dcp::{AppState, Config, Store};
use serde_json::Value;
use sqlx::{Connection as _, Executor as _, PgConnection};
use tempfile::TempDir;

/// The password tests give the first admin.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// A database engine under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh database on the test PostgreSQL server.
    Postgres,
}

/// A database that lives as long as the value, with a scratch directory
/// (the SQLite file, plugin artifacts).
#[derive(Debug)]
pub struct TestDb {
    /// The URL to connect to.
    pub url: String,
    /// A directory for DCP's files.
    pub dir: TempDir,
}

/// One plugin runtime per test binary: engines are heavy, and sharing one
/// is what production does.
static RUNTIME: LazyLock<Arc<dcp::plugins::Runtime>> =
    LazyLock::new(|| dcp::plugins::Runtime::new().expect("starting the plugin runtime"));

/// The PostgreSQL server's URL; tests that need it fail with instructions
/// when it is missing rather than skipping silently.
#[must_use]
pub fn pg_admin_url() -> String {
    std::env::var("DCP_TEST_PG_URL").expect(
        "DCP_TEST_PG_URL is not set: run the tests with scripts/test, \
         or start PostgreSQL with scripts/pg start and export its URL",
    )
}

/// The URL of another database on the same server.
#[must_use]
pub fn with_database(url: &str, database: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    format!("{base}/{database}")
}

impl Backend {
    /// Both backends, for tests that run on each.
    pub const ALL: [Self; 2] = [Self::Sqlite, Self::Postgres];

    /// A fresh, empty database.
    pub async fn database(self) -> TestDb {
        match self {
            Self::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("dcp.db").display());
                TestDb { url, dir }
            }
            Self::Postgres => {
                let admin = pg_admin_url();
                let name = format!("dcp_test_{}", uuid::Uuid::now_v7().simple());
                let mut conn = PgConnection::connect(&admin).await.unwrap();
                conn.execute(format!("create database {name}").as_str())
                    .await
                    .unwrap();
                TestDb {
                    url: with_database(&admin, &name),
                    dir: tempfile::tempdir().unwrap(),
                }
            }
        }
    }

    /// A migrated store on a fresh database.
    pub async fn store(self) -> (Store, TestDb) {
        let db = self.database().await;
        let store = Store::open(&db.url).await.unwrap();
        (store, db)
    }

    /// App state over a fresh store, with the admin user created.
    pub async fn state(self) -> (AppState, TestDb) {
        self.state_with(|_| {}).await
    }

    /// [`Backend::state`] with the configuration changed by `tune`.
    pub async fn state_with(self, tune: impl FnOnce(&mut Config)) -> (AppState, TestDb) {
        let (store, db) = self.store().await;
        let mut config = Config {
            database_url: Some(db.url.clone()),
            data_dir: db.dir.path().to_owned(),
            plugin_dir: Some(db.dir.path().join("no-bundled-plugins")),
            ..Config::default()
        };
        tune(&mut config);
        let state = AppState::with_runtime(store, config, Arc::clone(&RUNTIME))
            .await
            .unwrap();
        state
            .auth
            .bootstrap_admin(Some(ADMIN_PASSWORD))
            .await
            .unwrap();
        (state, db)
    }
}

/// Configures DCP's default SSH key (`ssh_key_file`), a new one written
/// into the data directory: servers given by address log in with it (for
/// [`Backend::state_with`]).
pub fn with_default_key(config: &mut Config) {
    let path = config.data_dir.join("default_id_ed25519");
    fleet::keygen(&path, "dcp-test-default");
    config.ssh_key_file = Some(path);
}

/// The `dcp` binary under test.
#[must_use]
pub fn dcp_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("DCP_BIN") {
        return bin.into();
    }
    // target/debug/deps/<test> → target/debug/dcp
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|d| d.parent()).unwrap().join("dcp");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p dcp` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A test plugin component built by `scripts/build-plugins` (in
/// `DCP_PLUGIN_DIR`, or `target/plugins` beside the test executable).
#[must_use]
pub fn fixture_plugin(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("DCP_PLUGIN_DIR").map_or_else(
        || {
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).unwrap().join("plugins")
        },
        PathBuf::from,
    );
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it with `scripts/build-plugins {name}` (scripts/test does)",
            path.display()
        )
    })
}

/// A remote-command component with two linear memories, in two core
/// instances, and `extra_memories` more, each in an instance of its own
/// (`tests/fixtures/memory-hog.wat`): `plan(_, "N")` grows the two by N MiB
/// each. Rust guests cannot be made to have several memories; this is
/// written in WebAssembly text instead.
#[must_use]
pub fn memory_hog(extra_memories: usize) -> Vec<u8> {
    let text = include_str!("../fixtures/memory-hog.wat").replace(
        ";; EXTRA INSTANCES",
        &"(core instance (instantiate $Hog))\n".repeat(extra_memories),
    );
    wat::parse_str(text).expect("tests/fixtures/memory-hog.wat is valid")
}

/// A built plugin: its component and its manifest.
type Built = (Vec<u8>, String);

/// Builds the out-of-tree plugin in `tests/fixtures/<name>` the way a user
/// would: copied outside the repository, pointed at the SDK, and built with
/// `cargo build --release --target wasm32-wasip2`. Returns the component and
/// its manifest. Built once per test binary.
pub fn out_of_tree_plugin(name: &str) -> (Vec<u8>, String) {
    static BUILT: LazyLock<Mutex<HashMap<String, Built>>> = LazyLock::new(Mutex::default);
    let mut built = BUILT.lock().unwrap();
    if let Some(done) = built.get(name) {
        return done.clone();
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let work = tempfile::tempdir().unwrap();
    let src = repo.join("tests/fixtures").join(name);
    for file in ["Cargo.toml", "plugin.toml", "src/lib.rs"] {
        let to = work.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        let sdk = repo.join("plugins/sdk");
        std::fs::write(
            &to,
            text.replace("../../../plugins/sdk", &sdk.display().to_string()),
        )
        .unwrap();
    }
    std::fs::copy(
        repo.join("rust-toolchain.toml"),
        work.path().join("rust-toolchain.toml"),
    )
    .unwrap();
    // A target directory that outlives the test, so later runs are incremental.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo.join("target"), PathBuf::from)
        .join("out-of-tree");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"])
        .current_dir(work.path())
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "building the out-of-tree plugin {name} failed"
    );
    let wasm = std::fs::read(target.join(format!(
        "wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    )))
    .unwrap();
    let manifest = std::fs::read_to_string(src.join("plugin.toml")).unwrap();
    built.insert(name.to_owned(), (wasm.clone(), manifest.clone()));
    (wasm, manifest)
}

/// A free TCP port on 127.0.0.1.
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The port the tests' web containers publish on their nodes' addresses
/// and their stand-in web servers listen on: one per test process, free on
/// every address when first asked for. A fixed one (it was 8080) fails
/// whenever something else on the machine listens on it on all addresses.
#[must_use]
pub fn web_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| {
        TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    })
}

/// A running `dcp serve`.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// The admin password printed at first start, if one was generated.
    pub printed_password: Option<String>,
    /// Everything the process wrote to stdout and stderr so far.
    output: mpsc::Receiver<String>,
    /// Lines read from `output`.
    pub lines: Vec<String>,
    /// The data directory (SQLite file lives here unless a URL is given).
    pub data_dir: TempDir,
    options: ServerOptions,
    port: u16,
}

/// Spawns `dcp serve` on `port` with `data_dir`; its output lines arrive on the receiver.
fn launch(options: &ServerOptions, data_dir: &Path, port: u16) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = match options.open_files {
        // util-linux's prlimit execs the command: the child is dcp itself.
        Some((soft, hard)) => {
            let mut cmd = Command::new("prlimit");
            cmd.arg(format!("--nofile={soft}:{hard}"))
                .arg("--")
                .arg(dcp_bin());
            cmd
        }
        None => Command::new(dcp_bin()),
    };
    cmd.arg("serve")
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("DCP_ADMIN_PASSWORD")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = &options.database_url {
        cmd.arg("--database-url").arg(url);
    }
    if let Some(password) = &options.admin_password {
        cmd.env("DCP_ADMIN_PASSWORD", password);
    }
    for (k, v) in &options.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawning dcp");
    let (tx, rx) = mpsc::channel();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    (child, rx)
}

/// How to start a [`Server`].
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// A database URL; SQLite in the data dir when `None`.
    pub database_url: Option<String>,
    /// Sets `DCP_ADMIN_PASSWORD`.
    pub admin_password: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Another server's data directory, shared like a volume between
    /// replicas (plugin artifacts, the secret key); its own when `None`.
    pub shared_data_dir: Option<PathBuf>,
    /// Starts it with this (soft, hard) limit on open files.
    pub open_files: Option<(u64, u64)>,
}

impl Server {
    /// Starts `dcp serve` and waits until it accepts connections.
    pub fn start(options: &ServerOptions) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let dir = options
            .shared_data_dir
            .clone()
            .unwrap_or_else(|| data_dir.path().to_path_buf());
        let (child, output) = launch(options, &dir, port);
        let mut server = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            printed_password: None,
            output,
            lines: Vec::new(),
            data_dir,
            options: options.clone(),
            port,
        };
        server.wait_healthy();
        server.printed_password = server.lines.iter().find_map(|l| {
            l.trim()
                .strip_prefix("password:")
                .map(|p| p.trim().to_owned())
        });
        server
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL (no shutdown at all) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.drain_output();
    }

    /// Starts the server again on the same port, data directory and options
    /// (after [`Server::kill`] or [`Server::terminate`]).
    pub fn restart(&mut self) {
        let dir = self
            .options
            .shared_data_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.path().to_path_buf());
        let (child, output) = launch(&self.options, &dir, self.port);
        self.child = child;
        self.output = output;
        self.wait_healthy();
    }

    /// Waits for the "listening" log line (written after migrations and the
    /// admin bootstrap, once the socket is bound).
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        // Only this run's lines count (a restart keeps the earlier ones).
        let from = self.lines.len();
        loop {
            if self.drain_output()[from..]
                .iter()
                .any(|l| l.contains("DCP listening on"))
            {
                // stdout (the printed password) and stderr (logs) race on separate pipes.
                std::thread::sleep(Duration::from_millis(100));
                self.drain_output();
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "dcp exited with {status}:\n{}",
                    self.drain_output().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "dcp did not start:\n{}",
                self.lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Collects output written so far into [`Server::lines`].
    pub fn drain_output(&mut self) -> &[String] {
        while let Ok(line) = self.output.try_recv() {
            self.lines.push(line);
        }
        &self.lines
    }

    /// `base_url` + `path`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Logs in as `admin` with `password` the way the UI does (session
    /// cookie, CSRF header) and creates a personal API token.
    pub async fn api_token(&self, password: &str) -> String {
        let http = client();
        let login = http
            .post(self.url("/api/v1/session"))
            .json(&serde_json::json!({"username": "admin", "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 200, "logging in");
        let session: serde_json::Value = login.json().await.unwrap();
        let token: serde_json::Value = http
            .post(self.url("/api/v1/tokens"))
            .header("x-csrf-token", session["csrf_token"].as_str().unwrap())
            .json(&serde_json::json!({"name": "test"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        token["token"].as_str().unwrap().to_owned()
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.drain_output();
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reqwest client with a cookie jar, as a browser would have.
#[must_use]
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The text `url` answers (a node's published port, say), within 3 s.
///
/// # Errors
/// Why there was no answer.
pub async fn http_text(url: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    let reply = client.get(url).send().await.map_err(|e| e.to_string())?;
    reply.text().await.map_err(|e| e.to_string())
}

/// A running `dcp` with an API token: the REST API as a script would use it.
#[derive(Debug)]
pub struct Api {
    /// The server.
    pub server: Server,
    /// A plain client (no cookies).
    pub http: reqwest::Client,
    /// The admin's API token.
    pub token: String,
}

impl Api {
    /// Starts a server with default options and makes a token.
    pub async fn start() -> Self {
        Self::start_with(&ServerOptions::default()).await
    }

    /// One series of the server's `/metrics` (`name{labels}` as printed);
    /// 0 when it is not there yet.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = http_text(&self.server.url("/metrics"))
            .await
            .expect("/metrics answers");
        metric(&text, series)
    }

    /// Starts a server with `options` and makes a token.
    pub async fn start_with(options: &ServerOptions) -> Self {
        let server = Server::start(options);
        let password = options
            .admin_password
            .clone()
            .or_else(|| server.printed_password.clone())
            .expect("the first admin's password");
        let token = server.api_token(&password).await;
        Self {
            server,
            http: reqwest::Client::new(),
            token,
        }
    }

    /// Uploads a plugin component with its manifest.
    pub async fn upload(&self, wasm: &[u8], manifest: &str) -> (u16, Value) {
        use reqwest::multipart::{Form, Part};
        let form = Form::new()
            .part(
                "component",
                Part::bytes(wasm.to_vec()).file_name("plugin.wasm"),
            )
            .part(
                "manifest",
                Part::text(manifest.to_owned()).file_name("plugin.toml"),
            );
        let request = self.http.post(self.server.url("/api/v1/plugins"));
        Self::answer(request.bearer_auth(&self.token).multipart(form)).await
    }

    /// `POST path` with a JSON body: the status and the body (`null` if none).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        Self::answer(
            self.http
                .post(self.server.url(path))
                .json(body)
                .bearer_auth(&self.token),
        )
        .await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        Self::answer(
            self.http
                .put(self.server.url(path))
                .json(body)
                .bearer_auth(&self.token),
        )
        .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        Self::answer(
            self.http
                .delete(self.server.url(path))
                .bearer_auth(&self.token),
        )
        .await
    }

    /// `GET path`, which must succeed: its JSON body.
    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = Self::answer(
            self.http
                .get(self.server.url(path))
                .bearer_auth(&self.token),
        )
        .await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `GET path`, answering the status and body whatever the status.
    pub async fn get_status(&self, path: &str) -> (u16, Value) {
        Self::answer(
            self.http
                .get(self.server.url(path))
                .bearer_auth(&self.token),
        )
        .await
    }

    /// An execution's detail with every host (paged) and each host's whole
    /// `stdout`/`stderr` (read by offset), as one value.
    pub async fn execution_with_output(&self, id: i64) -> Value {
        let mut execution = self.get(&format!("/api/v1/executions/{id}")).await;
        let mut hosts = Vec::new();
        for page in 1.. {
            let listed = self
                .get(&format!(
                    "/api/v1/executions/{id}/hosts?page={page}&per_page=200"
                ))
                .await;
            let items = listed["items"].as_array().unwrap().clone();
            let done = items.len() < 200;
            hosts.extend(items);
            if done {
                break;
            }
        }
        for host in &mut hosts {
            let index = host["index"].as_u64().unwrap();
            for stream in ["stdout", "stderr"] {
                let mut text = String::new();
                let mut offset = 0;
                loop {
                    let piece = self
                        .get(&format!(
                            "/api/v1/executions/{id}/hosts/{index}/output?stream={stream}&offset={offset}&limit=65536"
                        ))
                        .await;
                    text.push_str(piece["data"].as_str().unwrap());
                    offset = piece["next_offset"].as_u64().unwrap();
                    if offset >= piece["total_bytes"].as_u64().unwrap() {
                        break;
                    }
                }
                host[stream] = Value::String(text);
            }
        }
        execution["hosts"] = Value::Array(hosts);
        execution
    }

    async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
        let reply = request.send().await.unwrap();
        (
            reply.status().as_u16(),
            reply.json().await.unwrap_or(Value::Null),
        )
    }
}

/// The value of `series` (a name with its labels, as exposed) in the
/// Prometheus text `text`; 0 when absent, as a counter never touched is.
#[must_use]
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
