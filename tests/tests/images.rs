//! The image market against real parts: DCP runs Debian's `docker-registry`
//! on its own loopback address, the local dockerd pushes to it with the
//! login DCP hands out, and the API browses and deletes what is there.
//!
//! Needs dockerd (`scripts/docker start`) and `docker-registry`
//! (`scripts/setup test`).

#![allow(clippy::unwrap_used)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use dcp_tests::{
    Api, ServerOptions,
    cloud::{Cloud, quick_delays},
    docker::{Cleanup, docker_in as docker, push_to_registry, web_image},
    sse::Events,
    vcs::{GitServer, SvnServer},
};
use serde_json::{Value, json};

/// A DCP whose registry listens on `addr`.
async fn with_registry(addr: &str) -> Api {
    Api::start_with(&ServerOptions {
        env: vec![("DCP_REGISTRY_ADDR".into(), addr.into())],
        ..ServerOptions::default()
    })
    .await
}

/// Waits until the registry status says `serving` is `want`.
async fn registry_serving(api: &Api, want: bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = api.get("/api/v1/registry").await;
        if status["serving"] == want {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the registry's serving never became {want}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids of the `docker-registry` processes serving the configuration
/// under `data_dir`.
fn registries_of(data_dir: &std::path::Path) -> Vec<u32> {
    let config = data_dir.join("registry/config.yml");
    let config = std::path::absolute(config).unwrap();
    let want = format!("serve\0{}\0", config.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains(&want) && !cmdline.starts_with("sh\0")
        })
        .collect()
}

#[tokio::test]
async fn pushed_images_are_browsed_with_their_layers_and_one_tag_is_deleted_alone() {
    let api = with_registry("127.26.0.1:5000").await;
    let status = registry_serving(&api, true).await;
    assert_eq!(status["managed"], true, "{status}");
    assert_eq!(status["host"], "127.26.0.1:5000", "{status}");

    // The registry is not open: without the login, nothing.
    let anonymous = reqwest::get("http://127.26.0.1:5000/v2/_catalog")
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let (one, two) = (web_image("market-one"), web_image("market-two"));
    let stranger = tempfile::tempdir().unwrap();
    let refused = docker(
        stranger.path(),
        &["tag", &one, "127.26.0.1:5000/shop/web:nologin"],
        "",
    )
    .and_then(|_| {
        docker(
            stranger.path(),
            &["push", "127.26.0.1:5000/shop/web:nologin"],
            "",
        )
    });
    assert!(refused.is_err(), "a push without the login is refused");
    // 1.0 and stable: one image under two tags; 2.0 another.
    let (client, _) = push_to_registry(
        &api,
        &[
            (&one, "shop/web:1.0"),
            (&one, "shop/web:stable"),
            (&two, "shop/web:2.0"),
            (&two, "base/tiny:1"),
        ],
    )
    .await;

    let repositories = api.get("/api/v1/registry/repositories").await;
    let names: Vec<(&str, u64)> = repositories["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["tags"].as_u64().unwrap()))
        .collect();
    assert_eq!(names, [("base/tiny", 1), ("shop/web", 3)], "{repositories}");
    let paged = api
        .get("/api/v1/registry/repositories?per_page=1&page=2")
        .await;
    assert_eq!(paged["total"], 2);
    assert_eq!(paged["items"][0]["name"], "shop/web");

    let tags = api
        .get("/api/v1/registry/repositories/shop%2Fweb/tags")
        .await;
    let items = tags["items"].as_array().unwrap();
    let listed: Vec<&str> = items.iter().map(|t| t["tag"].as_str().unwrap()).collect();
    assert_eq!(listed, ["1.0", "2.0", "stable"], "by name: {tags}");
    assert_eq!(
        items[0]["digest"], items[2]["digest"],
        "1.0 and stable are one image"
    );
    assert_ne!(items[0]["digest"], items[1]["digest"]);
    for t in items {
        assert!(
            t["size"].as_u64().unwrap() > 100_000,
            "busybox is in it: {t}"
        );
        assert!(
            t["created"].as_str().is_some_and(|c| c.starts_with("20")),
            "{t}"
        );
    }

    let detail = api
        .get("/api/v1/registry/repositories/shop%2Fweb/tags/1.0")
        .await;
    assert_eq!(detail["pull"], "127.26.0.1:5000/shop/web:1.0", "{detail}");
    assert_eq!(detail["also_tagged"], serde_json::json!(["stable"]));
    let layers = detail["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "busybox, then the pages: {detail}");
    assert!(
        layers[0]["created_by"].as_str().unwrap().contains("COPY"),
        "each layer names its step: {detail}"
    );
    let layer_bytes: u64 = layers.iter().map(|l| l["size"].as_u64().unwrap()).sum();
    assert!(
        detail["size"].as_u64().unwrap() > layer_bytes,
        "config + layers"
    );
    assert_eq!(
        detail["runs"]["exposed_ports"],
        serde_json::json!(["80/tcp"])
    );
    assert_eq!(detail["runs"]["entrypoint"][0], "/bin/busybox");
    assert!(
        detail["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["empty_layer"] == true
                && h["created_by"].as_str().unwrap().contains("EXPOSE")),
        "{detail}"
    );

    // 1.0 goes; stable, the same image, stays and still pulls.
    let (status, deleted) = api
        .delete("/api/v1/registry/repositories/shop%2Fweb/tags/1.0")
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["kept"], serde_json::json!(["stable"]));
    assert_eq!(deleted["digest"], items[0]["digest"]);
    let stable = api
        .get("/api/v1/registry/repositories/shop%2Fweb/tags/stable")
        .await;
    assert_eq!(stable["digest"], items[0]["digest"], "{stable}");
    let _ = docker(
        client.path(),
        &["rmi", "127.26.0.1:5000/shop/web:stable"],
        "",
    );
    docker(
        client.path(),
        &["pull", "127.26.0.1:5000/shop/web:stable"],
        "",
    )
    .expect("stable still pulls");
    // 2.0, alone on its image, goes with it.
    let (status, deleted) = api
        .delete("/api/v1/registry/repositories/shop%2Fweb/tags/2.0")
        .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["kept"], serde_json::json!([]));
    assert_eq!(tags_of(&api, "shop%2Fweb").await, ["stable"]);
    let (status, again) = api
        .delete("/api/v1/registry/repositories/shop%2Fweb/tags/2.0")
        .await;
    assert_eq!(status, 404, "{again}");

    // Names the registry would refuse never reach it.
    for (path, field) in [
        (
            "/api/v1/registry/repositories/Shop%2Fweb/tags",
            "repository",
        ),
        (
            "/api/v1/registry/repositories/shop%2F%2Fweb/tags",
            "repository",
        ),
        ("/api/v1/registry/repositories/shop%2Fweb/tags/-x", "tag"),
    ] {
        let (status, body) = api.get_status(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
    }
    let (status, body) = api
        .get_status("/api/v1/registry/repositories/no%2Fsuch/tags")
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn the_registry_is_restarted_when_it_exits_and_dies_with_its_dcp() {
    let mut api = with_registry("127.26.0.2:5000").await;
    registry_serving(&api, true).await;
    let data_dir = api.server.data_dir.path().to_path_buf();
    let running = registries_of(&data_dir);
    assert_eq!(running.len(), 1, "one registry: {running:?}");
    // It crashes: DCP says so, and starts it again.
    Command::new("kill")
        .args(["-9", &running[0].to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = registries_of(&data_dir);
        if now.len() == 1 && now[0] != running[0] {
            break;
        }
        assert!(Instant::now() < deadline, "not restarted: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    registry_serving(&api, true).await;
    let catalog = api.get("/api/v1/registry/repositories").await;
    assert_eq!(catalog["total"], 0, "{catalog}");

    // DCP is killed outright: its registry does not outlive it.
    api.server.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !registries_of(&data_dir).is_empty() {
        assert!(Instant::now() < deadline, "the registry outlived its DCP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And a restarted DCP runs it again, with the same login.
    api.server.restart();
    // The old process's pooled connections are gone with it.
    api.http = reqwest::Client::new();
    registry_serving(&api, true).await;
}

#[tokio::test]
async fn without_a_registry_the_api_says_how_to_have_one() {
    let api = Api::start().await;
    let (status, body) = api.get_status("/api/v1/registry").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("registry_addr"),
        "{body}"
    );
    let (status, _) = api.get_status("/api/v1/registry/repositories").await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn a_missing_registry_program_is_named() {
    let api = Api::start_with(&ServerOptions {
        env: vec![
            ("DCP_REGISTRY_ADDR".into(), "127.26.0.3:5000".into()),
            ("DCP_REGISTRY_COMMAND".into(), "no-such-registry".into()),
        ],
        ..ServerOptions::default()
    })
    .await;
    let status = registry_serving(&api, false).await;
    let problem = status["problem"].as_str().unwrap_or_default().to_owned();
    assert!(
        problem.contains("no-such-registry is not installed"),
        "{status}"
    );
}

#[tokio::test]
async fn retention_deletes_exactly_the_tags_its_rules_select_and_the_space_freed_is_reported() {
    let api = with_registry("127.26.0.5:5000").await;
    registry_serving(&api, true).await;
    // Four builds, one after another (so their build times order them),
    // and a repository no rule names.
    let built: Vec<String> = (1..=4)
        .map(|i| web_image(&format!("retention-{i}")))
        .collect();
    let mut pushes: Vec<(&str, String)> = built
        .iter()
        .enumerate()
        .map(|(i, image)| (image.as_str(), format!("shop/api:v{}", i + 1)))
        .collect();
    // latest: v1's image under a second tag, so the clean-up deletes a
    // tag that shares its image, then the last tag on it.
    pushes.push((&built[0], "shop/api:latest".into()));
    pushes.push((&built[0], "shop/other:v1".into()));
    pushes.push((&built[0], "base/tiny:1".into()));
    let pushes: Vec<(&str, &str)> = pushes.iter().map(|(i, t)| (*i, t.as_str())).collect();
    let (_client, _) = push_to_registry(&api, &pushes).await;

    // Rules are checked.
    for (body, field) in [
        (serde_json::json!({}), "keep_last"),
        (serde_json::json!({"keep_last": 0}), "keep_last"),
        (serde_json::json!({"keep_days": 40000}), "keep_days"),
    ] {
        let (status, answer) = api
            .put("/api/v1/registry/retention/shop%2Fapi", &body)
            .await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (status, rule) = api
        .put(
            "/api/v1/registry/retention/shop%2Fapi",
            &serde_json::json!({"keep_last": 2}),
        )
        .await;
    assert_eq!(status, 200, "{rule}");
    assert_eq!(rule["updated_by"], "user:admin");
    // Everything in base/ was built today: a 7-day rule keeps it all.
    let (status, _) = api
        .put(
            "/api/v1/registry/retention/base%2Ftiny",
            &serde_json::json!({"keep_days": 7}),
        )
        .await;
    assert_eq!(status, 200);

    let plan = api.get("/api/v1/registry/clean-ups/plan").await;
    assert_eq!(plan["total"], 3, "{plan}");
    let planned: Vec<(&str, &str)> = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["repository"].as_str().unwrap(),
                d["tag"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        planned,
        [
            ("shop/api", "v2"),
            ("shop/api", "latest"),
            ("shop/api", "v1")
        ],
        "all but the two newest builds: {plan}"
    );

    let before = api.get("/api/v1/registry").await["storage_bytes"]
        .as_u64()
        .unwrap();
    let (status, cleanup) = api
        .post("/api/v1/registry/clean-ups", &serde_json::json!({}))
        .await;
    assert_eq!(status, 201, "{cleanup}");
    assert_eq!(cleanup["state"], "succeeded", "{cleanup}");
    let deleted: Vec<&str> = cleanup["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["tag"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, ["v2", "latest", "v1"], "{cleanup}");
    let after = api.get("/api/v1/registry").await["storage_bytes"]
        .as_u64()
        .unwrap();
    let freed = cleanup["freed_bytes"].as_u64().unwrap();
    assert!(freed > 0, "the deleted builds' own layers go: {cleanup}");
    assert_eq!(
        before - after,
        freed,
        "what it reports is what the disk lost"
    );
    assert!(cleanup["blobs_deleted"].as_u64().unwrap() > 0, "{cleanup}");

    let tags = |repo: &'static str| {
        let api = &api;
        async move {
            let list = api
                .get(&format!("/api/v1/registry/repositories/{repo}/tags"))
                .await;
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["tag"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(tags("shop%2Fapi").await, ["v3", "v4"]);
    assert_eq!(tags("shop%2Fother").await, ["v1"], "no rule, untouched");
    assert_eq!(tags("base%2Ftiny").await, ["1"]);
    // v1's image lives on under shop/other: its layers were kept, and it pulls.
    let (client_dir, host) = push_to_registry(&api, &[]).await;
    docker(
        client_dir.path(),
        &["pull", &format!("{host}/shop/other:v1")],
        "",
    )
    .expect("the shared layers survived the clean-up");
    // Pushes work again after it.
    push_to_registry(&api, &[(&built[3], "shop/api:v5")]).await;

    let history = api.get("/api/v1/registry/clean-ups").await;
    assert_eq!(history["total"], 1);
    assert_eq!(history["items"][0]["actor"], "user:admin");
    let (status, _) = api.delete("/api/v1/registry/retention/shop%2Fapi").await;
    assert_eq!(status, 204);
    let (status, _) = api.delete("/api/v1/registry/retention/shop%2Fapi").await;
    assert_eq!(status, 404);
}

/// The tags of `repository` (`/` written `%2F`), by name.
async fn tags_of(api: &Api, repository: &str) -> Vec<String> {
    let tags = api
        .get(&format!("/api/v1/registry/repositories/{repository}/tags"))
        .await;
    tags["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{tags}"))
        .iter()
        .map(|t| t["tag"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls build `id` until it ends; answers it.
async fn build_ended(api: &Api, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let build = api.get(&format!("/api/v1/image-builds/{id}")).await;
        if ["succeeded", "failed", "cancelled", "interrupted"]
            .contains(&build["state"].as_str().unwrap())
        {
            return build;
        }
        assert!(Instant::now() < deadline, "build {id} never ended: {build}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until build `id`'s log holds `text`.
async fn log_shows(api: &Api, id: i64, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = api
            .get(&format!("/api/v1/image-builds/{id}/log?limit=1048576"))
            .await;
        let log = log["text"].as_str().unwrap().to_owned();
        if log.contains(text) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "build {id}'s log never showed {text:?}: {log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a project from `body`; answers its id.
async fn project(api: &Api, body: &Value) -> i64 {
    let (status, created) = api.post("/api/v1/image-projects", body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_i64().unwrap()
}

/// Starts a build of `tag`; answers its id.
async fn build(api: &Api, project: i64, tag: &str) -> i64 {
    let (status, queued) = api
        .post(
            &format!("/api/v1/image-projects/{project}/builds"),
            &json!({"tag": tag}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    queued["id"].as_i64().unwrap()
}

#[tokio::test]
async fn a_project_from_git_with_svn_media_builds_live_pushes_and_carries_the_media() {
    let api = with_registry("127.26.0.6:5000").await;
    registry_serving(&api, true).await;
    // A base the user pushed into base/, then gone from the daemon: the
    // build pulls it from the registry with DCP's credentials.
    let base = web_image("market-base");
    let (client, server) = push_to_registry(&api, &[(&base, "base/web:1")]).await;
    let base_ref = format!("{server}/base/web:1");
    docker(client.path(), &["rmi", &base_ref], "").unwrap();

    let git = GitServer::start("127.26.2.1");
    let dockerfile = format!(
        "FROM {base_ref}\nCOPY site /www/site\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo built-from-git; ls /www/site\"]\n"
    );
    let commit = git.commit(
        "shop",
        &[
            ("app/Dockerfile", &dockerfile),
            ("README", "not in the context\n"),
        ],
        "v1",
    );
    let svn = SvnServer::start("127.26.2.2", "media-reader", "svn-Secret-9");
    let _r1 = svn.commit(&[("trunk/site/index.html", "media r1\n")]);
    let r2 = svn.commit(&[("trunk/site/index.html", "media r2\n")]);

    let id = project(
        &api,
        &json!({
            "repository": "shop/web",
            "description": "the shop's front end",
            "dockerfile": {"kind": "git", "url": git.url("shop"), "ref": "v1", "path": "app/Dockerfile"},
            "media": {
                "kind": "svn", "url": svn.url("trunk/site"), "revision": "HEAD", "target": "site",
                "username": "media-reader", "password": "svn-Secret-9"
            },
        }),
    )
    .await;
    let shown = api.get(&format!("/api/v1/image-projects/{id}")).await;
    assert_eq!(shown["media"]["password_set"], true, "{shown}");
    assert!(
        !shown.to_string().contains("svn-Secret-9"),
        "the password is never answered: {shown}"
    );

    // Without the layer cache: the daemon keeps layers between runs, and
    // the RUN's output is what shows the media arrived.
    let (status, queued) = api
        .post(
            &format!("/api/v1/image-projects/{id}/builds"),
            &json!({"tag": "1.0", "no_cache": true}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["no_cache"], true);
    let build_id = queued["id"].as_i64().unwrap();
    // Followed live: states in order, the log as it comes, then the end.
    let mut events = Events::open(
        &api.server.base_url,
        &api.token,
        &format!("/api/v1/image-builds/{build_id}/events"),
    )
    .await;
    let (mut states, mut log) = (Vec::new(), String::new());
    while let Some((name, data)) = events.next(Duration::from_secs(120)).await {
        match name.as_str() {
            "build" => states.push(data["state"].as_str().unwrap().to_owned()),
            "log" => {
                assert_eq!(
                    data["offset"].as_u64().unwrap(),
                    log.len() as u64,
                    "in order"
                );
                log.push_str(data["text"].as_str().unwrap());
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(
        states.last().map(String::as_str),
        Some("succeeded"),
        "{log}"
    );
    assert!(
        states.iter().any(|s| s == "building" || s == "queued"),
        "seen while it ran: {states:?}"
    );
    assert!(states.iter().any(|s| s == "pushing"), "{states:?}");
    assert!(log.contains(&format!("Source at commit {commit}")), "{log}");
    assert!(
        log.contains("Step 1/3 : FROM"),
        "the builder's own log: {log}"
    );
    assert!(log.contains("built-from-git"), "the RUN's output: {log}");
    assert!(
        log.contains("index.html"),
        "the media are in the context: {log}"
    );
    assert!(!log.contains("svn-Secret-9"), "never logged: {log}");

    let done = api.get(&format!("/api/v1/image-builds/{build_id}")).await;
    assert_eq!(done["source_revision"], commit.as_str(), "{done}");
    assert_eq!(
        done["media_revision"],
        r2.as_str(),
        "HEAD, as a number: {done}"
    );
    assert_eq!(done["image"], format!("{server}/shop/web:1.0"));
    assert!(done["duration_ms"].as_u64().is_some(), "{done}");
    assert_eq!(done["requested_by"], "user:admin");

    // The registry has it, as the build says, with the step that made
    // each layer.
    let tag = api
        .get("/api/v1/registry/repositories/shop%2Fweb/tags/1.0")
        .await;
    assert_eq!(tag["digest"], done["digest"], "{tag}");
    assert_eq!(tag["size"], done["size"], "{tag}");
    let steps: Vec<&str> = tag["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["created_by"].as_str())
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s.contains("COPY") && s.contains("/www/site")),
        "{tag}"
    );

    // The image carries the media at that revision.
    let pulled = format!("{server}/shop/web:1.0");
    docker(client.path(), &["pull", "-q", &pulled], "").unwrap();
    let served = docker(
        client.path(),
        &[
            "run",
            "--rm",
            "--entrypoint",
            "/bin/busybox",
            &pulled,
            "cat",
            "/www/site/index.html",
        ],
        "",
    )
    .unwrap();
    assert_eq!(served, "media r2\n");

    let history = api
        .get(&format!("/api/v1/image-projects/{id}/builds"))
        .await;
    assert_eq!(history["total"], 1);
    assert_eq!(history["items"][0]["id"], build_id);
    let listed = api.get("/api/v1/image-projects").await;
    assert_eq!(listed["items"][0]["last_build"]["state"], "succeeded");
}

#[tokio::test]
async fn failing_builds_end_failed_in_the_builders_words_and_push_nothing() {
    let api = with_registry("127.26.0.7:5000").await;
    registry_serving(&api, true).await;
    let base = web_image("market-fail");
    let git = GitServer::start("127.26.2.3");
    let _ = git.commit("app", &[("Dockerfile", &format!("FROM {base}\n"))], "v1");

    let failing = [
        (
            json!({"kind": "text", "dockerfile": format!("FROM {base}\nRUN [\"/bin/busybox\", \"false\"]\n")}),
            "returned a non-zero code",
        ),
        (
            json!({"kind": "text", "dockerfile": format!("FROM {base}\nFROMM nothing\n")}),
            "unknown instruction",
        ),
        (
            json!({"kind": "git", "url": "git://127.26.2.4/app.git", "ref": "main"}),
            "127.26.2.4",
        ),
        (
            json!({"kind": "git", "url": git.url("app"), "ref": "no-such-branch"}),
            "couldn't find remote ref no-such-branch",
        ),
        (
            json!({"kind": "git", "url": git.url("app"), "ref": "v1", "path": "sub/Dockerfile"}),
            "no Dockerfile at \"sub/Dockerfile\"",
        ),
    ];
    for (n, (dockerfile, words)) in failing.iter().enumerate() {
        let repository = format!("broken/case{n}");
        let id = project(
            &api,
            &json!({"repository": repository, "dockerfile": dockerfile}),
        )
        .await;
        let build_id = build(&api, id, "1").await;
        let done = build_ended(&api, build_id).await;
        assert_eq!(done["state"], "failed", "{done}");
        let message = done["message"].as_str().unwrap();
        assert!(message.contains(words), "{words:?} in {message:?}");
        let log = log_shows(&api, build_id, "Failed: ").await;
        assert!(log.contains(words), "{log}");
        assert!(done["digest"].is_null(), "{done}");
    }
    // Nothing reached the registry.
    let repositories = api
        .get("/api/v1/registry/repositories?prefix=broken/")
        .await;
    assert_eq!(repositories["total"], 0, "{repositories}");
}

#[tokio::test]
async fn a_build_is_cancelled_mid_step_and_one_its_dcp_left_is_marked_interrupted() {
    let mut api = with_registry("127.26.0.8:5000").await;
    registry_serving(&api, true).await;
    let base = web_image("market-cancel");
    let id = project(
        &api,
        &json!({
            "repository": "slow/app",
            "dockerfile": {"kind": "form", "instructions": [
                {"op": "FROM", "image": base},
                {"op": "ARG", "name": "FLAVOUR"},
                {"op": "RUN", "command": "echo \"$FLAVOUR\" && sleep 300"},
            ]},
            "build_args": {"FLAVOUR": "slow"},
        }),
    )
    .await;
    let first = build(&api, id, "1").await;
    let log = log_shows(&api, first, "Running in ").await;
    log_shows(&api, first, "\nslow\n").await;
    let container = log
        .split("Running in ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let (status, cancelling) = api
        .post(&format!("/api/v1/image-builds/{first}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 202, "{cancelling}");
    let done = build_ended(&api, first).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    assert_eq!(done["message"], "cancelled by user:admin");
    // The daemon stopped the step and removed its container.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Command::new("docker")
        .args(["inspect", &container])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "container {container} stayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, again) = api
        .post(&format!("/api/v1/image-builds/{first}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409, "{again}");

    // A retried request starts one build.
    let key_post = |key: &'static str| {
        api.http
            .post(
                api.server
                    .url(&format!("/api/v1/image-projects/{id}/builds")),
            )
            .bearer_auth(&api.token)
            .header("Idempotency-Key", key)
            .json(&json!({"tag": "2"}))
            .send()
    };
    let one = key_post("retry-me").await.unwrap();
    assert_eq!(one.status(), 202);
    let one: Value = one.json().await.unwrap();
    let two = key_post("retry-me").await.unwrap();
    assert_eq!(two.status(), 200);
    let two: Value = two.json().await.unwrap();
    assert_eq!(one["id"], two["id"]);
    let second = one["id"].as_i64().unwrap();
    log_shows(&api, second, "Running in ").await;

    // DCP dies mid-build: on its return the build is interrupted, not
    // left running.
    api.server.kill();
    api.server.restart();
    // The old server's kept-alive connections died with it.
    api.http = reqwest::Client::new();
    let done = api.get(&format!("/api/v1/image-builds/{second}")).await;
    assert_eq!(done["state"], "interrupted", "{done}");
    assert!(done["finished_at"].is_string(), "{done}");
}

#[tokio::test]
async fn bad_projects_and_builds_are_refused_naming_the_field() {
    let api = with_registry("127.26.0.9:5000").await;
    let cases = [
        (
            json!({"repository": "base/mine", "dockerfile": {"kind": "text", "dockerfile": "FROM x"}}),
            "repository",
        ),
        (
            json!({"repository": "a", "dockerfile": {"kind": "git", "url": "https://u:p@example.com/a.git", "ref": "main"}}),
            "dockerfile.url",
        ),
        (
            json!({"repository": "a", "dockerfile": {"kind": "git", "url": "ext::sh -c id", "ref": "main"}}),
            "dockerfile.url",
        ),
        (
            json!({"repository": "a", "dockerfile": {"kind": "git", "url": "git://127.26.2.9/a.git", "ref": "--upload-pack=id"}}),
            "dockerfile.ref",
        ),
        (
            json!({"repository": "a", "dockerfile": {"kind": "git", "url": "git://127.26.2.9/a.git", "ref": "main", "path": "../../etc/passwd"}}),
            "dockerfile.path",
        ),
        (
            json!({"repository": "a", "dockerfile": {"kind": "form", "instructions": [
                {"op": "FROM", "image": "busybox"},
                {"op": "RUN", "command": "true\nUSER root"},
            ]}}),
            "dockerfile.instructions[1].command",
        ),
        (
            json!({"repository": "a", "dockerfile": {"kind": "text", "dockerfile": "FROM x"},
                   "media": {"kind": "svn", "url": "svn://127.26.2.9/r", "revision": "HEAD", "subdirectory": "x", "target": "m"}}),
            "media.subdirectory",
        ),
        (
            json!({"repository": "a", "dockerfile": {"kind": "text", "dockerfile": "FROM x"},
                   "media": {"kind": "git", "url": "git://127.26.2.9/r", "revision": "main", "target": "/etc"}}),
            "media.target",
        ),
        (
            json!({"repository": "a", "dockerfile": {"kind": "text", "dockerfile": "FROM x"},
                   "build_args": {"1x": "y"}}),
            "build_args.1x",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = api.post("/api/v1/image-projects", &body).await;
        assert_eq!(status, 422, "{body} → {error}");
        assert_eq!(error["error"]["field"], field, "{body} → {error}");
    }
    let (status, rendered) = api
        .post(
            "/api/v1/image-projects/dockerfile",
            &json!({"instructions": [{"op": "FROM", "image": "busybox"}, {"op": "COPY", "source": "a b", "destination": "/c"}]}),
        )
        .await;
    assert_eq!(status, 200, "{rendered}");
    assert_eq!(
        rendered["dockerfile"],
        "FROM busybox\nCOPY [\"a b\",\"/c\"]\n"
    );

    let id = project(
        &api,
        &json!({"repository": "ok/app", "dockerfile": {"kind": "text", "dockerfile": "FROM x"}}),
    )
    .await;
    let (status, error) = api
        .post(
            &format!("/api/v1/image-projects/{id}/builds"),
            &json!({"tag": "-bad"}),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "tag");
    let (status, _) = api
        .post(
            &format!("/api/v1/image-projects/{id}/builds"),
            &json!({"tag": "1", "build_args": {"A": "x\ny"}}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, taken) = api
        .post(
            "/api/v1/image-projects",
            &json!({"repository": "ok/app", "dockerfile": {"kind": "text", "dockerfile": "FROM y"}}),
        )
        .await;
    assert_eq!(status, 409, "{taken}");

    // A password set stays when a change omits it, and goes with "".
    let git = |password: Option<&str>| {
        let mut source = json!({"kind": "git", "url": "git://127.26.2.9/a.git", "ref": "main"});
        if let Some(p) = password {
            source["password"] = json!(p);
        }
        json!({"repository": "ok/app", "description": "from git", "dockerfile": source})
    };
    for (password, set) in [(Some("pw-1"), true), (None, true), (Some(""), false)] {
        let (status, changed) = api
            .put(&format!("/api/v1/image-projects/{id}"), &git(password))
            .await;
        assert_eq!(status, 200, "{changed}");
        assert_eq!(
            changed["dockerfile"]["password_set"], set,
            "{password:?}: {changed}"
        );
        assert_eq!(changed["description"], "from git");
        assert!(!changed.to_string().contains("pw-1"), "{changed}");
    }
}

/// What the node's published port answers at `path`.
async fn served(address: &str, path: &str) -> Result<String, String> {
    dcp_tests::http_text(&format!("http://{address}:{}{path}", dcp_tests::web_port())).await
}

#[tokio::test]
async fn a_pools_nodes_pull_a_built_tag_from_the_registry_with_a_pass_for_that_pull_alone() {
    let _containers = Cleanup::new("media-web");
    let cloud = Cloud::start_with(
        quick_delays(),
        vec![("DCP_REGISTRY_ADDR".into(), "127.26.0.10:5000".into())],
    )
    .await;
    let api = &cloud.api;
    registry_serving(api, true).await;
    let base = web_image("market-media");
    let git = GitServer::start("127.26.2.5");
    let _ = git.commit(
        "media-web",
        &[("Dockerfile", &format!("FROM {base}\nCOPY site /www/site\n"))],
        "v1",
    );
    let svn = SvnServer::start("127.26.2.6", "reader", "svn-pw-7");
    let first = svn.commit(&[("site/index.html", "media one\n")]);
    let project = project(
        api,
        &json!({
            "repository": "shop/media",
            "dockerfile": {"kind": "git", "url": git.url("media-web"), "ref": "main"},
            "media": {"kind": "svn", "url": svn.url("site"), "revision": first, "target": "site",
                      "username": "reader", "password": "svn-pw-7"},
        }),
    )
    .await;
    let one = build(api, project, "m1").await;
    assert_eq!(build_ended(api, one).await["state"], "succeeded");
    let second = svn.commit(&[("site/index.html", "media two\n")]);
    let (status, changed) = api
        .put(
            &format!("/api/v1/image-projects/{project}"),
            &json!({"repository": "shop/media",
                    "dockerfile": {"kind": "git", "url": git.url("media-web"), "ref": "main"},
                    "media": {"kind": "svn", "url": svn.url("site"), "revision": second,
                              "target": "site", "username": "reader"}}),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let two = build(api, project, "m2").await;
    let two = build_ended(api, two).await;
    assert_eq!(two["state"], "succeeded", "{two}");
    let image = two["image"].as_str().unwrap().replace(":m2", ":m1");
    // Gone from the daemon the nodes share: they must pull.
    for tag in ["m1", "m2"] {
        let _ = Command::new("docker")
            .args(["rmi", &image.replace(":m1", &format!(":{tag}"))])
            .output();
    }

    // A pool of the built image: the expand's nodes pull m1.
    let pool = cloud
        .pool(
            "media-web",
            None,
            json!({"ports": [{"container_port": 80, "host_port": dcp_tests::web_port()}]}),
            json!({}),
        )
        .await;
    let pool_detail = api.get(&format!("/api/v1/pools/{pool}")).await;
    let service_id = pool_detail["service_id"].as_i64().unwrap();
    let service = api.get(&format!("/api/v1/services/{service_id}")).await;
    let (status, changed) = api
        .put(
            &format!("/api/v1/services/{service_id}"),
            &json!({"cluster_id": service["cluster_id"], "name": service["name"],
                    "image": image, "container": service["container"]}),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let expand = cloud
        .task(
            json!({"kind": "expand", "pool_id": pool, "count": 2}),
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(expand["task"]["state"], "succeeded", "{expand:#}");
    let nodes: Vec<String> = expand["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_str().unwrap().to_owned())
        .collect();
    for address in &nodes {
        assert_eq!(
            served(address, "/site/index.html").await.unwrap(),
            "media one\n"
        );
    }
    let said = expand.to_string();
    assert!(said.contains("from DCP's registry"), "{expand:#}");

    // The deploy picks m2 from the built tags and pulls it.
    assert_eq!(tags_of(api, "shop%2Fmedia").await, ["m1", "m2"]);
    let deploy = cloud
        .task(
            json!({"kind": "deploy", "pool_id": pool, "tag": "m2"}),
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(deploy["task"]["state"], "succeeded", "{deploy:#}");
    for address in &nodes {
        assert_eq!(
            served(address, "/site/index.html").await.unwrap(),
            "media two\n"
        );
    }
    // The passes lived for their pulls only: the registry's users are
    // DCP's own again, and nothing of them was kept.
    let htpasswd =
        std::fs::read_to_string(api.server.data_dir.path().join("registry/htpasswd")).unwrap();
    assert_eq!(htpasswd.lines().count(), 1, "{htpasswd}");
    assert!(htpasswd.starts_with("dcp:"), "{htpasswd}");
    let everything = format!("{expand} {deploy}");
    assert!(!everything.contains("pull-0"), "no pass user in the steps");
    assert!(
        !everything.contains("auths"),
        "no client configuration in the steps"
    );
}
