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
