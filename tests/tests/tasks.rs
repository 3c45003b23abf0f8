//! Orchestration end to end: a real `dcp`, the Aliyun simulator in fleet
//! mode (every machine a real `sshd` on its own 127.21.x.y), and real
//! containers on dockerd, published on the nodes' loopback addresses.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use aliyun_sim::Delays;
use dcp_tests::{
    Server, ServerOptions,
    cloud::{Cloud, machine_env, quick_delays},
    docker::{Cleanup, containers_of, web_image, web_image_with},
    sse::Events,
};
use serde_json::{Value, json};
use sqlx::Connection as _;

/// A cluster, a service running `dcp-test/web:1` on the tests' web port, a machine
/// template initialised by `init_group`, and a pool growing from it.
async fn pool(cloud: &Cloud, service: &str, init_group: Option<i64>) -> i64 {
    let container = json!({"ports": [{"container_port": 80, "host_port": dcp_tests::web_port()}],
                           "env": {"MODE": "test"}});
    cloud.pool(service, init_group, container, json!({})).await
}

fn addresses(detail: &Value) -> Vec<String> {
    detail["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_str().unwrap().to_owned())
        .collect()
}

/// What the node's published port answers.
async fn page(address: &str) -> Result<String, String> {
    dcp_tests::http_text(&format!("http://{address}:{}/", dcp_tests::web_port())).await
}

fn millis(at: &Value) -> i128 {
    let at = time::OffsetDateTime::parse(
        at.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    at.unix_timestamp_nanos() / 1_000_000
}

#[tokio::test]
async fn expand_shrink_and_deploy_run_real_containers_on_fleet_nodes() {
    let _containers = Cleanup::new("web-esd");
    let _ = web_image("2");
    let cloud = Cloud::start(quick_delays()).await;
    let pool = pool(&cloud, "web-esd", None).await;

    // Expand by 5: five machines made and initialised, the service's
    // container on each, answering on the node's own address.
    let expand = cloud
        .task(
            json!({"kind": "expand", "pool_id": pool, "count": 5}),
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(expand["task"]["state"], "succeeded", "{expand:#}");
    assert_eq!(expand["task"]["counts"]["succeeded"], 5);
    let nodes = addresses(&expand);
    for address in &nodes {
        assert!(address.starts_with("127.21."), "{address}");
        assert_eq!(page(address).await.unwrap(), "web 1\n", "{address}");
    }
    assert_eq!(containers_of("web-esd").len(), 5);
    let listed = cloud.api.get(&format!("/api/v1/pools/{pool}/nodes")).await;
    assert_eq!(listed["total"], 5, "{listed}");
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "running"),
        "{listed}"
    );

    // Shrink 2 by address: containers gone, machines returned, quota charged.
    let (gone, kept) = nodes.split_at(2);
    let shrink = cloud
        .task(
            json!({"kind": "shrink", "pool_id": pool, "addresses": gone}),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(shrink["task"]["state"], "succeeded", "{shrink:#}");
    assert_eq!(containers_of("web-esd").len(), 3);
    for address in gone {
        assert!(page(address).await.is_err(), "{address} still answers");
    }
    for node in shrink["nodes"].as_array().unwrap() {
        let machine = cloud
            .api
            .get(&format!("/api/v1/machines/{}", node["machine_id"]))
            .await;
        assert_eq!(machine["machine"]["state"], "deleted", "{machine}");
        assert_eq!(machine["machine"]["charged_hours"], 1, "{machine}");
    }
    let live = cloud.sim.instances();
    assert_eq!(live.len(), 3, "{live:?}");

    // Deploy tag 2 in batches of 2: never more than 2 nodes in
    // start_service at once (from the recorded timings); all on the new tag.
    let deploy = cloud
        .task(
            json!({"kind": "deploy", "pool_id": pool, "tag": "2", "batch_size": 2}),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(deploy["task"]["state"], "succeeded", "{deploy:#}");
    let spans: Vec<(i128, i128)> = deploy["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let step = &n["steps"][0];
            (millis(&step["started_at"]), millis(&step["finished_at"]))
        })
        .collect();
    for (start, _) in &spans {
        let at_once = spans
            .iter()
            .filter(|(s, f)| s <= start && start < f)
            .count();
        assert!(
            at_once <= 2,
            "{at_once} nodes in start_service at once: {spans:?}"
        );
    }
    for address in kept {
        assert_eq!(page(address).await.unwrap(), "web 2\n", "{address}");
    }
    let service = cloud.api.get("/api/v1/services").await;
    assert_eq!(service["items"][0]["image"], "dcp-test/web:2", "{service}");
    assert_eq!(containers_of("web-esd").len(), 3);
}

/// Rolls `service` back to `tag` (its one pool) and waits for the deploy.
async fn rolled_back(cloud: &Cloud, service: i64, tag: &str) -> Value {
    let (status, rollback) = cloud
        .api
        .post(
            &format!("/api/v1/services/{service}/rollback"),
            &json!({"tag": tag, "batch_size": 3}),
        )
        .await;
    assert_eq!(status, 202, "{rollback}");
    assert_eq!(rollback["tag"], tag, "{rollback}");
    let tasks = rollback["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "one deploy per pool with nodes: {rollback}");
    cloud
        .settle_task(tasks[0]["id"].as_i64().unwrap(), Duration::from_secs(120))
        .await
}

#[tokio::test]
async fn a_deploy_stops_at_the_first_unhealthy_node_and_rollback_restores_the_last_good_tag() {
    let _containers = Cleanup::new("web-hc");
    let _ = web_image("2");
    let _ = web_image_with("3", false);
    let cloud = Cloud::start(quick_delays()).await;
    let pool = pool(&cloud, "web-hc", None).await;
    let service_id = cloud.api.get(&format!("/api/v1/pools/{pool}")).await["service_id"]
        .as_i64()
        .unwrap();
    let service_path = format!("/api/v1/services/{service_id}");
    let mut service = cloud.api.get(&service_path).await;
    assert!(service["rollback_tag"].is_null(), "{service}");
    // The service declares a health check: GET /healthz on its port 80.
    let check = json!({"probe": {"http": {"path": "/healthz", "port": 80}},
                       "interval_secs": 1, "timeout_secs": 2, "retries": 2});
    let mut input = json!({
        "cluster_id": service["cluster_id"], "name": "web-hc", "image": service["image"],
        "container": service["container"],
    });
    input["container"]["health_check"] =
        json!({"probe": {"http": {"path": "/healthz", "port": 9}}});
    let (status, refused) = cloud.api.put(&service_path, &input).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["error"]["field"], "container.health_check.probe.http.port",
        "{refused}"
    );
    input["container"]["health_check"] = check;
    let (status, updated) = cloud.api.put(&service_path, &input).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["container"]["health_check"]["retries"], 2);
    assert_eq!(updated["container"]["health_check"]["start_period_secs"], 0);

    let expand = cloud
        .task(
            json!({"kind": "expand", "pool_id": pool, "count": 3}),
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(expand["task"]["state"], "succeeded", "{expand:#}");
    let nodes = addresses(&expand);
    let output = expand["nodes"][0]["steps"][1]["output"].as_str().unwrap();
    assert!(output.contains("is healthy (GET http://"), "{output}");
    // Each node's container, as Docker on the node reports it, its check
    // asked once; its log holds the checks' requests.
    let listed = cloud.api.get(&format!("/api/v1/pools/{pool}/nodes")).await;
    let first_node = listed["items"][0].clone();
    assert_eq!(first_node["tag"], "1", "{listed}");
    let node_path = format!("/api/v1/pools/{pool}/nodes/{}", first_node["id"]);
    let container = cloud.api.get(&format!("{node_path}/container")).await;
    assert_eq!(container["state"], "running", "{container}");
    assert_eq!(container["tag"], "1", "{container}");
    assert_eq!(container["health"], "healthy", "{container}");
    assert_eq!(container["restart_count"], 0, "{container}");
    let log = cloud.api.get(&format!("{node_path}/logs?tail=5")).await;
    let lines = log["lines"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 5, "{log}");
    assert!(
        lines
            .iter()
            .all(|l| l["text"].as_str().unwrap().contains("response:")),
        "{log}"
    );
    // Following: only what came after the last line seen.
    let seen = lines.last().unwrap().clone();
    page(first_node["address"].as_str().unwrap()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let newer = loop {
        let since = seen["at"].as_str().unwrap();
        let more = cloud
            .api
            .get(&format!("{node_path}/logs?since={since}"))
            .await;
        let more = more["lines"].as_array().unwrap().clone();
        if !more.is_empty() {
            break more;
        }
        assert!(Instant::now() < deadline, "no line after {seen}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(!newer.contains(&seen), "{newer:?} repeats {seen}");
    let (status, bad) = cloud
        .api
        .get_status(&format!("{node_path}/logs?tail=0"))
        .await;
    assert_eq!(
        (status, bad["error"]["field"].as_str()),
        (400, Some("tail")),
        "{bad}"
    );
    // Nothing to go back to yet.
    let (status, nothing) = cloud
        .api
        .post(&format!("{service_path}/rollback"), &json!({"tag": "1"}))
        .await;
    assert_eq!(status, 409, "{nothing}");

    let deploy = cloud
        .task(
            json!({"kind": "deploy", "pool_id": pool, "tag": "2", "batch_size": 1}),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(deploy["task"]["state"], "succeeded", "{deploy:#}");
    service = cloud.api.get(&service_path).await;
    assert_eq!(service["rollback_tag"], "1", "{service}");

    // Tag 3 serves its page but never passes its check: the deploy stops
    // at its first node, the others keep serving tag 2.
    let sick = cloud
        .task(
            json!({"kind": "deploy", "pool_id": pool, "tag": "3", "batch_size": 1}),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(sick["task"]["state"], "failed", "{sick:#}");
    let reason = sick["task"]["reason"].as_str().unwrap();
    assert!(reason.contains("2 not reached"), "{reason}");
    let first = &sick["nodes"][0];
    assert_eq!(first["state"], "failed", "{sick:#}");
    let error = first["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("is unhealthy: GET http://") && error.contains("/healthz failed 2 times"),
        "{error}"
    );
    let first = first["address"].as_str().unwrap();
    assert_eq!(page(first).await.unwrap(), "web 3\n");
    for node in &sick["nodes"].as_array().unwrap()[1..] {
        assert_eq!(node["state"], "skipped", "{sick:#}");
        let address = node["address"].as_str().unwrap();
        assert_eq!(page(address).await.unwrap(), "web 2\n", "{address}");
    }
    service = cloud.api.get(&service_path).await;
    assert_eq!(service["image"], "dcp-test/web:2", "{service}");
    assert_eq!(service["rollback_tag"], "2", "{service}");
    // The unhealthy node runs tag 3 and says why its check fails.
    let sick_node = sick["nodes"][0]["node_id"].clone();
    let container = cloud
        .api
        .get(&format!("/api/v1/pools/{pool}/nodes/{sick_node}/container"))
        .await;
    assert_eq!(container["tag"], "3", "{container}");
    assert_eq!(container["health"], "unhealthy", "{container}");
    assert!(
        container["health_detail"].as_str().unwrap().contains("404"),
        "{container}"
    );

    // A rollback to what the caller no longer sees is refused; to tag 2,
    // it puts every node back on tag 2.
    let (status, stale) = cloud
        .api
        .post(&format!("{service_path}/rollback"), &json!({"tag": "1"}))
        .await;
    assert_eq!(status, 409, "{stale}");
    let back = rolled_back(&cloud, service_id, "2").await;
    assert_eq!(back["task"]["state"], "succeeded", "{back:#}");
    for address in &nodes {
        assert_eq!(page(address).await.unwrap(), "web 2\n", "{address}");
    }
    service = cloud.api.get(&service_path).await;
    assert_eq!(service["rollback_tag"], "1", "{service}");
    assert_eq!(containers_of("web-hc").len(), 3);
    let listed = cloud.api.get(&format!("/api/v1/pools/{pool}/nodes")).await;
    let tags: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["tag"])
        .collect();
    assert_eq!(tags, [&json!("2"); 3], "{listed}");
    // The service's tasks: the expand, two deploys and the rollback's.
    let tasks = cloud
        .api
        .get(&format!("/api/v1/tasks?service_id={service_id}"))
        .await;
    assert_eq!(tasks["total"], 4, "{tasks}");
}

#[tokio::test]
async fn a_failed_init_fails_only_its_node_and_retry_failed_finishes_the_task() {
    let _containers = Cleanup::new("web-retry");
    let cloud = Cloud::start(quick_delays()).await;
    let marker = tempfile::tempdir().unwrap();
    // The first machine to initialise finds its disk "missing".
    let script = format!(
        "mkdir {}/first 2>/dev/null && {{ echo 'disk /data is missing' >&2; exit 3; }}; echo disk ok",
        marker.path().display()
    );
    let group = cloud.group("disk-check", &script).await;
    let pool = pool(&cloud, "web-retry", Some(group)).await;
    let expand = cloud
        .task(
            json!({"kind": "expand", "pool_id": pool, "count": 3}),
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(expand["task"]["state"], "partially_failed", "{expand:#}");
    let counts = &expand["task"]["counts"];
    assert_eq!(
        (counts["succeeded"].as_u64(), counts["failed"].as_u64()),
        (Some(2), Some(1))
    );
    let failed = expand["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["state"] == "failed")
        .unwrap();
    assert_eq!(failed["steps"][0]["state"], "failed");
    assert!(
        failed["steps"][0]["error"]
            .as_str()
            .unwrap()
            .contains("disk /data is missing"),
        "{failed:#}"
    );
    assert_eq!(failed["steps"][1]["state"], "skipped");
    assert_eq!(containers_of("web-retry").len(), 2);
    // The failed machine is in no pool: it was released before the task
    // ended, and the task says so.
    let undone = &failed["steps"][0]["compensation"];
    assert_eq!(undone["state"], "succeeded", "{failed:#}");
    assert!(
        undone["output"].as_str().unwrap().ends_with(" released"),
        "{failed:#}"
    );
    assert_eq!(cloud.sim.instances().len(), 2);

    // Fix the command, retry the failed node: the task succeeds.
    let commands = cloud.api.get("/api/v1/commands").await;
    let command = commands["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "disk-check")
        .unwrap()
        .clone();
    let (status, body) = cloud
        .api
        .put(
            &format!("/api/v1/commands/{}", command["id"]),
            &json!({"name": "disk-check", "mode": "shell", "script": "echo disk ok"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = expand["task"]["id"].as_i64().unwrap();
    let (status, body) = cloud
        .api
        .post(&format!("/api/v1/tasks/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let retried = cloud.settle_task(id, Duration::from_secs(120)).await;
    assert_eq!(retried["task"]["state"], "succeeded", "{retried:#}");
    assert_eq!(containers_of("web-retry").len(), 3);
    // The retry made a machine in place of the released one: three instances.
    let live = cloud.sim.instances().len();
    assert_eq!(live, 3);
    let released = cloud.api.get("/api/v1/machines?state=deleted").await;
    assert_eq!(released["total"], 1, "{released:#}");
    // Retrying a succeeded task is refused, saying why.
    let (status, body) = cloud
        .api
        .post(&format!("/api/v1/tasks/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("succeeded"),
        "{body}"
    );
}

/// A pool's nodes (a bare list or a page of them).
async fn pool_nodes(cloud: &Cloud, pool: i64) -> Vec<Value> {
    let listed = cloud.api.get(&format!("/api/v1/pools/{pool}/nodes")).await;
    listed
        .as_array()
        .or_else(|| listed["items"].as_array())
        .unwrap_or_else(|| panic!("{listed}"))
        .clone()
}

async fn machine_state(cloud: &Cloud, id: &Value) -> String {
    let detail = cloud.api.get(&format!("/api/v1/machines/{id}")).await;
    detail["machine"]["state"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn removing_a_node_stops_its_container_keeps_or_releases_its_machine_and_frees_its_port() {
    let _containers = Cleanup::new("web-rm");
    let cloud = Cloud::start(quick_delays()).await;
    let pool = pool(&cloud, "web-rm", None).await;
    let expand = cloud
        .task(
            json!({"kind": "expand", "pool_id": pool, "count": 2}),
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(expand["task"]["state"], "succeeded", "{expand:#}");
    let nodes = pool_nodes(&cloud, pool).await;
    let (kept, released) = (nodes[0].clone(), nodes[1].clone());
    let kept_address = kept["address"].as_str().unwrap().to_owned();

    // Remove one, keeping its machine: a task, and the node reads
    // "removing" until it succeeds; asking again answers the same task.
    let path = format!(
        "/api/v1/pools/{pool}/nodes/{}?release_machine=false",
        kept["id"]
    );
    let (status, task) = cloud.api.delete(&path).await;
    assert_eq!(
        (status, task["kind"].as_str()),
        (202, Some("shrink")),
        "{task}"
    );
    let listed = pool_nodes(&cloud, pool).await;
    let node = listed.iter().find(|n| n["id"] == kept["id"]).unwrap();
    assert_eq!(node["state"], "removing", "{listed:?}");
    let (status, again) = cloud.api.delete(&path).await;
    assert_eq!((status, &again["id"]), (202, &task["id"]), "{again}");
    let done = cloud
        .settle_task(task["id"].as_i64().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(done["task"]["state"], "succeeded", "{done:#}");
    assert_eq!(containers_of("web-rm").len(), 1);
    assert!(
        page(&kept_address).await.is_err(),
        "its container still answers"
    );
    assert_eq!(pool_nodes(&cloud, pool).await.len(), 1);
    assert_eq!(machine_state(&cloud, &kept["machine_id"]).await, "ready");
    let (status, body) = cloud.api.delete(&path).await;
    assert_eq!(status, 404, "{body}");

    // Remove the other, releasing its machine.
    let (status, task) = cloud
        .api
        .delete(&format!(
            "/api/v1/pools/{pool}/nodes/{}?release_machine=true",
            released["id"]
        ))
        .await;
    assert_eq!(status, 202, "{task}");
    let done = cloud
        .settle_task(task["id"].as_i64().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(done["task"]["state"], "succeeded", "{done:#}");
    assert_eq!(
        machine_state(&cloud, &released["machine_id"]).await,
        "deleted"
    );
    assert!(containers_of("web-rm").is_empty());
    assert_eq!(cloud.sim.instances().len(), 1, "only the kept machine runs");

    // The kept machine joins again; something else holds its port: the
    // deploy says what docker said, not docker's usage hint.
    let (status, body) = cloud
        .api
        .post(
            &format!("/api/v1/pools/{pool}/nodes"),
            &json!({"machine_ids": [kept["machine_id"]]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let squatter = std::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            "web-rm-squatter",
            "--label",
            "dcp.service=web-rm",
        ])
        .args([
            "-p",
            &format!("{kept_address}:{}:80", dcp_tests::web_port()),
            &web_image("1"),
        ])
        .output()
        .unwrap();
    assert!(squatter.status.success(), "{squatter:?}");
    let deploy = cloud
        .task(
            json!({"kind": "deploy", "pool_id": pool, "tag": "1"}),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(deploy["task"]["state"], "failed", "{deploy:#}");
    let error = deploy["nodes"][0]["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("port is already allocated") && !error.contains("--help"),
        "{error}"
    );
    // With the port free, the same deploy succeeds on retry.
    let gone = std::process::Command::new("docker")
        .args(["rm", "-f", "web-rm-squatter"])
        .output()
        .unwrap();
    assert!(gone.status.success(), "{gone:?}");
    let id = deploy["task"]["id"].as_i64().unwrap();
    let (status, body) = cloud
        .api
        .post(&format!("/api/v1/tasks/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let retried = cloud.settle_task(id, Duration::from_secs(60)).await;
    assert_eq!(retried["task"]["state"], "succeeded", "{retried:#}");
    assert_eq!(page(&kept_address).await.unwrap(), "web 1\n");
}

#[tokio::test]
async fn a_host_killed_mid_expand_finishes_it_after_restart_without_duplicates() {
    let _containers = Cleanup::new("web-kill");
    let mut cloud = Cloud::start_with(
        quick_delays(),
        vec![("DCP_TASK_LEASE_SECS".into(), "2".into())],
    )
    .await;
    let pool = pool(&cloud, "web-kill", None).await;
    let (status, task) = cloud
        .api
        .post(
            "/api/v1/tasks",
            &json!({"kind": "expand", "pool_id": pool, "count": 20, "batch_size": 20}),
        )
        .await;
    assert_eq!(status, 202, "{task}");
    let id = task["id"].as_i64().unwrap();
    // Kill it once work is under way on every front: some nodes done, others not.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let t = cloud.api.get(&format!("/api/v1/tasks/{id}")).await;
        let done = t["task"]["counts"]["succeeded"].as_u64().unwrap_or(0);
        if done >= 3 {
            assert!(done < 20, "the task finished before the kill: {t:#}");
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {t:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cloud.api.server.kill();
    cloud.api.server.restart();
    // Pooled connections went down with the old process.
    cloud.api.http = reqwest::Client::new();
    let done = cloud.settle_task(id, Duration::from_secs(240)).await;
    assert_eq!(done["task"]["state"], "succeeded", "{done:#}");
    let live = cloud.sim.instances().len();
    assert_eq!(live, 20, "exactly 20 instances");
    assert_eq!(containers_of("web-kill").len(), 20, "exactly 20 containers");
    for address in addresses(&done) {
        assert_eq!(page(&address).await.unwrap(), "web 1\n", "{address}");
    }
}

#[tokio::test]
async fn replicas_on_postgresql_share_a_task_and_one_finishes_what_a_killed_one_began() {
    let _containers = Cleanup::new("web-replicas");
    let db = dcp_tests::Backend::Postgres.database().await;
    let lease = ("DCP_TASK_LEASE_SECS".to_owned(), "2".to_owned());
    let mut cloud = Cloud::start_on(
        quick_delays(),
        ServerOptions {
            database_url: Some(db.url.clone()),
            env: vec![lease.clone()],
            ..ServerOptions::default()
        },
    )
    .await;
    // The second replica: same database, same data volume.
    let mut second = Server::start(&ServerOptions {
        database_url: Some(db.url.clone()),
        env: machine_env().into_iter().chain([lease]).collect(),
        shared_data_dir: Some(cloud.api.server.data_dir.path().to_path_buf()),
        ..ServerOptions::default()
    });
    let pool = pool(&cloud, "web-replicas", None).await;
    let (status, task) = cloud
        .api
        .post(
            "/api/v1/tasks",
            &json!({"kind": "expand", "pool_id": pool, "count": 8}),
        )
        .await;
    assert_eq!(status, 202, "{task}");
    let id = task["id"].as_i64().unwrap();

    // Once it is under way, kill whichever replica drives it.
    let mut pg = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let owner = loop {
        let t = cloud.api.get(&format!("/api/v1/tasks/{id}")).await;
        let (owner,): (Option<String>,) =
            sqlx::query_as("select lease_owner from tasks where id = $1")
                .bind(id)
                .fetch_one(&mut pg)
                .await
                .unwrap();
        if t["task"]["counts"]["succeeded"].as_u64().unwrap_or(0) >= 2 {
            assert!(
                t["task"]["state"] == "running",
                "done before the kill: {t:#}"
            );
            break owner.unwrap();
        }
        assert!(Instant::now() < deadline, "no progress: {t:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pid = |server: &Server| format!("{}-", server.pid());
    let survivor = if owner.starts_with(&pid(&cloud.api.server)) {
        cloud.api.server.kill();
        second.base_url.clone()
    } else {
        assert!(owner.starts_with(&pid(&second)), "{owner}");
        second.kill();
        cloud.api.server.base_url.clone()
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    let done = loop {
        let t: Value = http
            .get(format!("{survivor}/api/v1/tasks/{id}"))
            .bearer_auth(&cloud.api.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if t["task"]["state"] != "running" {
            break t;
        }
        assert!(Instant::now() < deadline, "not finished: {t:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(done["task"]["state"], "succeeded", "{done:#}");
    let (owner,): (Option<String>,) = sqlx::query_as("select lease_owner from tasks where id = $1")
        .bind(id)
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert_eq!(owner, None, "the survivor let go of the finished task");
    // Exactly once: eight machines, eight containers, every node answering.
    assert_eq!(cloud.sim.instances().len(), 8);
    assert_eq!(containers_of("web-replicas").len(), 8);
    for address in addresses(&done) {
        assert_eq!(page(&address).await.unwrap(), "web 1\n", "{address}");
    }
}

/// Applies a task event to what a client holds, as the API document says:
/// a snapshot replaces it, the others replace their part.
fn apply(held: &mut Value, name: &str, data: Value) {
    let node = |held: &mut Value, index: &Value| -> usize {
        held["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .position(|n| n["index"] == *index)
            .unwrap_or_else(|| panic!("no node {index} in {held}"))
    };
    match name {
        "snapshot" => *held = data,
        "task" => held["task"] = data,
        "node" => {
            let n = node(held, &data["index"]);
            for (field, value) in data.as_object().unwrap() {
                held["nodes"][n][field] = value.clone();
            }
        }
        "step" => {
            let n = node(held, &data["node"]);
            let i = usize::try_from(data["index"].as_u64().unwrap()).unwrap();
            assert!(
                i < held["nodes"][n]["steps"].as_array().unwrap().len(),
                "{data}"
            );
            held["nodes"][n]["steps"][i] = data["step"].clone();
        }
        other => panic!("unexpected event {other}: {data}"),
    }
}

/// Starts an expand of one node on `pool` (with task template `template`,
/// or the pool's) while the cloud holds new instances pending, and cancels
/// it once the cloud has accepted the instance but not made it; answers
/// the task's id.
async fn cancel_while_pending(cloud: &Cloud, pool: i64, template: Option<i64>) -> i64 {
    cloud.sim.hold_pending(true);
    let (status, task) = cloud
        .api
        .post(
            "/api/v1/tasks",
            &json!({"kind": "expand", "pool_id": pool, "count": 1, "template_id": template}),
        )
        .await;
    assert_eq!(status, 202, "{task}");
    let id = task["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cloud
        .sim
        .instances()
        .iter()
        .any(|i| i.status == aliyun_sim::InstanceStatus::Pending)
    {
        assert!(
            Instant::now() < deadline,
            "no instance was asked for: {:#}",
            cloud.api.get(&format!("/api/v1/tasks/{id}")).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = cloud
        .api
        .post(&format!("/api/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    // The cloud makes the instance only after the cancel.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = cloud.api.get(&format!("/api/v1/tasks/{id}")).await;
        if t["nodes"][0]["steps"][0]["state"] != "running" {
            break;
        }
        assert!(Instant::now() < deadline, "create_vm was not cut: {t:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cloud.sim.hold_pending(false);
    id
}

#[tokio::test]
async fn a_cancelled_expand_releases_the_machine_the_cloud_made_after_the_cancel() {
    let cloud = Cloud::start(quick_delays()).await;
    let pool = pool(&cloud, "web-cancel", None).await;
    let id = cancel_while_pending(&cloud, pool, None).await;
    // The instance runs, and is then released: gone from the cloud, the
    // machine released, the task cancelled saying so.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (task, machine) = loop {
        let task = cloud.api.get(&format!("/api/v1/tasks/{id}")).await;
        let released = cloud.api.get("/api/v1/machines?state=deleted").await;
        let instances = cloud.sim.instances();
        if task["task"]["state"] == "cancelled"
            && task["task"]["command"].is_null()
            && released["total"] == 1
            && instances.is_empty()
        {
            break (task, released["items"][0].clone());
        }
        assert!(
            Instant::now() < deadline,
            "the machine was not released: {task:#}\n{:#}\n{instances:?}",
            cloud.api.get("/api/v1/machines").await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let step = &task["nodes"][0]["steps"][0];
    assert_eq!(step["state"], "failed", "{task:#}");
    assert_eq!(step["compensation"]["state"], "succeeded", "{task:#}");
    let name = machine["name"].as_str().unwrap();
    assert_eq!(
        step["compensation"]["output"],
        format!("machine {name} released"),
        "{task:#}"
    );
    assert!(task["nodes"][0]["node_id"].is_null(), "{task:#}");
    // It had run: the cloud made it after the cancel, and it was still released.
    let detail = cloud
        .api
        .get(&format!("/api/v1/machines/{}", machine["id"]))
        .await;
    let log: Vec<&str> = detail["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert!(log.iter().any(|l| l.contains("is running at")), "{log:#?}");
    assert!(
        log.iter().any(|l| l.starts_with("released: instance")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn a_cancelled_expand_whose_template_keeps_machines_hands_them_to_the_pool() {
    let cloud = Cloud::start(quick_delays()).await;
    let pool = pool(&cloud, "web-keep", None).await;
    let (status, template) = cloud
        .api
        .post(
            "/api/v1/task-templates",
            &json!({"name": "expand-keep", "purpose": "expand", "steps": [
                {"name": "create_vm", "leftover_machines": "hand_to_pool"},
                {"name": "start_service"},
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    assert_eq!(template["steps"][0]["leftover_machines"], "hand_to_pool");
    let id = cancel_while_pending(&cloud, pool, template["id"].as_i64()).await;
    let task = cloud.settle_task(id, Duration::from_secs(120)).await;
    assert_eq!(task["task"]["state"], "cancelled", "{task:#}");
    let node = &task["nodes"][0];
    let undone = &node["steps"][0]["compensation"];
    assert_eq!(undone["state"], "succeeded", "{task:#}");
    let address = node["address"].as_str().unwrap();
    assert!(
        undone["output"]
            .as_str()
            .unwrap()
            .ends_with(&format!("handed to pool web-keep-a as node {address}")),
        "{task:#}"
    );
    // The machine is ready and a node of the pool; its instance runs.
    assert!(node["node_id"].is_i64(), "{task:#}");
    let machine = cloud
        .api
        .get(&format!("/api/v1/machines/{}", node["machine_id"]))
        .await;
    assert_eq!(machine["machine"]["state"], "ready", "{machine:#}");
    let instances = cloud.sim.instances();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].status, aliyun_sim::InstanceStatus::Running);
}

#[tokio::test]
async fn a_watched_idle_task_sends_nothing_until_it_changes_and_sigterm_ends_its_stream() {
    // Machines stay pending for an hour: the task runs, idle, in create_vm.
    let mut cloud = Cloud::start(Delays {
        pending: Duration::from_secs(3600),
        ..quick_delays()
    })
    .await;
    let pool = pool(&cloud, "web-watched", None).await;
    let (status, task) = cloud
        .api
        .post(
            "/api/v1/tasks",
            &json!({"kind": "expand", "pool_id": pool, "count": 1}),
        )
        .await;
    assert_eq!(status, 202, "{task}");
    let id = task["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = cloud.api.get(&format!("/api/v1/tasks/{id}")).await;
        if t["nodes"][0]["steps"][0]["state"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "create_vm never started: {t:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = cloud.api.server.base_url.clone();
    let mut events = Events::open(
        &base,
        &cloud.api.token,
        &format!("/api/v1/tasks/{id}/events"),
    )
    .await;
    let (name, snapshot) = events.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(name, "snapshot", "{snapshot}");
    assert_eq!(snapshot["task"]["state"], "running", "{snapshot}");
    assert_eq!(snapshot["nodes"][0]["steps"][0]["state"], "running");

    // Nothing changes while the machine is pending, so the next event is
    // the pause asked for now: just the task's fields, not the task again.
    let (status, body) = cloud
        .api
        .post(&format!("/api/v1/tasks/{id}/pause"), &json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let (name, changed) = events.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(name, "task", "{changed}");
    assert_eq!(changed["command"], "pause", "{changed}");
    assert!(changed.get("nodes").is_none(), "{changed}");

    // The open stream does not hold the shutdown up, and ends cleanly.
    let status = cloud.api.server.terminate(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let mut rest = Vec::new();
    while let Some(event) = events.next(Duration::from_secs(10)).await {
        rest.push(event);
    }
    assert!(rest.iter().all(|(name, _)| name != "snapshot"), "{rest:?}");
}

#[tokio::test]
async fn task_events_on_every_replica_add_up_to_the_task() {
    let db = dcp_tests::Backend::Postgres.database().await;
    let cloud = Cloud::start_on(
        quick_delays(),
        ServerOptions {
            database_url: Some(db.url.clone()),
            ..ServerOptions::default()
        },
    )
    .await;
    // A second replica: whichever one drives the task, the other learns
    // of its changes only through the database.
    let second = Server::start(&ServerOptions {
        database_url: Some(db.url.clone()),
        env: machine_env(),
        shared_data_dir: Some(cloud.api.server.data_dir.path().to_path_buf()),
        ..ServerOptions::default()
    });
    let group = cloud
        .group(
            "no-disk",
            "echo checking; echo 'disk /data is missing' >&2; exit 3",
        )
        .await;
    let pool = pool(&cloud, "web-events", Some(group)).await;
    let (status, task) = cloud
        .api
        .post(
            "/api/v1/tasks",
            &json!({"kind": "expand", "pool_id": pool, "count": 3, "batch_size": 1}),
        )
        .await;
    assert_eq!(status, 202, "{task}");
    let id = task["id"].as_i64().unwrap();
    let token = cloud.api.token.clone();
    let follow = |base: String, token: String| async move {
        let mut events = Events::open(&base, &token, &format!("/api/v1/tasks/{id}/events")).await;
        let mut seen = Vec::new();
        let mut held = Value::Null;
        while let Some((name, data)) = events.next(Duration::from_secs(120)).await {
            let before = held.clone();
            apply(&mut held, &name, data.clone());
            // Every event changes something: nothing is sent twice.
            assert_ne!(before, held, "{name} changed nothing: {data}");
            seen.push(name);
        }
        (seen, held)
    };
    let (first, second_seen) = tokio::join!(
        follow(cloud.api.server.base_url.clone(), token.clone()),
        follow(second.base_url.clone(), token),
    );
    let detail = cloud.api.get(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!(detail["task"]["state"], "failed", "{detail:#}");
    for (seen, held) in [first, second_seen] {
        // One snapshot, then changes only: the steps and nodes as they
        // went, and the task's state.
        assert_eq!(
            seen.first().map(String::as_str),
            Some("snapshot"),
            "{seen:?}"
        );
        assert_eq!(
            seen.iter().filter(|n| *n == "snapshot").count(),
            1,
            "{seen:?}"
        );
        for kind in ["step", "node", "task"] {
            assert!(seen.iter().any(|n| n == kind), "no {kind} event: {seen:?}");
        }
        assert_eq!(held, detail, "{seen:?}");
    }
}
