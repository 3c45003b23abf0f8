//! The REST conventions, through `app(state).oneshot(…)`: authentication on
//! every route, CSRF, the one error shape for every kind of bad input,
//! request ids and metrics.

#![allow(clippy::unwrap_used)]

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use dcp_tests::{ADMIN_PASSWORD, Backend};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

struct Api {
    app: Router,
    state: dcp::AppState,
    _db: dcp_tests::TestDb,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Reply {
    /// Asserts the one error shape and returns (code, field).
    fn error(&self) -> (String, Option<String>) {
        let error = &self.body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        assert!(error["request_id"].as_str().is_some(), "{}", self.body);
        (
            error["code"].as_str().unwrap().to_owned(),
            error["field"].as_str().map(str::to_owned),
        )
    }
}

impl Api {
    async fn new() -> Self {
        Self::on(Backend::Sqlite).await
    }

    async fn on(backend: Backend) -> Self {
        Self::on_tuned(backend, |_| {}).await
    }

    async fn on_tuned(backend: Backend, tune: impl FnOnce(&mut dcp::Config)) -> Self {
        let (state, db) = backend.state_with(tune).await;
        Self {
            app: dcp::app(state.clone()),
            state,
            _db: db,
        }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A bearer token for the admin.
    async fn token(&self) -> String {
        let admin = self
            .state
            .store
            .user_credentials("admin")
            .await
            .unwrap()
            .unwrap()
            .0;
        self.state
            .auth
            .create_token(admin.id, "test")
            .await
            .unwrap()
            .1
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(json) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> Reply {
        self.send(
            Request::builder()
                .method(method)
                .uri(path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, content_type)
                .body(body.into())
                .unwrap(),
        )
        .await
    }
}

#[tokio::test]
async fn every_api_route_but_login_requires_credentials() {
    let api = Api::new().await;
    let doc = api
        .send(
            Request::get("/api/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    let paths = doc.body["paths"].as_object().unwrap();
    for path in [
        "/api/v1/clusters",
        "/api/v1/task-templates",
        "/api/v1/tasks/{id}/{action}",
        "/api/v1/tasks/{id}/events",
    ] {
        assert!(paths.contains_key(path), "{path} missing: {paths:?}");
    }
    let mut checked = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let public = operation["security"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|r| r.as_object().is_some_and(serde_json::Map::is_empty))
            });
            if public {
                continue;
            }
            let uri = path.replace("{id}", "1");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let reply = api
                .send(
                    Request::builder()
                        .method(method.clone())
                        .uri(&uri)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from("{}"))
                        .unwrap(),
                )
                .await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            assert_eq!(reply.error().0, "unauthorized", "{method} {uri}");
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} operations checked");
    // The public ones: health, readiness, the document itself and login.
    for path in ["/healthz", "/readyz", "/api/v1/openapi.json"] {
        let reply = api
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn tokens_work_until_revoked() {
    let api = Api::new().await;
    let token = api.token().await;
    let created = api
        .call(
            Method::POST,
            "/api/v1/tokens",
            &token,
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let ci_token = created.body["token"].as_str().unwrap().to_owned();
    assert!(ci_token.starts_with("dcp_"));
    let id = created.body["id"].as_i64().unwrap();

    let listed = api
        .call(Method::GET, "/api/v1/tokens", &ci_token, None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["total"], 2);
    assert!(
        !listed.body.to_string().contains(&ci_token),
        "secrets are never listed"
    );

    let revoked = api
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            &token,
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let after = api
        .call(Method::GET, "/api/v1/clusters", &ci_token, None)
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert!(
        after.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    // The other token still works.
    assert_eq!(
        api.call(Method::GET, "/api/v1/clusters", &token, None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_input_gets_the_error_shape_never_a_5xx() {
    let api = Api::new().await;
    let token = api.token().await;
    let post = |body: Value| api.call(Method::POST, "/api/v1/clusters", &token, Some(body));

    let missing = post(json!({"description": "no name"})).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        missing.error(),
        ("validation_failed".into(), Some("name".into()))
    );

    let bad_chars = post(json!({"name": "Bad Name"})).await;
    assert_eq!(
        bad_chars.error(),
        ("validation_failed".into(), Some("name".into()))
    );

    let wrong_type = post(json!({"name": 7})).await;
    assert_eq!(wrong_type.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong_type.error().1.as_deref(), Some("name"));

    let long = post(json!({"name": "ok", "description": "x".repeat(1025)})).await;
    assert_eq!(
        long.error(),
        ("validation_failed".into(), Some("description".into()))
    );

    assert_eq!(
        post(json!({"name": "web"})).await.status,
        StatusCode::CREATED
    );
    let duplicate = post(json!({"name": "web"})).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(duplicate.error(), ("conflict".into(), Some("name".into())));

    let unknown = api
        .call(Method::GET, "/api/v1/clusters/999999", &token, None)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error().0, "not_found");
    let bad_id = api
        .call(Method::GET, "/api/v1/clusters/abc", &token, None)
        .await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad_id.error(),
        ("invalid_parameter".into(), Some("id".into()))
    );

    let malformed = api
        .raw(
            Method::POST,
            "/api/v1/clusters",
            &token,
            "application/json",
            "{\"name\": ",
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error().0, "malformed_json");

    let not_json = api
        .raw(
            Method::POST,
            "/api/v1/clusters",
            &token,
            "text/plain",
            "name=web",
        )
        .await;
    assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(not_json.error().0, "unsupported_media_type");

    let huge = format!(
        "{{\"name\": \"big\", \"description\": \"{}\"}}",
        "x".repeat(2 << 20)
    );
    let too_large = api
        .raw(
            Method::POST,
            "/api/v1/clusters",
            &token,
            "application/json",
            huge,
        )
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.error().0, "payload_too_large");

    let per_page = api
        .call(
            Method::GET,
            "/api/v1/clusters?per_page=100000",
            &token,
            None,
        )
        .await;
    assert_eq!(per_page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        per_page.error(),
        ("validation_failed".into(), Some("per_page".into()))
    );
    let page_type = api
        .call(Method::GET, "/api/v1/clusters?page=abc", &token, None)
        .await;
    assert_eq!(
        page_type.error(),
        ("invalid_parameter".into(), Some("page".into()))
    );

    let no_route = api
        .call(Method::GET, "/api/v1/nothing-here", &token, None)
        .await;
    assert_eq!(no_route.status, StatusCode::NOT_FOUND);
    assert_eq!(no_route.error().0, "not_found");
    let wrong_method = api
        .call(Method::PATCH, "/api/v1/clusters", &token, None)
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.error().0, "method_not_allowed");
}

#[tokio::test]
async fn clusters_crud_and_listing() {
    let api = Api::on(Backend::Postgres).await;
    let token = api.token().await;
    for name in ["web", "api", "web-canary"] {
        let body = json!({"name": name, "business_line": "video", "description": "d"});
        assert_eq!(
            api.call(Method::POST, "/api/v1/clusters", &token, Some(body))
                .await
                .status,
            StatusCode::CREATED
        );
    }
    let page = api
        .call(
            Method::GET,
            "/api/v1/clusters?name=web&per_page=1&page=2",
            &token,
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body["total"], 2);
    assert_eq!(
        (page.body["page"].as_u64(), page.body["per_page"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(page.body["items"][0]["name"], "web-canary");
    let id = page.body["items"][0]["id"].as_i64().unwrap();

    let path = format!("/api/v1/clusters/{id}");
    let updated = api
        .call(
            Method::PUT,
            &path,
            &token,
            Some(json!({"name": "canary", "description": "new"})),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(
        (
            updated.body["name"].as_str(),
            updated.body["business_line"].as_str()
        ),
        (Some("canary"), Some(""))
    );
    assert_eq!(
        api.call(Method::GET, &path, &token, None).await.body["description"],
        "new"
    );
    assert_eq!(
        api.call(Method::DELETE, &path, &token, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call(Method::DELETE, &path, &token, None).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Logs in and returns the cookie header and the CSRF token.
async fn login(api: &Api) -> (String, String) {
    let reply = api
        .send(
            Request::post("/api/v1/session")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"username": "admin", "password": ADMIN_PASSWORD}).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let cookies: Vec<String> = reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("dcp_session="))
        .unwrap();
    let csrf = reply.body["csrf_token"].as_str().unwrap().to_owned();
    assert!(cookies.contains(&format!("dcp_csrf={csrf}")));
    let set_session = reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .next()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set_session.contains("HttpOnly"), "{set_session}");
    (format!("{session}; dcp_csrf={csrf}"), csrf)
}

#[tokio::test]
async fn cookie_writes_need_the_csrf_token() {
    let api = Api::new().await;
    let (cookie, csrf) = login(&api).await;
    let request = |csrf: Option<&str>| {
        let mut req = Request::post("/api/v1/clusters")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(csrf) = csrf {
            req = req.header("x-csrf-token", csrf);
        }
        req.body(Body::from(json!({"name": "web"}).to_string()))
            .unwrap()
    };
    let without = api.send(request(None)).await;
    assert_eq!(without.status, StatusCode::FORBIDDEN);
    assert_eq!(without.error().0, "forbidden");
    let wrong = api.send(request(Some("not-the-token"))).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(
        api.send(request(Some(&csrf))).await.status,
        StatusCode::CREATED
    );

    // Reads need no CSRF token.
    let read = api
        .send(
            Request::get("/api/v1/session")
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(read.body["user"]["username"], "admin");

    // Logging out ends the session for good.
    let out = api
        .send(
            Request::delete("/api/v1/session")
                .header(header::COOKIE, &cookie)
                .header("x-csrf-token", &csrf)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let after = api
        .send(
            Request::get("/api/v1/clusters")
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_passwords_are_refused_alike() {
    let api = Api::new().await;
    for (user, password) in [("admin", "wrong"), ("nobody", ADMIN_PASSWORD)] {
        let reply = api
            .send(
                Request::post("/api/v1/session")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(
                        json!({"username": user, "password": password}).to_string(),
                    ))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.body["error"]["message"],
            "wrong user name or password"
        );
        assert!(reply.headers.get(header::SET_COOKIE).is_none());
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let api = Api::new().await;
    let given = api
        .send(
            Request::get("/healthz")
                .header("x-request-id", "req-123")
                .header("x-correlation-id", "deploy-42")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(given.headers["x-request-id"], "req-123");
    assert_eq!(given.headers["x-correlation-id"], "deploy-42");

    let made = api
        .send(
            Request::get("/api/v1/clusters")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let id = made.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    assert_eq!(made.headers["x-correlation-id"], id.as_str());
    assert_eq!(made.body["error"]["request_id"], id.as_str());

    // Garbage is replaced, not echoed into logs.
    let hostile = api
        .send(
            Request::get("/healthz")
                .header("x-request-id", "a b\tc")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_ne!(hostile.headers["x-request-id"], "a b\tc");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let api = Api::new().await;
    let token = api.token().await;
    let count = |text: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with("dcp_http_requests_total{")
                    && l.contains("route=\"/api/v1/clusters/{id}\"")
                    && l.contains("status=\"404\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let scrape = || async {
        let reply = api
            .send(Request::get("/metrics").body(Body::empty()).unwrap())
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.body.as_str().unwrap().to_owned()
    };
    let before = count(&scrape().await);
    for _ in 0..3 {
        api.call(Method::GET, "/api/v1/clusters/424242", &token, None)
            .await;
    }
    let after = scrape().await;
    assert_eq!(count(&after) - before, 3.0, "{after}");
    assert!(after.contains("dcp_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn readiness_follows_the_database() {
    let api = Api::new().await;
    let ready = api
        .send(Request::get("/readyz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(ready.status, StatusCode::OK);
    api.state.store.close().await;
    let down = api
        .send(Request::get("/readyz").body(Body::empty()).unwrap())
        .await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.error().0, "unavailable");
    // Internals (driver errors, pool state) stay in the log.
    let message = down.body["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("pool") && !message.contains("sqlx"),
        "{message}"
    );
    // Liveness does not depend on the database.
    assert_eq!(
        api.send(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn services_pools_and_nodes_keep_their_tree_whole() {
    let api = Api::on_tuned(Backend::Postgres, dcp_tests::with_default_key).await;
    let token = api.token().await;
    let call = |method: Method, path: String, body: Option<Value>| {
        let token = token.clone();
        let api = &api;
        async move { api.call(method, &path, &token, body).await }
    };
    let cluster = call(
        Method::POST,
        "/api/v1/clusters".into(),
        Some(json!({"name": "shop"})),
    )
    .await;
    let cluster = cluster.body["id"].as_i64().unwrap();
    let service = json!({
        "cluster_id": cluster, "name": "web", "image": "registry.local:5000/shop/web:1.4",
        "container": {"ports": [{"container_port": 80, "host_port": 8080}], "env": {"MODE": "prod"},
                      "restart_policy": "always", "memory_limit_mb": 256},
    });
    for (pointer, value, field) in [
        ("/image", json!("Shop/Web"), "image"),
        // Docker's reference grammar: no empty tag, no URL, only well-formed digests.
        ("/image", json!("walk/web:"), "image"),
        ("/image", json!("http://x/y"), "image"),
        ("/image", json!("web@sha256:abc"), "image"),
        (
            "/image",
            json!(format!("web@sha256:{}", "A".repeat(64))),
            "image",
        ),
        (
            "/image",
            json!("web@md5:0123456789abcdef0123456789abcdef"),
            "image",
        ),
        ("/cluster_id", json!(999), "cluster_id"),
        (
            "/container/ports/0/container_port",
            json!(0),
            "container.ports[0].container_port",
        ),
        ("/name", json!("Web Site"), "name"),
    ] {
        let mut body = service.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        let reply = call(Method::POST, "/api/v1/services".into(), Some(body)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.body
        );
        assert_eq!(
            reply.error(),
            ("validation_failed".to_owned(), Some(field.to_owned()))
        );
    }
    // The reason is in the message, after the field.
    for (image, reason) in [
        ("walk/web:", "empty tag"),
        ("http://x/y", "not a URL"),
        ("web@sha256:abc", "64 hex digits"),
    ] {
        let mut body = service.clone();
        body["image"] = json!(image);
        let reply = call(Method::POST, "/api/v1/services".into(), Some(body)).await;
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{image}: {}", reply.body);
    }
    let created = call(Method::POST, "/api/v1/services".into(), Some(service)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["container"]["restart_policy"], "always");
    let service = created.body["id"].as_i64().unwrap();
    let pool = call(
        Method::POST,
        "/api/v1/pools".into(),
        Some(json!({"service_id": service, "name": "web-a"})),
    )
    .await;
    assert_eq!(pool.status, StatusCode::CREATED, "{}", pool.body);
    let pool = pool.body["id"].as_i64().unwrap();
    let unknown = call(
        Method::POST,
        format!("/api/v1/pools/{pool}/nodes"),
        Some(json!({"machine_ids": [4242]})),
    )
    .await;
    assert_eq!(
        unknown.error(),
        (
            "validation_failed".to_owned(),
            Some("machine_ids[0]".to_owned())
        )
    );
    let added = call(
        Method::POST,
        format!("/api/v1/pools/{pool}/nodes"),
        Some(json!({"addresses": [{"address": "127.20.9.1"}, {"address": "127.20.9.2", "port": 2222}]})),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert_eq!(added.body.as_array().unwrap().len(), 2);
    assert_eq!(added.body[0]["state"], "pending");
    let twice = call(
        Method::POST,
        format!("/api/v1/pools/{pool}/nodes"),
        Some(json!({"addresses": [{"address": "127.20.9.1"}]})),
    )
    .await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "{}", twice.body);

    // Each level refuses to go while the next one holds on, naming it.
    for (path, names) in [
        (format!("/api/v1/pools/{pool}"), "node 127.20.9.1"),
        (format!("/api/v1/services/{service}"), "pool web-a"),
        (format!("/api/v1/clusters/{cluster}"), "service web"),
    ] {
        let refused = call(Method::DELETE, path.clone(), None).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{path}");
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(names),
            "{}",
            refused.body
        );
    }
    let pool_page = call(
        Method::GET,
        format!("/api/v1/pools?service_id={service}"),
        None,
    )
    .await;
    assert_eq!(pool_page.body["items"][0]["nodes"], 2);
    // These servers do not exist: nothing can run on them, so out by force.
    for node in added.body.as_array().unwrap() {
        let removed = call(
            Method::DELETE,
            format!("/api/v1/pools/{pool}/nodes/{}?force=true", node["id"]),
            None,
        )
        .await;
        assert_eq!(removed.status, StatusCode::NO_CONTENT);
    }
    for path in [
        format!("/api/v1/pools/{pool}"),
        format!("/api/v1/services/{service}"),
        format!("/api/v1/clusters/{cluster}"),
    ] {
        assert_eq!(
            call(Method::DELETE, path, None).await.status,
            StatusCode::NO_CONTENT
        );
    }
}

#[tokio::test]
async fn task_templates_follow_the_manuals_rules_and_a_pool_runs_one_task_at_a_time() {
    let api = Api::tuned(dcp_tests::with_default_key).await;
    let token = api.token().await;
    let call = |method: Method, path: String, body: Option<Value>| {
        let token = token.clone();
        let api = &api;
        async move { api.call(method, &path, &token, body).await }
    };
    let refused = |reply: &Reply, field: &str, words: &str| {
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.body
        );
        assert_eq!(reply.error().1.as_deref(), Some(field), "{}", reply.body);
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{message}");
    };
    let template = |purpose: &str, steps: Value| json!({"name": format!("t-{purpose}"), "purpose": purpose, "steps": steps});
    let post = |body: Value| call(Method::POST, "/api/v1/task-templates".into(), Some(body));

    // Each of the manual's rules, with the step and the rule named.
    for (body, field, words) in [
        (
            template(
                "expand",
                json!([{"name": "start_service"}, {"name": "create_vm"}]),
            ),
            "steps[0].name",
            "must start with create_vm",
        ),
        (
            template("expand", json!([{"name": "create_vm"}])),
            "steps",
            "must have a start_service step",
        ),
        (
            template(
                "shrink",
                json!([{"name": "return_vm"}, {"name": "stop_service"}]),
            ),
            "steps[1].name",
            "must end with return_vm",
        ),
        (
            template("deploy", json!([{"name": "stop_service"}])),
            "steps",
            "must have a start_service step",
        ),
        (
            template("adhoc", json!([{"name": "reboot"}])),
            "steps[0].name",
            "not a built-in step",
        ),
        (
            template("adhoc", json!([{"name": "check", "group_id": 4242}])),
            "steps[0].group_id",
            "no command group with id 4242",
        ),
        (
            template("deploy", json!([{"name": "start_service", "retries": 11}])),
            "steps[0].retries",
            "at most 10",
        ),
    ] {
        refused(&post(body).await, field, words);
    }
    // Several broken fields: one answer names them all.
    let broken = post(json!({"name": "", "purpose": "adhoc", "steps": [
        {"name": "stop_service", "retries": 11}, {"name": "reboot"}]}))
    .await;
    refused(&broken, "name", "");
    let also: Vec<&str> = broken.body["error"]["also"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        also,
        ["steps[0].retries", "steps[1].name"],
        "{}",
        broken.body
    );
    let seeded = call(Method::GET, "/api/v1/task-templates".into(), None).await;
    let names: Vec<&str> = seeded.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "expand",
            "expand-registered",
            "shrink",
            "shrink-drained",
            "upgrade",
            "upgrade-drained"
        ]
    );
    let seeded_id = |name: &str| {
        seeded.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["id"]
            .clone()
    };

    // A template with register needs a pool with a load-balancer binding.
    let with_lb = post(template(
        "expand",
        json!([{"name": "create_vm"}, {"name": "start_service_web"}, {"name": "register"}]),
    ))
    .await;
    assert_eq!(with_lb.status, StatusCode::CREATED, "{}", with_lb.body);
    let cluster = call(
        Method::POST,
        "/api/v1/clusters".into(),
        Some(json!({"name": "shop"})),
    )
    .await;
    let service = call(
        Method::POST,
        "/api/v1/services".into(),
        Some(json!({"cluster_id": cluster.body["id"], "name": "web", "image": "shop/web:1"})),
    )
    .await;
    let pool_body = json!({"service_id": service.body["id"], "name": "web-a",
                           "expand_template_id": with_lb.body["id"]});
    let bound = call(Method::POST, "/api/v1/pools".into(), Some(pool_body)).await;
    refused(&bound, "expand_template_id", "no service-discovery binding");
    // With a binding (the one made at install), it is accepted, and the
    // seeded templates in effect are those that register and drain.
    let bindings = call(Method::GET, "/api/v1/bindings".into(), None).await;
    let behind_lb = call(
        Method::POST,
        "/api/v1/pools".into(),
        Some(json!({"service_id": service.body["id"], "name": "web-lb",
                    "binding_id": bindings.body["items"][0]["id"]})),
    )
    .await;
    assert_eq!(behind_lb.status, StatusCode::CREATED, "{}", behind_lb.body);
    assert_eq!(
        behind_lb.body["expand_template_id"],
        seeded_id("expand-registered")
    );
    assert_eq!(
        behind_lb.body["shrink_template_id"],
        seeded_id("shrink-drained")
    );
    assert_eq!(
        behind_lb.body["deploy_template_id"],
        seeded_id("upgrade-drained")
    );
    let mut lb_body = behind_lb.body.clone();
    lb_body["expand_template_id"] = with_lb.body["id"].clone();
    let kept = call(
        Method::PUT,
        format!("/api/v1/pools/{}", behind_lb.body["id"]),
        Some(json!({"service_id": service.body["id"], "name": "web-lb",
                    "binding_id": lb_body["binding_id"], "expand_template_id": lb_body["expand_template_id"]})),
    )
    .await;
    assert_eq!(kept.status, StatusCode::OK, "{}", kept.body);
    let unbound = call(
        Method::PUT,
        format!("/api/v1/pools/{}", behind_lb.body["id"]),
        Some(json!({"service_id": service.body["id"], "name": "web-lb",
                    "expand_template_id": lb_body["expand_template_id"]})),
    )
    .await;
    refused(
        &unbound,
        "expand_template_id",
        "no service-discovery binding",
    );
    let (status, _) = (
        call(
            Method::DELETE,
            format!("/api/v1/pools/{}", behind_lb.body["id"]),
            None,
        )
        .await
        .status,
        (),
    );
    assert_eq!(status, StatusCode::NO_CONTENT);
    let shrink_id = seeded_id("shrink");
    let wrong = call(
        Method::POST,
        "/api/v1/pools".into(),
        Some(json!({"service_id": service.body["id"], "name": "web-a", "expand_template_id": shrink_id})),
    )
    .await;
    refused(
        &wrong,
        "expand_template_id",
        "is for shrink, not for expand",
    );
    let pool = call(
        Method::POST,
        "/api/v1/pools".into(),
        Some(json!({"service_id": service.body["id"], "name": "web-a"})),
    )
    .await;
    assert_eq!(pool.status, StatusCode::CREATED, "{}", pool.body);
    assert_eq!(pool.body["expand_template_id"], seeded_id("expand"));
    let pool = pool.body["id"].as_i64().unwrap();

    // Tasks: what each kind needs.
    let task = |body: Value| call(Method::POST, "/api/v1/tasks".into(), Some(body));
    refused(
        &task(json!({"kind": "expand", "pool_id": pool, "count": 2})).await,
        "pool_id",
        "no machine template",
    );
    refused(
        &task(json!({"kind": "expand", "pool_id": pool})).await,
        "count",
        "how many",
    );
    refused(
        &task(json!({"kind": "deploy", "pool_id": pool})).await,
        "tag",
        "image tag",
    );
    refused(
        &task(json!({"kind": "deploy", "pool_id": pool, "tag": "-1"})).await,
        "tag",
        "not starting with '.' or '-'",
    );
    refused(
        &task(json!({"kind": "shrink", "pool_id": pool, "addresses": ["127.20.9.9"]})).await,
        "addresses[0]",
        "not a node of pool web-a",
    );

    // A task that keeps retrying (its node does not answer) holds the pool:
    // a second one is refused, or queued behind it when asked.
    let added = call(
        Method::POST,
        format!("/api/v1/pools/{pool}/nodes"),
        Some(json!({"addresses": [{"address": "127.20.9.1", "port": 1}]})),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    let slow = post(json!({"name": "stop-slowly", "purpose": "adhoc",
        "steps": [{"name": "stop_service", "retries": 10, "retry_delay_secs": 3600}]}))
    .await;
    let adhoc = json!({"kind": "adhoc", "pool_id": pool, "template_id": slow.body["id"]});
    let first = task(adhoc.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let first = first.body["id"].as_i64().unwrap();
    let busy = task(adhoc.clone()).await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);
    let message = busy.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("busy with task {first} (adhoc")),
        "{message}"
    );
    let mut queued = adhoc.clone();
    queued["queue"] = json!(true);
    let second = task(queued).await;
    assert_eq!(second.status, StatusCode::ACCEPTED, "{}", second.body);
    let second = second.body["id"].as_i64().unwrap();

    let state_of = |id: i64, want: &'static str| {
        let call = &call;
        async move {
            for _ in 0..100 {
                let t = call(Method::GET, format!("/api/v1/tasks/{id}"), None).await;
                if t.body["task"]["state"] == want && t.body["task"]["command"].is_null() {
                    return t.body;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("task {id} never became {want}");
        }
    };
    // The first waits an hour before its next attempt; pause, resume, cancel.
    // It is running before its first attempt ends, so wait for that attempt
    // to have ended (its step pending again, waiting for the next).
    let mut waiting = state_of(first, "running").await;
    for _ in 0..100 {
        let step = &waiting["nodes"][0]["steps"][0];
        if step["attempts"] != 0 && step["state"] == "pending" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waiting = state_of(first, "running").await;
    }
    assert_eq!(waiting["nodes"][0]["steps"][0]["state"], "pending");
    assert_eq!(waiting["nodes"][0]["steps"][0]["attempts"], 1);
    assert!(
        !waiting["nodes"][0]["steps"][0]["error"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{waiting}"
    );
    assert_eq!(
        state_of(second, "pending").await["task"]["state"],
        "pending"
    );
    for (action, want) in [
        ("pause", "paused"),
        ("resume", "running"),
        ("cancel", "cancelled"),
    ] {
        let asked = call(
            Method::POST,
            format!("/api/v1/tasks/{first}/{action}"),
            None,
        )
        .await;
        assert_eq!(
            asked.status,
            StatusCode::ACCEPTED,
            "{action}: {}",
            asked.body
        );
        state_of(first, want).await;
    }
    let again = call(Method::POST, format!("/api/v1/tasks/{first}/resume"), None).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    // Its turn: the queued task starts.
    state_of(second, "running").await;
    let listed = call(Method::GET, format!("/api/v1/tasks?pool_id={pool}"), None).await;
    assert_eq!(listed.body["total"], 2);
    assert_eq!(
        listed.body["items"][1]["counts"]["skipped"], 1,
        "{}",
        listed.body
    );
    // A task still queued can be cancelled without ever starting.
    let mut queued = adhoc.clone();
    queued["queue"] = json!(true);
    let third = task(queued).await.body["id"].as_i64().unwrap();
    let asked = call(Method::POST, format!("/api/v1/tasks/{third}/cancel"), None).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    let cancelled = state_of(third, "cancelled").await;
    assert!(cancelled["task"]["started_at"].is_null(), "{cancelled}");
    assert_eq!(
        state_of(second, "running").await["task"]["state"],
        "running"
    );
}

/// A login as `username` with `password` from client address `from`.
fn login_request(username: &str, password: &str, from: Option<[u8; 4]>) -> Request<Body> {
    let mut req = Request::post("/api/v1/session")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"username": username, "password": password}).to_string(),
        ))
        .unwrap();
    if let Some(ip) = from {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                ip, 40000,
            ))));
    }
    req
}

/// A 429 in the error shape, with the `Retry-After` seconds it names.
fn retry_after(reply: &Reply) -> u64 {
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.body
    );
    assert_eq!(reply.error().0, "too_many_requests");
    reply
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("a 429 says when to retry")
}

impl Api {
    async fn tuned(tune: impl FnOnce(&mut dcp::Config)) -> Self {
        Self::on_tuned(Backend::Sqlite, tune).await
    }

    /// Adds a user with the admin's password and `role`; returns its id.
    async fn add_user(&self, username: &str, role: &str) -> i64 {
        let (_, hash) = self
            .state
            .store
            .user_credentials("admin")
            .await
            .unwrap()
            .unwrap();
        self.state
            .store
            .create_user(username, &hash, role)
            .await
            .unwrap()
            .id
    }

    /// The admin's view of `username` in the users list.
    async fn user_status(&self, token: &str, username: &str) -> Value {
        let list = self
            .call(Method::GET, "/api/v1/users?per_page=200", token, None)
            .await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == username)
            .cloned()
            .unwrap()
    }
}

#[tokio::test]
async fn thirty_wrong_passwords_lock_the_name_even_against_the_right_one() {
    // Refusals answered at once here; holding them is tested on its own.
    let api = Api::tuned(|c| {
        c.login_lockout_secs = 3;
        c.login_tarpit_ms = 0;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let reply = api.send(login_request("admin", "guess", None)).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            let wait = retry_after(&reply);
            assert!((1..=900).contains(&wait), "{wait}");
        } else {
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
        }
        statuses.push(reply.status.as_u16());
    }
    // Five free failures, the sixth locks; (nearly) all the rest are refused
    // without a password check.
    assert_eq!(statuses[..6], [401; 6], "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 20,
        "{statuses:?}"
    );

    // The right password is refused too while the lock-out lasts…
    let refused = api.send(login_request("admin", ADMIN_PASSWORD, None)).await;
    retry_after(&refused);
    // …and works once it is over.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let reply = api.send(login_request("admin", ADMIN_PASSWORD, None)).await;
        if reply.status == StatusCode::OK {
            break;
        }
        retry_after(&reply);
        assert!(std::time::Instant::now() < deadline, "still locked out");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A successful login forgets the name's failures.
    let token = api.token().await;
    let admin = api.user_status(&token, "admin").await;
    assert_eq!(admin["failed_logins"], 0, "{admin}");
    assert!(admin.get("locked_until").is_none(), "{admin}");
}

#[tokio::test]
async fn a_locked_out_client_that_keeps_asking_is_answered_slowly() {
    let api = Api::tuned(|c| {
        c.login_user_free_failures = 1;
        c.login_lockout_secs = 60;
        c.login_tarpit_ms = 1500;
    })
    .await;
    for _ in 0..2 {
        let reply = api.send(login_request("admin", "guess", None)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    }
    let asked = std::time::Instant::now();
    let refused = api.send(login_request("admin", "guess", None)).await;
    let held = asked.elapsed();
    // Held for the tarpit, and the hold counts against the lock-out.
    let wait = retry_after(&refused);
    assert!(
        held >= std::time::Duration::from_millis(1500),
        "answered after {held:?}"
    );
    assert!((1..=59).contains(&wait), "{wait}");
}

#[tokio::test]
async fn one_address_flooding_locks_out_itself_not_others() {
    let api = Api::tuned(|c| {
        c.login_address_free_failures = 10;
        c.login_lockout_secs = 60;
    })
    .await;
    api.add_user("bob", "admin").await;
    let attacker = Some([127, 0, 0, 9]);
    // Spraying names from one address: each name fails once only, but the
    // address runs out of free failures.
    for n in 0..11 {
        let reply = api
            .send(login_request(&format!("user{n}"), "guess", attacker))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{n}: {}",
            reply.body
        );
    }
    let refused = api
        .send(login_request("admin", ADMIN_PASSWORD, attacker))
        .await;
    assert!(retry_after(&refused) > 1);
    // Everyone else logs in, as the names sprayed were each tried once.
    let neighbour = api
        .send(login_request(
            "admin",
            ADMIN_PASSWORD,
            Some([127, 0, 0, 10]),
        ))
        .await;
    assert_eq!(neighbour.status, StatusCode::OK, "{}", neighbour.body);

    // Guessing one name from many addresses locks the name, not the others.
    for n in 0..6 {
        let reply = api
            .send(login_request("bob", "guess", Some([127, 0, 1, n])))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{n}: {}",
            reply.body
        );
    }
    let bob = api
        .send(login_request("bob", ADMIN_PASSWORD, Some([127, 0, 2, 1])))
        .await;
    retry_after(&bob);
    let admin = api
        .send(login_request("admin", ADMIN_PASSWORD, Some([127, 0, 2, 2])))
        .await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_is_throttled_by_its_own_address() {
    let api = Api::tuned(|c| {
        c.login_address_free_failures = 3;
        c.login_lockout_secs = 60;
        c.trusted_proxies = vec!["127.0.0.1".to_owned().try_into().unwrap()];
    })
    .await;
    let proxy = Some([127, 0, 0, 1]);
    let via = |name: &str, password: &str, forwarded: &str| {
        let mut req = login_request(name, password, proxy);
        req.headers_mut()
            .insert("x-forwarded-for", forwarded.parse().unwrap());
        req
    };
    // One client behind the proxy sprays names, prefixing made-up hops
    // that a proxy appending its peer cannot vouch for.
    for n in 0..4 {
        let forged = format!("127.0.5.{n}, 127.0.3.3");
        let reply = api.send(via(&format!("user{n}"), "guess", &forged)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{n}: {}",
            reply.body
        );
    }
    let attacker = api
        .send(via("admin", ADMIN_PASSWORD, "127.0.5.9, 127.0.3.3"))
        .await;
    assert!(retry_after(&attacker) > 1);
    // Another client behind the same proxy is not locked out with it.
    let neighbour = api.send(via("admin", ADMIN_PASSWORD, "127.0.3.4")).await;
    assert_eq!(neighbour.status, StatusCode::OK, "{}", neighbour.body);
    // From an untrusted peer the header is ignored: the peer is counted.
    for n in 0..4 {
        let mut req = login_request(&format!("other{n}"), "guess", Some([127, 0, 0, 7]));
        req.headers_mut()
            .insert("x-forwarded-for", format!("127.0.6.{n}").parse().unwrap());
        let reply = api.send(req).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{n}: {}",
            reply.body
        );
    }
    let peer = api
        .send(login_request("admin", ADMIN_PASSWORD, Some([127, 0, 0, 7])))
        .await;
    assert!(retry_after(&peer) > 1);
}

#[tokio::test]
async fn a_login_flood_is_refused_at_once_and_signed_in_users_stay_served() {
    let api = Api::tuned(|c| {
        c.login_concurrency = 1;
        c.login_queue = 2;
    })
    .await;
    let token = api.token().await;
    let floods: Vec<_> = (0..60)
        .map(|n| {
            let app = api.app.clone();
            tokio::spawn(async move {
                let res = app
                    .oneshot(login_request(&format!("user{n}"), "guess", None))
                    .await
                    .unwrap();
                (
                    res.status(),
                    res.headers().contains_key(header::RETRY_AFTER),
                )
            })
        })
        .collect();
    for _ in 0..20 {
        let listed = api
            .call(Method::GET, "/api/v1/clusters", &token, None)
            .await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    }
    let mut busy = 0;
    for flood in floods {
        let (status, has_retry_after) = flood.await.unwrap();
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS,
            "{status}"
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(has_retry_after);
            busy += 1;
        }
    }
    // One hashing, two waiting: most of the 60 were turned away without
    // queueing for a hash.
    assert!(busy >= 30, "only {busy} of 60 refused at once");
}

#[tokio::test]
async fn administrators_see_a_locked_user_and_unlock_them() {
    let api = Api::tuned(|c| c.login_lockout_secs = 600).await;
    let bob = api.add_user("bob", "admin").await;
    let carol = api.add_user("carol", "viewer").await;
    let token = api.token().await;
    for _ in 0..6 {
        let reply = api.send(login_request("bob", "guess", None)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    retry_after(&api.send(login_request("bob", ADMIN_PASSWORD, None)).await);

    let seen = api.user_status(&token, "bob").await;
    assert_eq!(seen["failed_logins"], 6, "{seen}");
    let until = time::OffsetDateTime::parse(
        seen["locked_until"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(until > time::OffsetDateTime::now_utc() + time::Duration::minutes(5));
    assert_eq!(api.user_status(&token, "admin").await["failed_logins"], 0);

    // Only administrators may list or unlock.
    let carols = api.state.auth.create_token(carol, "t").await.unwrap().1;
    let denied = api.call(Method::GET, "/api/v1/users", &carols, None).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.error().0, "forbidden");
    let path = format!("/api/v1/users/{bob}/lock");
    let denied = api.call(Method::DELETE, &path, &carols, None).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let missing = api
        .call(Method::DELETE, "/api/v1/users/9999/lock", &token, None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let unlocked = api.call(Method::DELETE, &path, &token, None).await;
    assert_eq!(unlocked.status, StatusCode::OK, "{}", unlocked.body);
    assert_eq!(unlocked.body["failed_logins"], 0);
    assert!(unlocked.body.get("locked_until").is_none());
    let back = api.send(login_request("bob", ADMIN_PASSWORD, None)).await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
}

/// Asserts `reply` is a 422 naming `field`.
fn refused(reply: &Reply, field: &str, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{what}: {}",
        reply.body
    );
    assert_eq!(
        reply.error(),
        ("validation_failed".to_owned(), Some(field.to_owned())),
        "{what}"
    );
}

#[tokio::test]
async fn names_addresses_and_filters_with_hidden_characters_are_refused() {
    let api = Api::new().await;
    let token = api.token().await;
    let post = |path: &'static str, body: Value| {
        let token = token.clone();
        let api = &api;
        async move { api.call(Method::POST, path, &token, Some(body)).await }
    };
    for bad in [
        "ci\u{0}",
        "ci\nx",
        "evil\u{202E}gnp.exe",
        "a\u{2066}b",
        "a\u{200F}",
    ] {
        let reply = post("/api/v1/tokens", json!({ "name": bad })).await;
        refused(&reply, "name", &format!("token {bad:?}"));
        let reply = post(
            "/api/v1/accounts",
            json!({"name": bad, "provider": "aliyun", "key_id": "k", "secret": "s"}),
        )
        .await;
        refused(&reply, "name", &format!("account {bad:?}"));
        let reply = post(
            "/api/v1/machines/adopt",
            json!({"name": bad, "address": "127.0.0.1", "password": "pw"}),
        )
        .await;
        refused(&reply, "name", &format!("adopted machine {bad:?}"));
        let reply = post(
            "/api/v1/clusters",
            json!({"name": "shop", "description": bad}),
        )
        .await;
        if bad.contains('\n') {
            // Free text may span lines.
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
            let id = reply.body["id"].as_i64().unwrap();
            api.call(
                Method::DELETE,
                &format!("/api/v1/clusters/{id}"),
                &token,
                None,
            )
            .await;
        } else {
            refused(&reply, "description", &format!("description {bad:?}"));
        }
    }
    // One address rule for adopted machines, nodes and execution hosts.
    let cluster = post("/api/v1/clusters", json!({"name": "shop"})).await;
    let service = post(
        "/api/v1/services",
        json!({"cluster_id": cluster.body["id"], "name": "web", "image": "nginx:1"}),
    )
    .await;
    assert_eq!(service.status, StatusCode::CREATED, "{}", service.body);
    let pool = post(
        "/api/v1/pools",
        json!({"service_id": service.body["id"], "name": "web-a"}),
    )
    .await;
    let nodes = format!("/api/v1/pools/{}/nodes", pool.body["id"]);
    for bad in [
        "a;b",
        "x$(id)",
        "web_01",
        "-web",
        "a..b",
        "999.1.1.1",
        "h\u{0}",
    ] {
        let reply = post(
            "/api/v1/machines/adopt",
            json!({"address": bad, "password": "pw"}),
        )
        .await;
        refused(&reply, "address", &format!("adopt address {bad:?}"));
        let reply = api
            .call(
                Method::POST,
                &nodes,
                &token,
                Some(json!({"addresses": [{"address": bad}]})),
            )
            .await;
        refused(
            &reply,
            "addresses[0].address",
            &format!("node address {bad:?}"),
        );
    }
    // A NUL in a filter would match every row.
    for path in [
        "/api/v1/clusters?name=%00",
        "/api/v1/commands?name=%00",
        "/api/v1/command-groups?name=a%0Ab",
        "/api/v1/plugins?name=%E2%80%AE",
    ] {
        let reply = api.call(Method::GET, path, &token, None).await;
        refused(&reply, "name", path);
    }
}

#[tokio::test]
async fn a_legacy_machine_with_a_control_character_in_its_name_still_gives_its_key() {
    let api = Api::new().await;
    let token = api.token().await;
    let vault = dcp::vault::Vault::from_file(&api.state.config.secret_key_file()).unwrap();
    let name = "old\r\nbox \u{202E}\"東\"";
    let machine = api
        .state
        .store
        .create_machines(&[dcp::store::NewMachine {
            name: name.to_owned(),
            template_id: None,
            provider: "adopted".into(),
            region: String::new(),
            request_key: None,
            address: Some("127.0.0.1".into()),
            port: 22,
            user: "root".into(),
            private_key_sealed: Some(vault.seal("machine-key", b"-----KEY-----\n")),
            public_key: None,
            state: dcp_api_types::MachineState::Ready,
            reason: "adopted before names were checked".into(),
        }])
        .await
        .unwrap()
        .remove(0);
    let reply = api
        .call(
            Method::GET,
            &format!("/api/v1/machines/{}/key.pem", machine.id),
            &token,
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, "-----KEY-----\n");
    let disposition = reply.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert_eq!(
        disposition,
        "attachment; filename=\"old__box ____.pem\"; \
         filename*=UTF-8''old%0D%0Abox%20%E2%80%AE%22%E6%9D%B1%22.pem"
    );
}

#[tokio::test]
async fn browser_hardening_headers_are_on_ui_api_and_docs() {
    let api = Api::new().await;
    for path in [
        "/",
        "/clusters",
        "/api/v1/clusters",
        "/api/v1/openapi.json",
        "/api/docs",
        "/nope/x",
    ] {
        let reply = api
            .send(Request::get(path).body(Body::empty()).unwrap())
            .await;
        let header = |name: &str| {
            reply
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_else(|| panic!("{path}: no {name}"))
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        if path == "/api/docs" {
            assert!(csp.contains("'unsafe-inline'"), "{csp}");
        } else {
            assert!(
                csp.contains("script-src 'self' 'wasm-unsafe-eval';"),
                "{path}: {csp}"
            );
        }
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert!(!header("referrer-policy").is_empty());
    }
}

/// The `dcp_http_requests_total` series of a scrape.
fn request_series(scrape: &str) -> Vec<&str> {
    scrape
        .lines()
        .filter(|l| l.starts_with("dcp_http_requests_total{"))
        .collect()
}

#[tokio::test]
async fn made_up_paths_and_methods_do_not_grow_the_metrics() {
    let api = Api::new().await;
    let scrape = || async {
        let reply = api
            .send(Request::get("/metrics").body(Body::empty()).unwrap())
            .await;
        reply.body.as_str().unwrap().to_owned()
    };
    let send = |method: String, path: String| {
        api.send(
            Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(path)
                .body(Body::empty())
                .unwrap(),
        )
    };
    // Warm up every label combination the probes below can produce.
    for i in 0..2 {
        send(format!("PROBE{i}"), format!("/scan-{i}/x")).await;
        send("GET".into(), format!("/api/v1/scan-{i}")).await;
        send("GET".into(), format!("/scan-{i}")).await;
    }
    let before = request_series(&scrape().await).len();
    for i in 2..200 {
        send(format!("PROBE{i}"), format!("/scan-{i}/x")).await;
        send("GET".into(), format!("/api/v1/scan-{i}")).await;
        send("GET".into(), format!("/scan-{i}")).await;
    }
    let after = scrape().await;
    let series = request_series(&after);
    // The scrapes themselves add one series.
    assert!(series.len() <= before + 1, "{after}");
    assert!(
        !after.contains("scan-") && !after.contains("PROBE"),
        "{after}"
    );
}

#[tokio::test]
async fn metrics_token_is_required_when_configured() {
    let (state, _db) = Backend::Sqlite
        .state_with(|c| c.metrics_token = Some("scrape-s3cret".into()))
        .await;
    let app = dcp::app(state);
    let scrape = |auth: Option<&str>| {
        let mut req = Request::get("/metrics");
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        app.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    for auth in [None, Some("Bearer wrong"), Some("Bearer scrape-s3cre")] {
        let res = scrape(auth).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    let res = scrape(Some("Bearer scrape-s3cret")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("dcp_http_requests_total"));
}

#[tokio::test]
async fn metrics_on_their_own_address_leave_the_main_app() {
    let (state, _db) = Backend::Sqlite
        .state_with(|c| c.metrics_bind = Some("127.0.0.1:9464".parse().unwrap()))
        .await;
    let main = dcp::app(state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(main.status(), StatusCode::NOT_FOUND);
    let own = dcp::api::metrics_router(state)
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
}

#[tokio::test]
async fn plugin_json_endpoints_take_the_usual_body_limit() {
    let api = Api::new().await;
    let token = api.token().await;
    // Over the 1 MiB default, far under the upload's limit.
    let big = json!({ "input": "x".repeat(2 << 20) });
    for (method, path) in [
        (Method::POST, "/api/v1/plugins/1/test"),
        (Method::PUT, "/api/v1/plugins/1/limits"),
    ] {
        let reply = api.call(method, path, &token, Some(big.clone())).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(reply.error().0, "payload_too_large", "{path}");
    }
    // The upload still takes a component bigger than that (and says what
    // is wrong with it, rather than that it is too large).
    let boundary = "dcp-boundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"component\"; filename=\"c.wasm\"\r\n\
         Content-Type: application/wasm\r\n\r\n"
    )
    .into_bytes();
    form.extend(std::iter::repeat_n(b'x', 2 << 20));
    form.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let reply = api
        .raw(
            Method::POST,
            "/api/v1/plugins",
            &token,
            &format!("multipart/form-data; boundary={boundary}"),
            form,
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
}

/// Logs in over a connection from `peer` with `headers`; the session
/// cookie's attributes.
async fn session_cookie(app: &Router, peer: Option<&str>, proto: Option<&str>) -> String {
    let mut req = Request::post("/api/v1/session").header(header::CONTENT_TYPE, "application/json");
    if let Some(proto) = proto {
        req = req.header("x-forwarded-proto", proto);
    }
    let mut req = req
        .body(Body::from(
            json!({"username": "admin", "password": ADMIN_PASSWORD}).to_string(),
        ))
        .unwrap();
    if let Some(peer) = peer {
        let addr: std::net::SocketAddr = peer.parse().unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
    }
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("dcp_session="))
        .unwrap()
}

#[tokio::test]
async fn cookies_are_secure_behind_a_trusted_tls_proxy_only() {
    let (state, _db) = Backend::Sqlite
        .state_with(|c| {
            c.trusted_proxies = vec![
                "127.0.0.1".to_owned().try_into().unwrap(),
                "127.9.0.0/16".to_owned().try_into().unwrap(),
            ];
        })
        .await;
    let app = dcp::app(state);
    let secure = |cookie: &str| cookie.split(';').any(|a| a.trim() == "Secure");
    // A trusted proxy that terminated TLS.
    for (peer, proto) in [
        ("127.0.0.1:40000", "https"),
        ("127.9.3.4:40000", "HTTPS"),
        ("[::ffff:127.0.0.1]:40000", "https, http"),
    ] {
        let cookie = session_cookie(&app, Some(peer), Some(proto)).await;
        assert!(secure(&cookie), "{peer} {proto}: {cookie}");
    }
    // A trusted proxy serving plain HTTP, no proxy, or anyone else's word.
    for (peer, proto) in [
        (Some("127.0.0.1:40000"), Some("http")),
        (Some("127.0.0.1:40000"), None),
        (Some("127.0.0.2:40000"), Some("https")),
        (None, Some("https")),
    ] {
        let cookie = session_cookie(&app, peer, proto).await;
        assert!(!secure(&cookie), "{peer:?} {proto:?}: {cookie}");
    }
    // secure_cookies forces it.
    let (state, _db) = Backend::Sqlite
        .state_with(|c| c.secure_cookies = true)
        .await;
    let cookie = session_cookie(&dcp::app(state), None, None).await;
    assert!(secure(&cookie), "{cookie}");
}

/// Every list of the API answers one shape, `{items, total, page, per_page}`,
/// takes `page` and `per_page` and refuses them out of range naming the
/// parameter. The lists are found in the OpenAPI document (every GET that
/// answers a list), so a new one cannot slip by with another shape.
async fn every_list_answers_one_page_shape(backend: Backend) {
    let api = Api::on_tuned(backend, dcp_tests::with_default_key).await;
    let token = api.token().await;
    let call = |path: String| {
        let token = token.clone();
        let api = &api;
        async move { api.call(Method::GET, &path, &token, None).await }
    };
    let post = |path: &'static str, body: Value| {
        let token = token.clone();
        let api = &api;
        async move { api.call(Method::POST, path, &token, Some(body)).await }
    };
    let cluster = post("/api/v1/clusters", json!({"name": "shop"})).await;
    let service = post(
        "/api/v1/services",
        json!({"cluster_id": cluster.body["id"], "name": "web", "image": "nginx:1"}),
    )
    .await;
    let pool = post(
        "/api/v1/pools",
        json!({"service_id": service.body["id"], "name": "web-a"}),
    )
    .await;
    let pool = pool.body["id"].as_i64().unwrap();
    let added = api
        .call(
            Method::POST,
            &format!("/api/v1/pools/{pool}/nodes"),
            &token,
            Some(json!({"addresses": [
                {"address": "127.20.9.1"}, {"address": "127.20.9.2"}, {"address": "127.20.9.3"}
            ]})),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    let execution = stored_execution(&api.state.store, "listed", Some("127.20.9.1")).await;
    let project = post(
        "/api/v1/image-projects",
        json!({"repository": "shop/web", "dockerfile": {"kind": "text", "dockerfile": "FROM x"}}),
    )
    .await;
    let project = project.body["id"].as_i64().unwrap();

    let doc = call("/api/v1/openapi.json".into()).await.body;
    let resolve = |schema: &Value| match schema["$ref"].as_str() {
        Some(r) => doc["components"]["schemas"][r.rsplit('/').next().unwrap()].clone(),
        None => schema.clone(),
    };
    // The cloud's choices for one field of a template form are a look-up,
    // not a collection: the cloud answers them whole, in its own order.
    let not_collections = ["/api/v1/accounts/{id}/lookups/{kind}"];
    let mut lists = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let path = if path.starts_with("/api/v1") {
            path.clone()
        } else {
            format!("/api/v1{path}")
        };
        let schema =
            resolve(&item["get"]["responses"]["200"]["content"]["application/json"]["schema"]);
        let bare = schema["type"] == "array";
        let paged = schema["properties"]["items"]["type"] == "array";
        if (bare || paged) && !not_collections.contains(&path.as_str()) {
            assert!(!bare, "{path} answers a bare array, not a page");
            lists.push(path);
        }
    }
    for converted in [
        "/api/v1/accounts",
        "/api/v1/machine-templates",
        "/api/v1/quotas",
        "/api/v1/task-templates",
        "/api/v1/modules",
        "/api/v1/pools/{id}/nodes",
        "/api/v1/fleet-history",
        "/api/v1/machines",
        "/api/v1/tasks",
    ] {
        assert!(
            lists.iter().any(|l| l == converted),
            "{converted}: {lists:?}"
        );
    }
    // Lists read from the registry: their pages are checked against a real
    // one (tests/images.rs); this server has none.
    // An account's load balancers are read from its cloud: their pages are
    // checked against the simulator (tests/machines.rs).
    let from_registry = [
        "/api/v1/registry/repositories",
        "/api/v1/registry/repositories/{repository}/tags",
        "/api/v1/registry/clean-ups/plan",
        "/api/v1/accounts/{id}/load-balancers",
    ];
    for path in lists
        .iter()
        .filter(|l| !from_registry.contains(&l.as_str()))
    {
        let url = path
            .replace("/pools/{id}", &format!("/pools/{pool}"))
            .replace("/executions/{id}", &format!("/executions/{execution}"))
            .replace(
                "/image-projects/{id}",
                &format!("/image-projects/{project}"),
            )
            // The unit made at install.
            .replace("/lb-units/{id}", "/lb-units/1");
        assert!(!url.contains('{'), "no fixture for {path}");
        let reply = call(format!("{url}?page=1&per_page=1")).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        let mut keys: Vec<&str> = reply
            .body
            .as_object()
            .unwrap_or_else(|| panic!("{path}: {}", reply.body))
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["items", "page", "per_page", "total"], "{path}");
        assert_eq!(
            (reply.body["page"].as_u64(), reply.body["per_page"].as_u64()),
            (Some(1), Some(1)),
            "{path}"
        );
        let items = reply.body["items"].as_array().unwrap().len();
        assert!(items <= 1, "{path}: {items} items on a page of 1");
        for (query, field) in [
            ("page=0", "page"),
            ("per_page=0", "per_page"),
            ("per_page=201", "per_page"),
        ] {
            let refused = call(format!("{url}?{query}")).await;
            assert_eq!(
                refused.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{path}?{query}: {}",
                refused.body
            );
            assert_eq!(refused.error().1.as_deref(), Some(field), "{path}?{query}");
        }
    }

    // Paging is the store's: disjoint pages in a stable order, the total on each.
    let nodes = |page: u32| call(format!("/api/v1/pools/{pool}/nodes?page={page}&per_page=2"));
    let addresses = |reply: &Reply| -> Vec<String> {
        assert_eq!(reply.body["total"], 3, "{}", reply.body);
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["address"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(addresses(&nodes(1).await), ["127.20.9.1", "127.20.9.2"]);
    assert_eq!(addresses(&nodes(2).await), ["127.20.9.3"]);
    assert!(addresses(&nodes(3).await).is_empty());
    let templates = call("/api/v1/task-templates?page=3&per_page=2".into()).await;
    assert_eq!(templates.body["total"], 6, "{}", templates.body);
    let names: Vec<&str> = templates.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["upgrade", "upgrade-drained"], "{}", templates.body);
}

#[tokio::test]
async fn every_list_answers_one_page_shape_on_sqlite() {
    every_list_answers_one_page_shape(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_list_answers_one_page_shape_on_postgres() {
    every_list_answers_one_page_shape(Backend::Postgres).await;
}

/// A machine to record straight in the store, in `state`.
fn machine(
    name: &str,
    provider: &str,
    template_id: Option<i64>,
    address: Option<&str>,
    state: dcp_api_types::MachineState,
) -> dcp::store::NewMachine {
    dcp::store::NewMachine {
        name: name.into(),
        template_id,
        provider: provider.into(),
        region: String::new(),
        request_key: None,
        address: address.map(str::to_owned),
        port: 22,
        user: "root".into(),
        private_key_sealed: None,
        public_key: None,
        state,
        reason: String::new(),
    }
}

async fn the_overview_counts_the_fleet_pools_work_and_quotas(backend: Backend) {
    use dcp_api_types::{ExecutionState, MachineState};
    // Nodes are added by address below: they log in with DCP's key.
    let api = Api::on_tuned(backend, dcp_tests::with_default_key).await;
    // Tasks are put in their states by hand below: no driver may take them.
    api.state.engine.stop();
    let store = &api.state.store;
    let token = api.token().await;
    let call = |method: Method, path: String, body: Option<Value>| {
        let token = token.clone();
        let api = &api;
        async move { api.call(method, &path, &token, body).await }
    };

    // Two templates: one with credit left, one overdrawn.
    let account = store
        .create_account(&dcp::store::AccountChange {
            name: "cloud".into(),
            provider: "aliyun".into(),
            config: "{}".into(),
            key_id: "key".into(),
            secret_sealed: Some("sealed".into()),
        })
        .await
        .unwrap();
    let mut templates = Vec::new();
    for (name, quota_hours) in [("roomy", 10), ("overdrawn", 3)] {
        let template = store
            .create_template(&dcp::store::TemplateChange {
                name: name.into(),
                description: String::new(),
                account_id: account.id,
                spec: "{}".into(),
                login_user: "root".into(),
                init_group_id: None,
                init_timeout_secs: 60,
                quota_hours,
            })
            .await
            .unwrap();
        templates.push(template.id);
    }
    // The fleet: aliyun 2 ready + 1 error, adopted 1 ready + 1 init_failed,
    // and two released machines that count only against their quotas.
    let made = store
        .create_machines(&[
            machine(
                "a1",
                "aliyun",
                Some(templates[0]),
                None,
                MachineState::Ready,
            ),
            machine(
                "a2",
                "aliyun",
                Some(templates[0]),
                None,
                MachineState::Ready,
            ),
            machine(
                "a3",
                "aliyun",
                Some(templates[0]),
                None,
                MachineState::Error,
            ),
            machine(
                "s1",
                "adopted",
                None,
                Some("127.20.8.1"),
                MachineState::Ready,
            ),
            machine(
                "s2",
                "adopted",
                None,
                Some("127.20.8.2"),
                MachineState::InitFailed,
            ),
            machine(
                "r1",
                "aliyun",
                Some(templates[0]),
                None,
                MachineState::Ready,
            ),
            machine(
                "r2",
                "aliyun",
                Some(templates[1]),
                None,
                MachineState::Ready,
            ),
        ])
        .await
        .unwrap();
    for (released, hours) in [(&made[5], 4), (&made[6], 5)] {
        store
            .transition_machine(
                released.id,
                &[MachineState::Ready],
                MachineState::Deleted,
                "released",
                &dcp::store::MachineUpdate {
                    charged_hours: Some(hours),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
    }

    // Two pools: "web-a" with a failed, a running and a pending node;
    // "web-b" with one running node.
    let cluster = call(
        Method::POST,
        "/api/v1/clusters".into(),
        Some(json!({"name": "shop"})),
    )
    .await;
    let service = call(
        Method::POST,
        "/api/v1/services".into(),
        Some(json!({"cluster_id": cluster.body["id"], "name": "web", "image": "nginx:1"})),
    )
    .await;
    let mut pools = Vec::new();
    let mut nodes = Vec::new();
    for (name, count) in [("web-b", 1), ("web-a", 3)] {
        let pool = call(
            Method::POST,
            "/api/v1/pools".into(),
            Some(json!({"service_id": service.body["id"], "name": name})),
        )
        .await;
        let pool = pool.body["id"].as_i64().unwrap();
        let addresses: Vec<Value> = (1..=count)
            .map(|i| json!({"address": format!("127.20.7.{}", pools.len() * 10 + i)}))
            .collect();
        let added = call(
            Method::POST,
            format!("/api/v1/pools/{pool}/nodes"),
            Some(json!({ "addresses": addresses })),
        )
        .await;
        assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
        for node in added.body.as_array().unwrap() {
            nodes.push(node["id"].as_i64().unwrap());
        }
        pools.push(pool);
    }
    for (node, state) in [
        (nodes[0], "running"),
        (nodes[1], "failed"),
        (nodes[2], "running"),
    ] {
        store.set_node_state(node, state).await.unwrap();
    }

    // Tasks on web-a: one failed, one partially failed, one succeeded, and
    // one pending. Only the first task in line on a pool can be claimed, so
    // each ends before the next is made.
    let template = store.seeded_template("deploy").await.unwrap().unwrap();
    let mut tasks = Vec::new();
    for state in ["failed", "partially_failed", "succeeded", "pending"] {
        let id = store
            .create_task(&dcp::store::NewTask {
                kind: "deploy".into(),
                pool_id: pools[1],
                template_id: template,
                steps: "[]".into(),
                step_count: 0,
                overrides: "{}".into(),
                batch_size: 1,
                created_by: "admin".into(),
                nodes: Vec::new(),
                exclusive: false,
            })
            .await
            .unwrap();
        tasks.push(id);
        if state != "pending" {
            assert_eq!(
                store.claim_tasks("test", 3_600_000, 16).await.unwrap(),
                [id]
            );
            assert!(
                store
                    .save_task_state(id, "test", state, "it went so", true, true)
                    .await
                    .unwrap()
            );
        }
    }

    // Executions: one running, one failed, one partially failed, one succeeded.
    let mut executions = Vec::new();
    for title in ["running", "failed", "partly", "fine"] {
        let id = stored_execution(store, title, Some("127.20.7.1")).await;
        executions.push(id);
    }
    for (execution, state) in [
        (executions[0], ExecutionState::Running),
        (executions[1], ExecutionState::Failed),
        (executions[2], ExecutionState::PartiallyFailed),
        (executions[3], ExecutionState::Succeeded),
    ] {
        store.set_execution_state(execution, state).await.unwrap();
    }

    let overview = call(Method::GET, "/api/v1/overview".into(), None).await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.body);
    let o = &overview.body;
    assert_eq!(o["machines"], 5, "{o}");
    assert_eq!(
        o["fleet"],
        json!([
            {"provider": "adopted", "state": "init_failed", "machines": 1},
            {"provider": "adopted", "state": "ready", "machines": 1},
            {"provider": "aliyun", "state": "error", "machines": 1},
            {"provider": "aliyun", "state": "ready", "machines": 2},
        ]),
        "{o}"
    );
    assert_eq!(o["pools"], 2, "{o}");
    let health = |p: &Value| {
        (
            p["id"].as_i64().unwrap(),
            p["name"].as_str().unwrap().to_owned(),
            p["service_name"].as_str().unwrap().to_owned(),
            [
                &p["nodes"],
                &p["running"],
                &p["pending"],
                &p["failed"],
                &p["removing"],
            ]
            .map(|n| n.as_u64().unwrap()),
        )
    };
    let listed: Vec<_> = o["pool_health"]
        .as_array()
        .unwrap()
        .iter()
        .map(health)
        .collect();
    // The unhealthy pool first.
    assert_eq!(
        listed,
        [
            (
                pools[1],
                "web-a".to_owned(),
                "web".to_owned(),
                [3, 1, 1, 1, 0]
            ),
            (
                pools[0],
                "web-b".to_owned(),
                "web".to_owned(),
                [1, 1, 0, 0, 0]
            ),
        ],
        "{o}"
    );
    let ids = |list: &Value| -> Vec<i64> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(o["tasks"]["active"], 1, "{o}");
    assert_eq!(ids(&o["tasks"]["active_recent"]), [tasks[3]], "{o}");
    assert_eq!(o["tasks"]["failed"], 2, "{o}");
    let mut failed = ids(&o["tasks"]["failed_recent"]);
    failed.sort_unstable();
    assert_eq!(failed, [tasks[0], tasks[1]], "{o}");
    let failed_task = &o["tasks"]["failed_recent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == tasks[0])
        .unwrap();
    assert_eq!(failed_task["pool_name"], "web-a", "{o}");
    assert_eq!(failed_task["state"], "failed", "{o}");
    assert_eq!(failed_task["reason"], "it went so", "{o}");
    assert_eq!(o["executions"]["active"], 1, "{o}");
    assert_eq!(
        ids(&o["executions"]["active_recent"]),
        [executions[0]],
        "{o}"
    );
    assert_eq!(o["executions"]["failed"], 2, "{o}");
    let mut failed = ids(&o["executions"]["failed_recent"]);
    failed.sort_unstable();
    assert_eq!(failed, [executions[1], executions[2]], "{o}");
    assert_eq!(
        o["quota"],
        json!({"templates": 2, "quota_hours": 13, "used_hours": 9}),
        "{o}"
    );
    let quotas: Vec<(String, i64, u64)> = o["tightest_quotas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["template_name"].as_str().unwrap().to_owned(),
                q["credit_hours"].as_i64().unwrap(),
                q["live_machines"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        quotas,
        [("overdrawn".to_owned(), -2, 0), ("roomy".to_owned(), 6, 3)],
        "{o}"
    );

    // Bounded: 12 more failed executions still list only the last 10.
    for i in 0..12 {
        let id = stored_execution(store, &format!("more-{i}"), None).await;
        store
            .set_execution_state(id, ExecutionState::Failed)
            .await
            .unwrap();
    }
    let o = call(Method::GET, "/api/v1/overview".into(), None)
        .await
        .body;
    assert_eq!(o["executions"]["failed"], 14, "{o}");
    assert_eq!(
        o["executions"]["failed_recent"].as_array().unwrap().len(),
        10,
        "{o}"
    );
}

#[tokio::test]
async fn the_overview_counts_the_fleet_pools_work_and_quotas_on_sqlite() {
    the_overview_counts_the_fleet_pools_work_and_quotas(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_overview_counts_the_fleet_pools_work_and_quotas_on_postgres() {
    the_overview_counts_the_fleet_pools_work_and_quotas(Backend::Postgres).await;
}

/// What a browser gets for `path` asking with `accept_encoding`: status,
/// headers and the body's bytes.
async fn fetch_ui(
    app: &Router,
    path: &str,
    accept_encoding: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::get(path);
    if let Some(encodings) = accept_encoding {
        req = req.header(header::ACCEPT_ENCODING, encodings);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn ui_assets_are_sent_compressed_and_cached_by_their_hashed_names() {
    // A UI directory laid out as scripts/build-ui makes it: hashed assets
    // under static/, each with its .br and .gz beside it.
    let ui = tempfile::tempdir().unwrap();
    let wasm = "static/dcp_bg.0123456789abcdef.wasm";
    std::fs::create_dir(ui.path().join("static")).unwrap();
    for (name, body) in [
        ("index.html", &b"<!doctype html><title>DCP</title>"[..]),
        ("index.html.br", b"index in brotli"),
        ("index.html.gz", b"index in gzip"),
        (wasm, &[0u8, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 7, 7, 7, 7][..]),
        (&format!("{wasm}.br"), b"wasm in brotli"),
        (&format!("{wasm}.gz"), b"wasm in gzip, longer"),
    ] {
        std::fs::write(ui.path().join(name), body).unwrap();
    }
    let dir = ui.path().to_owned();
    let (state, _db) = Backend::Sqlite.state_with(|c| c.ui_dir = Some(dir)).await;
    let app = dcp::app(state);
    let chromium = "gzip, deflate, br, zstd";

    // Brotli when the browser takes it, with the wasm's own type and length.
    let (status, headers, body) = fetch_ui(&app, &format!("/{wasm}"), Some(chromium)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"wasm in brotli");
    assert_eq!(headers[header::CONTENT_ENCODING], "br");
    assert_eq!(headers[header::CONTENT_TYPE], "application/wasm");
    assert_eq!(headers[header::CONTENT_LENGTH], "14");
    assert_eq!(headers[header::VARY], "accept-encoding");
    // A hashed name never changes meaning: kept a year, never revalidated.
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    // The security headers stay.
    assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");

    // Gzip for a client without brotli, identity for one without either.
    let (_, headers, body) = fetch_ui(&app, &format!("/{wasm}"), Some("gzip")).await;
    assert_eq!(
        (
            headers[header::CONTENT_ENCODING].to_str().unwrap(),
            &body[..]
        ),
        ("gzip", &b"wasm in gzip, longer"[..])
    );
    for refused in [None, Some("identity"), Some("br;q=0, gzip;q=0")] {
        let (status, headers, body) = fetch_ui(&app, &format!("/{wasm}"), refused).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !headers.contains_key(header::CONTENT_ENCODING),
            "{refused:?}"
        );
        assert_eq!(body.len(), 12, "{refused:?}");
        assert_eq!(headers[header::CONTENT_LENGTH], "12");
        assert_eq!(headers[header::VARY], "accept-encoding");
    }

    // index.html, by its name or as a deep link's page, is revalidated on
    // every load: it names the current build's assets.
    for page in ["/", "/index.html", "/pools/3", "/login"] {
        let (status, headers, body) = fetch_ui(&app, page, Some(chromium)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{page}");
        assert_eq!(headers[header::CONTENT_ENCODING], "br", "{page}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{page}"
        );
        assert_eq!(body, b"index in brotli", "{page}");
        assert!(
            headers.contains_key(header::CONTENT_SECURITY_POLICY),
            "{page}"
        );
    }

    // An asset of another build is a 404, not index.html kept for a year
    // under the asset's name.
    let (status, headers, _) =
        fetch_ui(&app, "/static/dcp_bg.fedcba9876543210.wasm", Some(chromium)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        !headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
}

/// A ready machine made straight in the store (no cloud needed).
async fn stored_machine(
    api: &Api,
    name: &str,
    address: &str,
    state: dcp_api_types::MachineState,
) -> i64 {
    api.state
        .store
        .create_machines(&[dcp::store::NewMachine {
            name: name.to_owned(),
            template_id: None,
            provider: "adopted".into(),
            region: String::new(),
            request_key: None,
            address: Some(address.to_owned()),
            port: 2201,
            user: "deploy".into(),
            private_key_sealed: None,
            public_key: None,
            state,
            reason: "made by the test".into(),
        }])
        .await
        .unwrap()
        .remove(0)
        .id
}

async fn pools_take_picked_machines_once_and_addresses_need_a_default_key(backend: Backend) {
    use dcp_api_types::MachineState::{Creating, Ready};
    let api = Api::on(backend).await;
    let token = api.token().await;
    let call = |method: Method, path: String, body: Option<Value>| {
        let (api, token) = (&api, &token);
        async move { api.call(method, &path, token, body).await }
    };
    let cluster = call(
        Method::POST,
        "/api/v1/clusters".into(),
        Some(json!({"name": "pick"})),
    )
    .await;
    let service = call(
        Method::POST,
        "/api/v1/services".into(),
        Some(json!({"cluster_id": cluster.body["id"], "name": "web", "image": "nginx:1.27"})),
    )
    .await;
    assert_eq!(service.status, StatusCode::CREATED, "{}", service.body);
    let mut pools = Vec::new();
    for name in ["web-a", "web-b"] {
        let pool = call(
            Method::POST,
            "/api/v1/pools".into(),
            Some(json!({"service_id": service.body["id"], "name": name})),
        )
        .await;
        assert_eq!(pool.status, StatusCode::CREATED, "{}", pool.body);
        pools.push(pool.body["id"].as_i64().unwrap());
    }
    let web = stored_machine(&api, "Web-1", "127.20.8.1", Ready).await;
    let db = stored_machine(&api, "db-1", "127.20.8.2", Ready).await;
    let unready = stored_machine(&api, "web-2", "127.20.8.3", Creating).await;
    let names = |reply: &Reply| -> Vec<String> {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    };

    // The picker's list: ready machines in no pool, searched by name or
    // address in any case.
    let free = "/api/v1/machines?state=ready&pooled=false";
    assert_eq!(
        names(&call(Method::GET, free.into(), None).await),
        ["db-1", "Web-1"]
    );
    assert_eq!(
        names(&call(Method::GET, format!("{free}&q=wEB"), None).await),
        ["Web-1"]
    );
    assert_eq!(
        names(&call(Method::GET, format!("{free}&q=8.2"), None).await),
        ["db-1"]
    );
    assert_eq!(
        names(&call(Method::GET, format!("{free}&q=%25"), None).await),
        Vec::<String>::new()
    );

    // A picked machine becomes a node with its address, port and user, and
    // shows the pool.
    let nodes = |pool: i64| format!("/api/v1/pools/{pool}/nodes");
    let added = call(
        Method::POST,
        nodes(pools[0]),
        Some(json!({"machine_ids": [web]})),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    let node = &added.body[0];
    assert_eq!(
        (
            &node["machine_id"],
            &node["address"],
            &node["port"],
            &node["user"]
        ),
        (
            &json!(web),
            &json!("127.20.8.1"),
            &json!(2201),
            &json!("deploy")
        ),
        "{node}"
    );
    let detail = call(Method::GET, format!("/api/v1/machines/{web}"), None).await;
    assert_eq!(
        detail.body["machine"]["pool_id"], pools[0],
        "{}",
        detail.body
    );
    assert_eq!(names(&call(Method::GET, free.into(), None).await), ["db-1"]);
    let pooled = call(Method::GET, "/api/v1/machines?pooled=true".into(), None).await;
    assert_eq!(names(&pooled), ["Web-1"]);
    assert_eq!(pooled.body["items"][0]["pool_id"], pools[0]);

    // One pool at most: the second pool is refused, naming the field and
    // the pool that has it; so is a machine not ready.
    for pool in [pools[1], pools[0]] {
        let again = call(
            Method::POST,
            nodes(pool),
            Some(json!({"machine_ids": [db, web]})),
        )
        .await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
        assert_eq!(
            again.error(),
            ("conflict".to_owned(), Some("machine_ids[1]".to_owned()))
        );
        let message = again.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("pool web-a"), "{message}");
    }
    let not_ready = call(
        Method::POST,
        nodes(pools[1]),
        Some(json!({"machine_ids": [unready]})),
    )
    .await;
    assert_eq!(
        not_ready.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        not_ready.body
    );
    assert_eq!(not_ready.error().1.as_deref(), Some("machine_ids[0]"));
    // All or none: db-1 was not taken by the refused requests.
    assert_eq!(names(&call(Method::GET, free.into(), None).await), ["db-1"]);

    // Without a default key a server by address could never be logged in
    // to: refused before it is stored, and the settings say so.
    let settings = call(Method::GET, "/api/v1/ssh/settings".into(), None).await;
    assert_eq!(settings.status, StatusCode::OK, "{}", settings.body);
    assert_eq!(settings.body, json!({"default_key": false}));
    let by_address = call(
        Method::POST,
        nodes(pools[1]),
        Some(json!({"addresses": [{"address": "127.20.9.1"}]})),
    )
    .await;
    assert_eq!(
        by_address.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        by_address.body
    );
    assert_eq!(by_address.error().1.as_deref(), Some("addresses[0]"));
    let message = by_address.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("ssh_key_file"), "{message}");
    let listed = call(Method::GET, nodes(pools[1]), None).await;
    assert_eq!(listed.body["total"], 0, "{}", listed.body);

    // A search that could match every row, or is too long, is refused.
    for q in ["a%00b", &"x".repeat(257)] {
        let bad = call(Method::GET, format!("/api/v1/machines?q={q}"), None).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
        assert_eq!(bad.error().1.as_deref(), Some("q"));
    }

    // With a default key, the settings say so.
    let keyed = Api::on_tuned(backend, dcp_tests::with_default_key).await;
    let token = keyed.token().await;
    let settings = keyed
        .call(Method::GET, "/api/v1/ssh/settings", &token, None)
        .await;
    assert_eq!(settings.body, json!({"default_key": true}));
}

#[tokio::test]
async fn pools_take_picked_machines_once_and_addresses_need_a_default_key_on_sqlite() {
    pools_take_picked_machines_once_and_addresses_need_a_default_key(Backend::Sqlite).await;
}

#[tokio::test]
async fn pools_take_picked_machines_once_and_addresses_need_a_default_key_on_postgres() {
    pools_take_picked_machines_once_and_addresses_need_a_default_key(Backend::Postgres).await;
}

/// An execution recorded straight in the store, owned by another process
/// (so nothing here runs it), on `address` if given.
async fn stored_execution(store: &dcp::store::Store, title: &str, address: Option<&str>) -> i64 {
    store
        .create_execution(&dcp::store::NewExecution {
            title: title.to_owned(),
            command_id: None,
            group_id: None,
            steps: "[]".into(),
            params: "{}".into(),
            forks: 1,
            timeout_secs: 60,
            created_by: "admin".into(),
            owner: "elsewhere".into(),
            hosts: address
                .map(|address| dcp::store::NewHost {
                    address: address.to_owned(),
                    port: 22,
                    user: "root".into(),
                })
                .into_iter()
                .collect(),
        })
        .await
        .unwrap()
}

const NGINX_MANIFEST: &str = include_str!("../../plugins/nginx/plugin.toml");

/// A plugin directory holding only the bundled nginx plugin, its manifest
/// changed by `manifest`, so the install's default unit has its plugin
/// active.
fn nginx_only(config: &mut dcp::Config, manifest: &str) {
    let dir = config.data_dir.join("bundled");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("nginx.wasm"), dcp_tests::fixture_plugin("nginx")).unwrap();
    std::fs::write(dir.join("nginx.toml"), manifest).unwrap();
    config.plugin_dir = Some(dir);
}

/// An account as the machines page makes it: its secret sealed.
async fn sealed_account(api: &Api) -> dcp::store::AccountRecord {
    api.state
        .store
        .create_account(&dcp::store::AccountChange {
            name: "prod-slb".into(),
            provider: "aliyun".into(),
            config: "{}".into(),
            key_id: "LTAI-test".into(),
            secret_sealed: Some(
                api.state
                    .vault
                    .seal(dcp::machines::ACCOUNT_SECRET, b"s3cret"),
            ),
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_cloud_load_balancer_needs_a_plugin_granted_the_accounts_key() {
    // nginx as shipped asks for no secret: it is never handed a key.
    let api = Api::on_tuned(Backend::Sqlite, |c| nginx_only(c, NGINX_MANIFEST)).await;
    let token = api.token().await;
    let account = sealed_account(&api).await;
    let unit = api.state.store.lb_units(None).await.unwrap()[0].clone();
    let reply = api
        .call(
            Method::POST,
            &format!("/api/v1/lb-units/{}/nodes", unit.id),
            &token,
            Some(json!({"account_id": account.id})),
        )
        .await;
    refused(&reply, "account_id", "an account node of an nginx unit");
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(r#"not granted the secret "account""#),
        "{}",
        reply.body
    );
    assert!(api.state.store.lb_nodes(unit.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_cloud_load_balancer_is_a_node_of_its_accounts_and_keeps_the_account() {
    // nginx stands in for a cloud load-balancer plugin (slb is built
    // elsewhere): granted the account's key like one, it is called with no
    // SSH target and says it needs one.
    let manifest =
        NGINX_MANIFEST.replace("[capabilities]", "[capabilities]\nsecrets = [\"account\"]");
    assert_ne!(manifest, NGINX_MANIFEST);
    let api = Api::on_tuned(Backend::Sqlite, |c| nginx_only(c, &manifest)).await;
    let token = api.token().await;
    let call = |method: Method, path: String, body: Option<Value>| {
        let token = token.clone();
        let api = &api;
        async move { api.call(method, &path, &token, body).await }
    };
    let account = sealed_account(&api).await;
    let unit = api.state.store.lb_units(None).await.unwrap()[0].clone();
    let nodes = format!("/api/v1/lb-units/{}/nodes", unit.id);

    // Exactly one of machine_id, address and account_id, named when not.
    for (body, field) in [
        (json!({}), "machine_id"),
        (
            json!({"machine_id": 1, "account_id": account.id}),
            "account_id",
        ),
        (
            json!({"address": "127.0.0.1", "account_id": account.id}),
            "account_id",
        ),
        (json!({"machine_id": 1, "address": "127.0.0.1"}), "address"),
        (json!({"account_id": account.id, "port": 22}), "port"),
        (json!({"account_id": 999_999}), "account_id"),
        (json!({"account_id": "x"}), "account_id"),
    ] {
        let reply = call(Method::POST, nodes.clone(), Some(body.clone())).await;
        assert!(
            reply.status.is_client_error(),
            "{body}: {} {}",
            reply.status,
            reply.body
        );
        assert_eq!(
            reply.error().1.as_deref(),
            Some(field),
            "{body}: {}",
            reply.body
        );
    }
    let unknown = call(
        Method::POST,
        nodes.clone(),
        Some(json!({"account_id": 999_999})),
    )
    .await;
    refused(&unknown, "account_id", "an unknown account");
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no account with id 999999"),
        "{}",
        unknown.body
    );

    // Added: the push reaches the unit's plugin with no SSH target (nginx
    // says it needs one), and the node shows that as drift.
    let added = call(
        Method::POST,
        nodes.clone(),
        Some(json!({"account_id": account.id})),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    let node = &added.body;
    assert_eq!(node["account_id"], json!(account.id));
    assert_eq!(node["account_name"], json!("prod-slb"));
    assert_eq!(node["machine_id"], Value::Null);
    assert_eq!(node["address"], Value::Null);
    assert_eq!(node["machine_state"], Value::Null);
    assert_eq!(node["in_sync"], json!(false), "{node}");
    let error = node["drift"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("nginx runs on a node"), "{node}");
    assert_eq!(node["drift"][0]["label"], json!("prod-slb"), "{node}");
    let listed = call(Method::GET, format!("/api/v1/lb-units/{}", unit.id), None).await;
    assert_eq!(listed.body["nodes"][0]["account_name"], json!("prod-slb"));
    let resync = call(
        Method::POST,
        format!("/api/v1/lb-nodes/{}/resync", node["id"]),
        Some(json!({})),
    )
    .await;
    assert_eq!(resync.status, StatusCode::OK, "{}", resync.body);
    assert_eq!(resync.body["state"], json!("failed"), "{}", resync.body);
    assert!(
        resync.body["message"]
            .as_str()
            .unwrap()
            .contains("FAILED prod-slb: "),
        "{}",
        resync.body
    );

    // The account stays while a node uses it.
    let refused_delete = call(
        Method::DELETE,
        format!("/api/v1/accounts/{}", account.id),
        None,
    )
    .await;
    assert_eq!(
        refused_delete.status,
        StatusCode::CONFLICT,
        "{}",
        refused_delete.body
    );
    assert!(
        refused_delete.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("balancer node of unit default"),
        "{}",
        refused_delete.body
    );
    let removed = call(
        Method::DELETE,
        format!("/api/v1/lb-nodes/{}", node["id"]),
        None,
    )
    .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let deleted = call(
        Method::DELETE,
        format!("/api/v1/accounts/{}", account.id),
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
}

/// `{address, port, weight}` as the API takes and answers a backend.
fn backend(i: u32, weight: u32) -> Value {
    json!({"address": format!("127.30.{}.{}", i / 200, i % 200 + 1), "port": 8080, "weight": weight})
}

/// The operation log keeps what each change moved, not the upstream's
/// whole membership twice: a list answers each change's members added and
/// removed and how many there were, and one change read by id answers its
/// whole before and after, replayed from the upstream's snapshots (one
/// per 64 changes that moved members). Across more than 128 revisions,
/// replacements that reorder the members, re-weights and changes that moved nothing, each
/// change's before is the one before it's after, and the last after is
/// what the upstream holds. Retention deletes the changes that ended before
/// its cutoff up to the snapshot the ones kept are replayed from, and the
/// snapshots below it; every change kept still replays.
async fn the_log_replays_each_changes_members(backend_kind: Backend) {
    let api = Api::on(backend_kind).await;
    let token = api.token().await;
    let upstream = api
        .state
        .store
        .upstreams(None)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.name == "default_upstream")
        .unwrap()
        .id;
    let path = |what: &str| format!("/api/v1/upstreams/{upstream}/{what}");
    let mut ids = Vec::new();
    let mut expected: Vec<Value> = Vec::new();
    let mut next = 0;
    let mut cutoff = None;
    for round in 0..150_u32 {
        if round == 146 {
            cutoff = Some(time::OffsetDateTime::now_utc());
        }
        let (method, what, backends) = match round % 10 {
            // A replacement, in reverse order of what is there, minus one.
            4 => {
                let mut kept: Vec<Value> = expected.iter().skip(1).cloned().collect();
                kept.reverse();
                (Method::PUT, "backends", kept)
            }
            // One leaves.
            7 => (
                Method::POST,
                "unregister",
                vec![expected[expected.len() / 2].clone()],
            ),
            // One takes a new weight, in place.
            8 => {
                let mut b = expected[0].clone();
                b["weight"] = json!(u64::from(round % 100));
                (Method::POST, "register", vec![b])
            }
            // Moves nothing: already there, as it is.
            9 => (Method::POST, "register", vec![expected[0].clone()]),
            _ => {
                next += 1;
                (Method::POST, "register", vec![backend(next, 10)])
            }
        };
        let reply = api
            .call(
                method,
                &path(what),
                &token,
                Some(json!({"backends": backends})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["state"], "succeeded", "{}", reply.body);
        assert!(reply.body["before"].is_null(), "{}", reply.body);
        // The test's own account of the membership.
        let before = expected.clone();
        match what {
            "backends" => expected = backends.clone(),
            "unregister" => expected.retain(|b| b["address"] != backends[0]["address"]),
            _ => match expected
                .iter_mut()
                .find(|b| b["address"] == backends[0]["address"])
            {
                Some(b) => *b = backends[0].clone(),
                None => expected.push(backends[0].clone()),
            },
        }
        let moved = |from: &[Value], to: &[Value]| -> Vec<Value> {
            from.iter().filter(|b| !to.contains(b)).cloned().collect()
        };
        assert_eq!(
            reply.body["added"],
            json!(moved(&expected, &before)),
            "{round}"
        );
        assert_eq!(
            reply.body["removed"],
            json!(moved(&before, &expected)),
            "{round}"
        );
        assert_eq!(reply.body["members_before"], before.len(), "{round}");
        assert_eq!(reply.body["members_after"], expected.len(), "{round}");
        ids.push((
            reply.body["id"].as_i64().unwrap(),
            before,
            expected.clone(),
            round,
        ));
    }
    let held = api
        .call(
            Method::GET,
            &format!("/api/v1/upstreams/{upstream}"),
            &token,
            None,
        )
        .await;
    assert_eq!(held.body["backends"], json!(expected), "{}", held.body);
    assert!(
        held.body["revision"].as_i64().unwrap() > 64,
        "{}",
        held.body
    );
    // The replays below start from a snapshot kept on the way, not from
    // the first revision.
    let (kept, _, _) = api
        .state
        .store
        .membership_log(upstream, i64::MAX, i64::MAX)
        .await
        .unwrap();
    assert!(kept > 0, "no snapshot was kept after {} changes", ids.len());
    let read = |id: i64| {
        let (api, token) = (&api, &token);
        async move {
            api.call(
                Method::GET,
                &format!("/api/v1/discovery-changes/{id}"),
                token,
                None,
            )
            .await
        }
    };
    let mut revisions = Vec::new();
    for (id, before, after, _) in &ids {
        let change = read(*id).await;
        assert_eq!(change.status, StatusCode::OK, "{}", change.body);
        assert_eq!(
            change.body["before"],
            json!(before),
            "{}",
            change.body["action"]
        );
        assert_eq!(
            change.body["after"],
            json!(after),
            "{}",
            change.body["action"]
        );
        revisions.push(change.body["revision"].as_i64().unwrap());
    }
    // A page of the log carries what moved, never the whole membership.
    let page = api
        .call(
            Method::GET,
            &format!("/api/v1/discovery-changes?upstream_id={upstream}&per_page=100"),
            &token,
            None,
        )
        .await;
    let items = page.body["items"].as_array().unwrap();
    assert_eq!(page.body["total"], ids.len(), "{}", page.body);
    assert_eq!(items.len(), 100, "{}", page.body);
    for item in items {
        assert!(
            item["before"].is_null() && item["after"].is_null(),
            "{item}"
        );
        assert!(
            item["added"].is_array() && item["removed"].is_array(),
            "{item}"
        );
    }

    // Retention: keep 30 days, swept 30 days after round 146 began.
    let age = std::time::Duration::from_secs(30 * 86_400);
    let settings = dcp::retention::Settings {
        changes: Some(age),
        ..Default::default()
    };
    let now = cutoff.unwrap() + age;
    let swept = dcp::retention::sweep_once(&api.state.store, settings, now)
        .await
        .unwrap();
    let mut gone = 0;
    let mut oldest_kept = None;
    for ((id, before, after, round), revision) in ids.iter().zip(&revisions) {
        let moved = before != after;
        let change = read(*id).await;
        if change.status == StatusCode::NOT_FOUND {
            gone += 1;
            assert!(*round < 146, "round {round} ended after the cutoff");
            assert!(
                !moved || oldest_kept.is_none(),
                "round {round} is gone, after a kept one that moved members"
            );
            continue;
        }
        assert_eq!(change.status, StatusCode::OK, "{}", change.body);
        assert!(
            moved || *round >= 146,
            "round {round} moved nothing and ended before the cutoff: {}",
            change.body
        );
        // Every change kept still replays to what it did.
        assert_eq!(change.body["before"], json!(before), "round {round}");
        assert_eq!(change.body["after"], json!(after), "round {round}");
        if moved && oldest_kept.is_none() {
            oldest_kept = Some(*revision);
        }
    }
    assert_eq!(swept.changes, gone, "{swept:?}");
    // The changes kept start just after a snapshot: 128, since 64 more
    // changes moved members after the one at 64, all before the cutoff.
    let oldest_kept = oldest_kept.unwrap();
    // The newest snapshot at or below `revision`: (0, "[]") if none.
    let snapshot = |revision: i64| {
        let store = &api.state.store;
        async move {
            let (at, backends, _) = store
                .membership_log(upstream, revision, revision)
                .await
                .unwrap();
            (at, backends)
        }
    };
    let (base, _) = snapshot(oldest_kept - 1).await;
    assert_eq!((base, oldest_kept), (128, 129));
    // No change left needs the snapshots below it: gone.
    assert_eq!(snapshot(base - 1).await, (0, "[]".to_owned()));
    // A second sweep finds nothing more.
    let again = dcp::retention::sweep_once(&api.state.store, settings, now)
        .await
        .unwrap();
    assert_eq!(again.changes, 0);
}

#[tokio::test]
async fn the_log_replays_each_changes_members_on_sqlite() {
    the_log_replays_each_changes_members(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_log_replays_each_changes_members_on_postgres() {
    the_log_replays_each_changes_members(Backend::Postgres).await;
}
