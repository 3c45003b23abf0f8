//! The plugin registry through the REST API of a running `dcp`: an
//! out-of-tree plugin is built, uploaded, approved, activated and called
//! without restarting; upgrades show their capability diff and stay denied
//! until approved; rollback works while calls are running.

#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, http::StatusCode, routing::get};
use dcp_tests::{Api, ServerOptions, fixture_plugin, memory_hog, out_of_tree_plugin};
use serde_json::{Value, json};

/// An inventory endpoint on a loopback address of its own, answering after `delay`.
async fn inventory(ip: &str, delay: Duration) -> String {
    let app = Router::new().route(
        "/hosts",
        get(move || async move {
            tokio::time::sleep(delay).await;
            Json(json!({"hosts": [{"id": "inv-1", "address": "127.20.1.1"}, {"id": "inv-2", "address": "127.20.1.2"}]}))
        }),
    );
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_tree_plugin_is_uploaded_approved_and_called_without_a_restart() {
    let (wasm, manifest) = out_of_tree_plugin("static-hosts");
    let api = Api::start().await;

    // The bundled shell-command plugin is installed and active.
    let listed = api.get("/api/v1/plugins").await;
    let builtin = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "shell-command")
        .unwrap_or_else(|| panic!("the bundled shell-command plugin is installed: {listed}"));
    assert_eq!(
        (builtin["status"].as_str(), builtin["builtin"].as_bool()),
        (Some("active"), Some(true))
    );
    assert_eq!(builtin["granted"]["ssh"], true);

    let (status, upload) = api.upload(&wasm, &manifest).await;
    assert_eq!(status, 201, "{upload}");
    let v1 = &upload["plugin"];
    assert_eq!(
        (
            v1["name"].as_str(),
            v1["world"].as_str(),
            v1["status"].as_str()
        ),
        (
            Some("static-hosts"),
            Some("cloud-provider"),
            Some("pending")
        )
    );
    assert_eq!(v1["digest"].as_str().unwrap().len(), 64);
    let v1_id = v1["id"].as_i64().unwrap();

    // Uploading the same component again changes nothing.
    let (status, again) = api.upload(&wasm, &manifest).await;
    assert_eq!((status, again["created"].as_bool()), (200, Some(false)));
    // Uploads are compiled in a separate, limited process before the host touches them.
    let mut api = api;
    assert!(
        api.server
            .drain_output()
            .iter()
            .any(|l| l.contains("upload compiled in an isolated process")),
        "{:?}",
        api.server.lines
    );

    // Not usable before approval.
    let config = json!({"region": "dc1", "hosts": [{"id": "web-1", "address": "127.20.0.5"}, {"id": "web-2", "address": "127.20.0.6"}]});
    let (status, refused) = api
        .post(
            &format!("/api/v1/plugins/{v1_id}/test"),
            &json!({"config": config}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("approve")
    );
    let (status, _) = api
        .post(&format!("/api/v1/plugins/{v1_id}/activate"), &json!({}))
        .await;
    assert_eq!(status, 409);

    let (status, approved) = api
        .post(&format!("/api/v1/plugins/{v1_id}/approve"), &json!({}))
        .await;
    assert_eq!(
        (status, approved["status"].as_str()),
        (200, Some("approved"))
    );
    let (status, active) = api
        .post(&format!("/api/v1/plugins/{v1_id}/activate"), &json!({}))
        .await;
    assert_eq!((status, active["status"].as_str()), (200, Some("active")));
    // The first active version has nothing to roll back to.
    assert_eq!(active["rollback_to"], Value::Null, "{active}");

    let (status, tried) = api
        .post(
            &format!("/api/v1/plugins/{v1_id}/test"),
            &json!({"config": config}),
        )
        .await;
    assert_eq!(status, 200, "{tried}");
    assert_eq!(tried["name"], "static-hosts");
    assert_eq!(tried["sample"], json!(["web-1", "web-2"]));
    assert_eq!(tried["config_error"], Value::Null);
    assert!(
        tried["config_schema"]["properties"]["hosts"].is_object(),
        "{tried}"
    );
    let (_, bad) = api
        .post(
            &format!("/api/v1/plugins/{v1_id}/test"),
            &json!({"config": {}}),
        )
        .await;
    assert!(
        bad["config_error"].as_str().unwrap().contains("give hosts"),
        "{bad}"
    );

    // The calls were counted; the refused configuration tried is not an
    // error of the plugin's.
    let detail = api.get(&format!("/api/v1/plugins/{v1_id}")).await;
    assert!(detail["calls"].as_u64().unwrap() >= 3, "{detail}");
    assert_eq!(detail["errors"], 0, "{detail}");
    assert!(detail["latency_p50_ms"].as_f64().is_some(), "{detail}");

    // Version 0.2.0 wants an inventory origin: the diff says so.
    let origin = inventory("127.20.1.9", Duration::ZERO).await;
    let manifest2 = manifest.replace("0.1.0", "0.2.0")
        + &format!("\n[capabilities]\nhttp = [\"{origin}#private\"]\n");
    let (status, upgrade) = api.upload(&wasm, &manifest2).await;
    assert_eq!(status, 201, "{upgrade}");
    assert_eq!(
        upgrade["capability_diff"]["added"],
        json!([format!("http {origin}#private")])
    );
    let v2_id = upgrade["plugin"]["id"].as_i64().unwrap();
    let inventory_config = json!({"config": {"inventory_url": format!("{origin}/hosts")}});

    // The active 0.1.0 was not granted the origin: denied.
    let (_, denied) = api
        .post(&format!("/api/v1/plugins/{v1_id}/test"), &inventory_config)
        .await;
    let message = denied["sample_error"].as_str().unwrap();
    assert!(
        message.contains("capability denied") && message.contains("not granted"),
        "{message}"
    );
    // 0.2.0 is not approved yet: refused.
    let (status, _) = api
        .post(&format!("/api/v1/plugins/{v2_id}/test"), &inventory_config)
        .await;
    assert_eq!(status, 409);
    // Approved and active: allowed.
    api.post(&format!("/api/v1/plugins/{v2_id}/approve"), &json!({}))
        .await;
    let (status, second) = api
        .post(&format!("/api/v1/plugins/{v2_id}/activate"), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(second["rollback_to"], "0.1.0", "{second}");
    let (_, allowed) = api
        .post(&format!("/api/v1/plugins/{v2_id}/test"), &inventory_config)
        .await;
    assert_eq!(allowed["sample"], json!(["inv-1", "inv-2"]), "{allowed}");
    assert_eq!(
        api.get(&format!("/api/v1/plugins/{v1_id}")).await["status"],
        "inactive"
    );

    // Deleting the active version is refused; an inactive one can go.
    let reply = api
        .http
        .delete(api.server.url(&format!("/api/v1/plugins/{v2_id}")))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 409);

    // Roll back while a slow call is running on 0.2.0: the call finishes on
    // the version it started with; afterwards 0.1.0 is active again.
    let slow = inventory("127.20.1.10", Duration::from_secs(2)).await;
    let slow_manifest = manifest.replace("0.1.0", "0.3.0")
        + &format!("\n[capabilities]\nhttp = [\"{slow}#private\"]\n");
    let (_, v3) = api.upload(&wasm, &slow_manifest).await;
    let v3_id = v3["plugin"]["id"].as_i64().unwrap();
    api.post(&format!("/api/v1/plugins/{v3_id}/approve"), &json!({}))
        .await;
    api.post(&format!("/api/v1/plugins/{v3_id}/activate"), &json!({}))
        .await;
    let slow_call = {
        let http = api.http.clone();
        let url = api.server.url(&format!("/api/v1/plugins/{v3_id}/test"));
        let token = api.token.clone();
        let body = json!({"config": {"inventory_url": format!("{slow}/hosts")}});
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, rolled) = api
        .post(&format!("/api/v1/plugins/{v3_id}/rollback"), &json!({}))
        .await;
    assert_eq!(
        (
            status,
            rolled["version"].as_str(),
            rolled["status"].as_str()
        ),
        (200, Some("0.2.0"), Some("active")),
        "{rolled}"
    );
    let finished = slow_call.await.unwrap();
    assert_eq!(finished["sample"], json!(["inv-1", "inv-2"]), "{finished}");
    assert_eq!(
        api.get(&format!("/api/v1/plugins/{v3_id}")).await["status"],
        "inactive"
    );
}

#[tokio::test]
async fn uploads_outside_the_contract_are_refused_with_what_is_supported() {
    let api = Api::start().await;
    let manifest = "name = \"future\"\nversion = \"9.0.0\"\nworld = \"cloud-provider\"\n";
    let (status, refused) = api.upload(&fixture_plugin("foreign-world"), manifest).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["field"], "component");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("dcp:plugin@0.1.0") && message.contains("remote-command"),
        "{message}"
    );

    let (status, core) = api.upload(b"\0asm\x01\0\0\0", manifest).await;
    assert_eq!(status, 422);
    assert!(
        core["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a component"),
        "{core}"
    );

    let (status, world) = api
        .upload(
            &fixture_plugin("chaos-provider"),
            &manifest.replace("cloud-provider", "dns"),
        )
        .await;
    assert_eq!(
        (status, world["error"]["field"].as_str()),
        (422, Some("manifest.world")),
        "{world}"
    );

    let (status, mismatch) = api
        .upload(
            &fixture_plugin("chaos-provider"),
            &manifest.replace("cloud-provider", "remote-command"),
        )
        .await;
    assert_eq!(status, 422, "{mismatch}");
    assert!(
        mismatch["error"]["message"]
            .as_str()
            .unwrap()
            .contains("manifest says remote-command"),
        "{mismatch}"
    );

    let worlds = api.get("/api/v1/plugins/worlds").await;
    assert_eq!(
        worlds,
        json!({"package": "dcp:plugin@0.1.0", "worlds": ["cloud-provider", "load-balancer", "remote-command"]})
    );
}

#[tokio::test]
async fn operators_override_per_call_limits() {
    let (wasm, manifest) = out_of_tree_plugin("static-hosts");
    let api = Api::start().await;
    let slow = inventory("127.20.1.11", Duration::from_secs(3)).await;
    let manifest = manifest + &format!("\n[capabilities]\nhttp = [\"{slow}#private\"]\n");
    let (_, upload) = api.upload(&wasm, &manifest).await;
    let id = upload["plugin"]["id"].as_i64().unwrap();
    assert_eq!(
        upload["plugin"]["limits"]["timeout_secs"], 30,
        "the default"
    );
    api.post(&format!("/api/v1/plugins/{id}/approve"), &json!({}))
        .await;

    let put = |body: Value| {
        let request = api
            .http
            .put(api.server.url(&format!("/api/v1/plugins/{id}/limits")))
            .bearer_auth(&api.token)
            .json(&body);
        async move {
            let reply = request.send().await.unwrap();
            (
                reply.status().as_u16(),
                reply.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, refused) = put(json!({"timeout_secs": 0})).await;
    assert_eq!(
        (status, refused["error"]["field"].as_str()),
        (422, Some("timeout_secs")),
        "{refused}"
    );
    let (status, limited) = put(json!({"timeout_secs": 1, "memory_mib": 32})).await;
    assert_eq!(status, 200, "{limited}");
    assert_eq!(
        (
            limited["limits"]["timeout_secs"].as_u64(),
            limited["limits"]["memory_mib"].as_u64()
        ),
        (Some(1), Some(32))
    );
    assert_eq!(
        limited["limit_overrides"],
        json!({"timeout_secs": 1, "memory_mib": 32, "log_lines": null, "log_kib": null, "http_response_mib": null, "ssh_output_kib": null})
    );

    let started = std::time::Instant::now();
    let (_, tried) = api
        .post(
            &format!("/api/v1/plugins/{id}/test"),
            &json!({"config": {"inventory_url": format!("{slow}/hosts")}}),
        )
        .await;
    let error = tried["sample_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{tried}"));
    assert!(
        error.contains("timed out") || error.contains("Timeout"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The sandbox stopping a call is kept as the version's last error.
    let detail = api.get(&format!("/api/v1/plugins/{id}")).await;
    let last = detail["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{detail}"));
    assert!(last.contains("list-regions"), "{last}");

    let (_, restored) = put(json!({})).await;
    assert_eq!(restored["limits"]["timeout_secs"], 30);
}

#[tokio::test]
async fn components_with_many_memories_are_refused_at_upload() {
    let api = Api::start().await;
    let manifest = "name = \"hog\"\nversion = \"1.0.0\"\nworld = \"remote-command\"\n";
    // 2 memories of its own and 15 more, each in an instance.
    let (status, refused) = api.upload(&memory_hog(15), manifest).await;
    assert_eq!(
        (status, refused["error"]["field"].as_str()),
        (422, Some("component")),
        "{refused}"
    );
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("17 linear memories") && message.contains("at most 4"),
        "{message}"
    );
    // Within the limit it is accepted.
    let (status, accepted) = api.upload(&memory_hog(2), manifest).await;
    assert_eq!(status, 201, "{accepted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_http_goes_direct_whatever_the_proxy_environment_says() {
    // A proxy would resolve names itself, past the address policy: plugin
    // requests must never use one, even when dcp's environment names one.
    let proxied = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&proxied);
    let proxy_app = Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { (StatusCode::BAD_GATEWAY, "proxied") }
    });
    let listener = tokio::net::TcpListener::bind(("127.20.1.21", 0))
        .await
        .unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, proxy_app).await });
    let env = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .map(|k| (k.to_owned(), proxy.clone()))
    .to_vec();
    let api = Api::start_with(&ServerOptions {
        env,
        ..ServerOptions::default()
    })
    .await;

    let allowed = inventory("127.20.1.22", Duration::ZERO).await;
    let loopback = inventory("127.20.1.23", Duration::ZERO).await;
    let (wasm, manifest) = out_of_tree_plugin("static-hosts");
    let manifest =
        manifest + &format!("\n[capabilities]\nhttp = [\"{allowed}#private\", \"{loopback}\"]\n");
    let (status, upload) = api.upload(&wasm, &manifest).await;
    assert_eq!(status, 201, "{upload}");
    let id = upload["plugin"]["id"].as_i64().unwrap();
    api.post(&format!("/api/v1/plugins/{id}/approve"), &json!({}))
        .await;
    let try_url = |url: String| {
        let api = &api;
        async move {
            api.post(
                &format!("/api/v1/plugins/{id}/test"),
                &json!({"config": {"inventory_url": url}}),
            )
            .await
            .1
        }
    };

    let tried = try_url(format!("{allowed}/hosts")).await;
    assert_eq!(tried["sample"], json!(["inv-1", "inv-2"]), "{tried}");
    // A loopback origin granted without `#private` is still refused.
    let denied = try_url(format!("{loopback}/hosts")).await;
    let message = denied["sample_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{denied}"));
    assert!(
        message.contains("capability denied") && message.contains("loopback"),
        "{message}"
    );
    assert_eq!(
        proxied.load(Ordering::SeqCst),
        0,
        "requests went through the proxy"
    );
}
