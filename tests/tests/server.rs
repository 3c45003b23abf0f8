//! A real `dcp` process: first start, the admin password it prints, API
//! tokens over plain HTTP, PostgreSQL readiness, graceful shutdown, the CLI.

#![allow(clippy::unwrap_used)]

use std::{process::Command, time::Duration};

use dcp_tests::{Backend, Server, ServerOptions, client, dcp_bin, pg_admin_url};
use serde_json::{Value, json};
use sqlx::{Connection as _, Executor as _, PgConnection};

#[tokio::test]
async fn first_start_prints_a_password_that_logs_in() {
    let server = Server::start(&ServerOptions::default());
    let password = server
        .printed_password
        .clone()
        .expect("a generated password is printed");
    assert!(password.len() >= 16, "{password}");

    // Log in as the UI does; a token made in the browser session works from a script.
    let bearer = server.api_token(&password).await;
    let bearer = bearer.as_str();
    let plain = reqwest::Client::new();
    let listed = plain
        .get(server.url("/api/v1/clusters"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let page: Value = listed.json().await.unwrap();
    assert_eq!(page["items"], json!([]));
    // Without it: 401 in the error shape.
    let anonymous = plain
        .get(server.url("/api/v1/clusters"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn the_admin_password_can_be_given_and_is_never_logged() {
    let mut server = Server::start(&ServerOptions {
        admin_password: Some("chosen-password-1".into()),
        ..ServerOptions::default()
    });
    assert_eq!(server.printed_password, None);
    let login = client()
        .post(server.url("/api/v1/session"))
        .json(&json!({"username": "admin", "password": "chosen-password-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let output = server.drain_output().join("\n");
    assert!(!output.contains("chosen-password-1"), "{output}");
}

#[tokio::test]
async fn postgres_backed_server_is_ready_until_its_database_goes() {
    let db = Backend::Postgres.database().await;
    let server = Server::start(&ServerOptions {
        database_url: Some(db.url.clone()),
        admin_password: Some("pw-for-postgres".into()),
        ..ServerOptions::default()
    });
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let mut admin = PgConnection::connect(&pg_admin_url()).await.unwrap();
    admin
        .execute(format!("drop database {name} with (force)").as_str())
        .await
        .unwrap();

    let reply = http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(reply.status(), 503);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    // Still alive, just not ready.
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let mut server = Server::start(&ServerOptions::default());
    let status = server
        .terminate(Duration::from_secs(10))
        .expect("dcp stops within 10 s");
    assert!(status.success(), "{status}");
    assert!(
        server.lines.iter().any(|l| l.contains("DCP stopped")),
        "{:?}",
        server.lines
    );
}

/// Every SSH connection of a fleet is a descriptor: started under a soft
/// limit of 256 open files, dcp lifts it to the hard limit, so a
/// thousand-node expand does not run out of them.
#[tokio::test]
async fn dcp_lifts_its_open_files_limit_to_the_hard_one() {
    let server = Server::start(&ServerOptions {
        open_files: Some((256, 4096)),
        ..ServerOptions::default()
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let (soft, hard) = line
        .split_whitespace()
        .skip(3)
        .zip(line.split_whitespace().skip(4))
        .next()
        .unwrap();
    assert_eq!((soft, hard), ("4096", "4096"), "{line}");
}

#[tokio::test]
async fn json_logs_carry_the_request_id() {
    let mut server = Server::start(&ServerOptions {
        env: vec![("DCP_LOG_FORMAT".into(), "json".into())],
        ..ServerOptions::default()
    });
    let reply = reqwest::Client::new()
        .post(server.url("/api/v1/session"))
        .header("x-request-id", "trace-me-7")
        .json(&json!({"username": "admin", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    let reply = reqwest::Client::new()
        .post(server.url("/api/v1/session"))
        .header("x-request-id", "trace-me-8")
        .json(&json!({"username": "admin", "password": server.printed_password.clone().unwrap()}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    std::thread::sleep(Duration::from_millis(200));
    let lines = server.drain_output().to_vec();
    let logged_in = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "logged in")
        .unwrap_or_else(|| panic!("no 'logged in' JSON line in {lines:?}"));
    assert_eq!(logged_in["span"]["request_id"], "trace-me-8", "{logged_in}");
}

#[test]
fn cli_migrates_and_reports_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let migrate = Command::new(dcp_bin())
        .args(["migrate", "--data-dir"])
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    assert!(dir.path().join("dcp.db").is_file());

    let version = Command::new(dcp_bin()).arg("version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("dcp {}", env!("CARGO_PKG_VERSION"))
    );

    let bad = Command::new(dcp_bin())
        .args(["migrate", "--database-url", "mysql://u:secret@h/db"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("expected sqlite://") && !stderr.contains("secret"),
        "{stderr}"
    );
}

/// A server that gives slow clients little time.
fn impatient_server(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("DCP_HEADER_TIMEOUT_SECS".to_owned(), "2".to_owned()),
        ("DCP_BODY_TIMEOUT_SECS".to_owned(), "2".to_owned()),
    ];
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Server::start(&ServerOptions {
        admin_password: Some("pw-for-slow-clients".into()),
        env,
        ..ServerOptions::default()
    })
}

/// Sends `head` at once, then `drip` one byte every 250 ms, until the server
/// closes the connection (returning everything it answered) or `within` passes.
async fn drip(server: &Server, head: &str, drip: &[u8], within: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(server.base_url.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let deadline = std::time::Instant::now() + within;
    let mut answer = Vec::new();
    let mut next = drip.iter().cycle();
    let mut buf = [0_u8; 4096];
    while std::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(250), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(String::from_utf8_lossy(&answer).into_owned()),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {
                // Still open: one more byte. A write after the server has
                // closed may fail; the next read says so.
                let _ = stream.write_all(&[*next.next().unwrap()]).await;
            }
        }
    }
    None
}

#[tokio::test]
async fn a_client_dripping_its_headers_is_disconnected() {
    let server = impatient_server(&[]);
    let closed = drip(
        &server,
        "GET /healthz HTTP/1.1\r\nHost: dcp\r\n",
        b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        Duration::from_secs(30),
    )
    .await
    .expect("the server closes a connection whose headers never end");
    // Closed without serving the request.
    assert!(!closed.contains("200 OK"), "{closed}");
}

#[tokio::test]
async fn a_client_dripping_its_body_gets_408_and_is_disconnected() {
    let server = impatient_server(&[]);
    let closed = drip(
        &server,
        "POST /api/v1/session HTTP/1.1\r\nHost: dcp\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n{\"username\": \"",
        b"a",
        Duration::from_secs(30),
    )
    .await
    .expect("the server closes a connection whose body never ends");
    assert!(closed.starts_with("HTTP/1.1 408"), "{closed}");
    assert!(closed.contains("request_timeout"), "{closed}");
}

#[tokio::test]
async fn idle_connections_are_reaped_so_new_clients_get_their_slot() {
    use std::io::Read as _;
    let server = impatient_server(&[("DCP_MAX_CONNECTIONS", "4")]);
    let addr = server.base_url.trim_start_matches("http://").to_owned();
    // Four connections that never send a byte take every slot.
    let idle: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let stream = std::net::TcpStream::connect(&addr).unwrap();
            stream.set_nonblocking(true).unwrap();
            stream
        })
        .collect();
    let reply = reqwest::Client::new()
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("a well-behaved client is served once an idle slot is freed");
    assert_eq!(reply.status(), 200);
    // It was served because idle ones were closed, not beside them.
    let closed = idle
        .into_iter()
        .filter(|mut stream| matches!(stream.read(&mut [0_u8; 64]), Ok(0)))
        .count();
    assert!(closed >= 1, "no idle connection was closed");
}

#[tokio::test]
async fn metrics_can_have_their_own_address_and_token() {
    let port = dcp_tests::free_port();
    let server = Server::start(&ServerOptions {
        admin_password: Some("pw-for-metrics".into()),
        env: vec![
            ("DCP_METRICS_BIND".into(), format!("127.0.0.1:{port}")),
            ("DCP_METRICS_TOKEN".into(), "scrape-s3cret".into()),
        ],
        ..ServerOptions::default()
    });
    let http = reqwest::Client::new();
    let main = http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(main.status(), 404, "not on the public listener");
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let anonymous = http.get(&metrics).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let scrape = http
        .get(&metrics)
        .bearer_auth("scrape-s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await.unwrap();
    assert!(
        text.contains("dcp_http_requests_total{") && text.contains("route=\"/metrics\""),
        "the main listener's requests are counted: {text}"
    );
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every directory and file under `dir` with a mode other users could use.
#[cfg(unix)]
fn exposed(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        if mode(&path) != want {
            found.push(format!("{} {:o}", path.display(), mode(&path)));
        }
        if path.is_dir() {
            found.extend(exposed(&path));
        }
    }
    found
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_private_and_an_exposed_key_stops_the_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    // A directory DCP creates, not the test's (tempdirs are 0700 already).
    let data = root.path().join("data");
    let mut server = Server::start(&ServerOptions {
        admin_password: Some("pw-for-modes".into()),
        shared_data_dir: Some(data.clone()),
        ..ServerOptions::default()
    });
    assert_eq!(mode(&data), 0o700);
    for file in ["dcp.db", "dcp.db-wal", "secret.key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(exposed(&data), Vec::<String>::new());
    server
        .terminate(Duration::from_secs(10))
        .expect("dcp stops");

    let key = data.join("secret.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = Command::new(dcp_bin())
        .arg("serve")
        .arg("--bind")
        .arg(format!("127.0.0.1:{}", dcp_tests::free_port()))
        .arg("--data-dir")
        .arg(&data)
        .env_remove("DATABASE_URL")
        .env_remove("DCP_SECRET_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "dcp started anyway");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&key.display().to_string()) && stderr.contains("chmod 600"),
        "{stderr}"
    );
}
