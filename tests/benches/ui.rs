//! The UI's first load (`scripts/bench ui`): a fresh headless Chromium opens
//! a logged-out deep link (`/pools/3`) on a real `dcp` (`DCP_BIN`, serving
//! `DCP_UI_DIR`), is shown the login page, signs in and lands on the deep
//! link. Prints, per request the page made (Resource Timing), the body bytes
//! on the wire and the same body uncompressed (what an identity response
//! sends: replayed with `Accept-Encoding: identity` for the UI's files), and
//! the total the server sent, headers included, counted by a loopback
//! proxy between Chromium and `dcp` (so a second load of the app, which
//! Resource Timing forgets, still counts).
//!
//! Target (issue 15): < 600 KB transferred on first load of a release build.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    reason = "a benchmark: any failure should stop it loudly"
)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use dcp_tests::{Server, ServerOptions, browser::browser};
use fantoccini::{Client, Locator};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

const PASSWORD: &str = "bench-admin-password";
const WAIT: Duration = Duration::from_secs(30);

/// Forwards loopback connections to `port`, counting the bytes it sends
/// back; returns its own port.
async fn counting_proxy(port: u16, sent: Arc<AtomicU64>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let sent = Arc::clone(&sent);
            tokio::spawn(async move {
                let server = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let upstream = tokio::io::copy(&mut client_read, &mut server_write);
                // Counted as it goes: Chromium keeps its connections open.
                let downstream = async {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent.fetch_add(n as u64, Ordering::Relaxed);
                    }
                };
                let (_, ()) = tokio::join!(upstream, downstream);
            });
        }
    });
    own
}

async fn until_found(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap()
}

fn kb(bytes: u64) -> String {
    format!("{:.1} KB", bytes as f64 / 1000.0)
}

#[tokio::main]
async fn main() {
    let server = Server::start(&ServerOptions {
        admin_password: Some(PASSWORD.into()),
        ..ServerOptions::default()
    });
    let port: u16 = server.url("").rsplit(':').next().unwrap().parse().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let proxy = counting_proxy(port, Arc::clone(&sent)).await;
    let base = format!("http://127.0.0.1:{proxy}");

    let (c, _driver) = browser().await;
    c.goto(&format!("{base}/pools/3")).await.unwrap();
    until_found(&c, "#login-username")
        .await
        .send_keys("admin")
        .await
        .unwrap();
    until_found(&c, "#login-password")
        .await
        .send_keys(PASSWORD)
        .await
        .unwrap();
    until_found(&c, "#login-submit")
        .await
        .click()
        .await
        .unwrap();
    until_found(&c, ".topbar").await;
    let landed = c.current_url().await.unwrap();

    let entries: Vec<(String, u64, u64, u64)> = serde_json::from_value(
        c.execute(
            "return performance.getEntriesByType('navigation')\
               .concat(performance.getEntriesByType('resource'))\
               .map(e => [e.name, e.transferSize, e.encodedBodySize, e.decodedBodySize]);",
            vec![],
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let documents = c
        .execute(
            "return performance.getEntriesByType('navigation').length;",
            vec![],
        )
        .await
        .unwrap();
    c.close().await.unwrap();
    let total_sent = sent.load(Ordering::Relaxed);

    let http = reqwest::Client::new();
    println!("UI first load: logged-out deep link /pools/3, sign in, land on {landed}");
    println!("documents loaded in the tab: {documents}");
    println!(
        "{:<46} {:>12} {:>12} {:>12}",
        "request", "transferred", "body (wire)", "identity"
    );
    let (mut wire, mut identity, mut transferred) = (0, 0, 0);
    for (url, transfer, encoded, decoded) in entries {
        let path = url.strip_prefix(&base).unwrap_or(&url).to_owned();
        // The UI's files, asked for again without compression: what the
        // server sent for them before they were precompressed.
        let plain = if path.starts_with("/api/") {
            decoded
        } else {
            let res = http
                .get(server.url(&path))
                .header("accept-encoding", "identity")
                .send()
                .await
                .unwrap();
            assert!(res.headers().get("content-encoding").is_none(), "{path}");
            res.bytes().await.unwrap().len() as u64
        };
        println!(
            "{path:<46} {:>12} {:>12} {:>12}",
            kb(transfer),
            kb(encoded),
            kb(plain)
        );
        wire += encoded;
        identity += plain;
        transferred += transfer;
    }
    println!(
        "{:<46} {:>12} {:>12} {:>12}",
        "total",
        kb(transferred),
        kb(wire),
        kb(identity)
    );
    println!(
        "bytes the server sent (headers included, every load): {}",
        kb(total_sent)
    );
}
