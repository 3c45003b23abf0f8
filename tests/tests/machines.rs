//! Machines end to end: a real `dcp`, the aliyun plugin, and the Aliyun
//! simulator in fleet mode (each running instance is a real `sshd` on its
//! own 127.21.x.y), so init really runs over SSH.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, time::Duration};

use aliyun_sim::Faults;
use dcp_tests::{
    cloud::{Cloud, endpoints, quick_delays},
    fleet::Fleet,
};
use serde_json::{Value, json};

fn ids(machines: &Value) -> Vec<i64> {
    machines
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}

fn states(details: &[Value]) -> Vec<String> {
    details
        .iter()
        .map(|d| d["machine"]["state"].as_str().unwrap().to_owned())
        .collect()
}

fn log_text(detail: &Value) -> String {
    detail["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_machines_are_created_initialised_used_and_released() {
    let mut cloud = Cloud::start(quick_delays()).await;
    let init = cloud
        .group("init-check", "echo dcp-init-ok on $(hostname); id -un")
        .await;
    let template = cloud
        .template("web", Some(init), json!({"quota_hours": 10}))
        .await;

    let (status, created) = cloud
        .api
        .post(
            "/api/v1/machines",
            &json!({"template_id": template, "count": 5, "idempotency_key": "first-five"}),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let machines = ids(&created);
    assert_eq!(machines.len(), 5);
    assert!(
        created
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["state"] == "creating")
    );

    // The same key again answers the same machines and creates nothing.
    let (status, again) = cloud
        .api
        .post(
            "/api/v1/machines",
            &json!({"template_id": template, "count": 5, "idempotency_key": "first-five"}),
        )
        .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(ids(&again), machines);

    let details = cloud.settle(&machines, Duration::from_secs(90)).await;
    assert_eq!(states(&details), vec!["ready"; 5], "{details:#?}");
    for detail in &details {
        let log = log_text(detail);
        assert!(log.contains("init stdout: dcp-init-ok on"), "{log}");
        assert!(log.contains("init stdout: root"), "{log}");
        let timeline: Vec<&str> = detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["state"].as_str().unwrap())
            .collect();
        assert_eq!(timeline, ["creating", "starting", "initializing", "ready"]);
        let address = detail["machine"]["address"].as_str().unwrap();
        assert!(address.starts_with("127.21."), "{address}");
    }
    let live = cloud.sim.instances();
    assert_eq!(live.len(), 5, "exactly one instance per machine: {live:?}");
    // Each init run is titled by the machine it prepared, then its group.
    let runs = cloud.api.get("/api/v1/executions?per_page=50").await;
    let mut titles: Vec<&str> = runs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    titles.sort_unstable();
    let mut expected: Vec<String> = details
        .iter()
        .map(|d| {
            let name = d["machine"]["name"].as_str().unwrap();
            format!("init of machine {name}: init-check")
        })
        .collect();
    expected.sort_unstable();
    assert_eq!(titles, expected);

    // The key downloads, and logs in to the machine.
    let id = machines[0];
    let reply = cloud
        .api
        .http
        .get(
            cloud
                .api
                .server
                .url(&format!("/api/v1/machines/{id}/key.pem")),
        )
        .bearer_auth(&cloud.api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert!(
        reply.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".pem")
    );
    let key = reply.text().await.unwrap();
    assert!(key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let key_file = cloud.dir.path().join("downloaded.pem");
    std::fs::write(&key_file, &key).unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let address = details[0]["machine"]["address"].as_str().unwrap();
    let ssh = std::process::Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-i",
        ])
        .arg(&key_file)
        .arg(format!("root@{address}"))
        .arg("echo logged-in")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ssh.stdout).trim(),
        "logged-in",
        "{ssh:?}"
    );

    // Executions reach machines by id, with their own keys.
    let done = cloud.run("echo hello from machine", &machines).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");

    // A machine in a pool cannot be released; out of the pool it can.
    let (_, cluster) = cloud
        .api
        .post("/api/v1/clusters", &json!({"name": "shop"}))
        .await;
    let (_, service) = cloud
        .api
        .post(
            "/api/v1/services",
            &json!({"cluster_id": cluster["id"], "name": "web", "image": "nginx:1.25"}),
        )
        .await;
    let (status, pool) = cloud
        .api
        .post(
            "/api/v1/pools",
            &json!({"service_id": service["id"], "name": "web-pool", "template_id": template}),
        )
        .await;
    assert_eq!(status, 201, "{pool}");
    let pool_id = pool["id"].as_i64().unwrap();
    let (status, nodes) = cloud
        .api
        .post(
            &format!("/api/v1/pools/{pool_id}/nodes"),
            &json!({"machine_ids": [machines[0]]}),
        )
        .await;
    assert_eq!(status, 201, "{nodes}");
    let (status, body) = cloud
        .api
        .delete(&format!("/api/v1/machines/{}", machines[0]))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pool web-pool"),
        "{body}"
    );
    // Out of the pool (a task: its container stopped, the machine kept).
    let (status, task) = cloud
        .api
        .delete(&format!(
            "/api/v1/pools/{pool_id}/nodes/{}?release_machine=false",
            nodes[0]["id"]
        ))
        .await;
    assert_eq!(status, 202, "{task}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let task = cloud
            .api
            .get(&format!("/api/v1/tasks/{}", task["id"]))
            .await;
        if task["task"]["state"] == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{task:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Release: gone from the cloud, quota charged an hour each.
    for id in &machines {
        let (status, body) = cloud.api.delete(&format!("/api/v1/machines/{id}")).await;
        assert_eq!(status, 202, "{body}");
    }
    let details = cloud.settle(&machines, Duration::from_secs(60)).await;
    assert_eq!(states(&details), vec!["deleted"; 5], "{details:#?}");
    assert!(
        cloud.sim.instances().is_empty(),
        "{:?}",
        cloud.sim.instances()
    );
    let quotas = cloud.api.get("/api/v1/quotas").await;
    let web = &quotas["items"][0];
    assert_eq!(web["used_hours"], 5, "{quotas}");
    assert_eq!(web["credit_hours"], 5);
    assert_eq!(web["released_machines"], 5);
    // The released machines still show when asked for.
    let released = cloud.api.get("/api/v1/machines?state=deleted").await;
    assert_eq!(released["total"], 5);
    let fleet = cloud.api.get("/api/v1/fleet-history?hours=2").await;
    assert!(
        fleet["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["provider"] == "aliyun"),
        "{fleet}"
    );

    // The account secret is in no response and no log line.
    let accounts = cloud.api.get("/api/v1/accounts").await;
    assert!(!accounts.to_string().contains(aliyun_sim::DEMO_SECRET));
    assert_eq!(accounts["items"][0]["key_id"], aliyun_sim::DEMO_KEY_ID);
    let lines = cloud.api.server.drain_output().join("\n");
    assert!(
        lines.contains("machine private key downloaded"),
        "the download is audited"
    );
    assert!(
        !lines.contains(aliyun_sim::DEMO_SECRET),
        "the secret leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttling_and_lost_replies_never_duplicate_a_machine() {
    let cloud = Cloud::start(quick_delays()).await;
    let template = cloud.template("busy", None, json!({})).await;
    cloud.sim.set_faults(Faults {
        throttle_rate: 0.5,
        drop_reply_after_effect: vec!["RunInstances".to_owned()],
        drop_rate: 0.5,
        ..Faults::default()
    });
    let machines = cloud.create(template, 5).await;
    let details = cloud.settle(&machines, Duration::from_secs(120)).await;
    assert_eq!(states(&details), vec!["ready"; 5], "{details:#?}");
    let live = cloud.sim.instances();
    assert_eq!(live.len(), 5, "one instance per machine: {live:?}");
    let tokens: BTreeSet<_> = live.iter().map(|i| i.client_token.clone()).collect();
    assert_eq!(tokens.len(), 5, "each machine has its own ClientToken");
    assert!(
        cloud.sim.calls("RunInstances") > 5,
        "throttled and lost replies were retried ({} calls)",
        cloud.sim.calls("RunInstances")
    );
    let logs: String = details.iter().map(log_text).collect();
    assert!(logs.contains("cloud: instance i-"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_error_storm_ends_machines_in_error_naming_the_cloud_code() {
    let cloud = Cloud::start(quick_delays()).await;
    let template = cloud.template("stormy", None, json!({})).await;
    // Short plugin calls, so the plugin's own retries give up quickly.
    let (status, body) = cloud
        .api
        .put(
            &format!("/api/v1/plugins/{}/limits", cloud.plugin_id),
            &json!({"timeout_secs": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    cloud.sim.set_faults(Faults {
        server_error_rate: 1.0,
        ..Faults::default()
    });
    let machines = cloud.create(template, 2).await;
    let details = cloud.settle(&machines, Duration::from_secs(90)).await;
    for detail in &details {
        let machine = &detail["machine"];
        assert_eq!(machine["state"], "error", "{detail:#}");
        let reason = machine["reason"].as_str().unwrap();
        assert!(
            reason.contains("ServiceUnavailable") || reason.contains("InternalError"),
            "{reason}"
        );
        assert!(reason.contains("request id"), "{reason}");
    }
    assert!(cloud.sim.instances().is_empty());
    // Machines that never got an instance release at once, free.
    let id = details[0]["machine"]["id"].as_i64().unwrap();
    let (status, _) = cloud.api.delete(&format!("/api/v1/machines/{id}")).await;
    assert_eq!(status, 202);
    let released = cloud.settle(&[id], Duration::from_secs(10)).await;
    assert_eq!(released[0]["machine"]["state"], "deleted");
    assert_eq!(released[0]["machine"]["charged_hours"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_secret_is_refused_by_the_cloud_with_a_clear_error() {
    let cloud = Cloud::start(quick_delays()).await;
    let (status, body) = cloud
        .api
        .post(
            "/api/v1/accounts",
            &json!({"name": "typo", "provider": "aliyun", "config": endpoints(&cloud.sim),
                    "key_id": aliyun_sim::DEMO_KEY_ID, "secret": "not-the-secret"}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
    assert!(message.contains("request id"), "{message}");
    // Said for people: no debug names, no string-to-sign.
    assert!(message.contains("credentials refused"), "{message}");
    assert!(
        !message.contains("ErrorKind") && !message.contains("string to sign"),
        "{message}"
    );
    let (status, body) = cloud
        .api
        .post(
            "/api/v1/accounts",
            &json!({"name": "nobody", "provider": "aliyun", "config": endpoints(&cloud.sim),
                    "key_id": "LTAInobody", "secret": "x"}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("InvalidAccessKeyId.NotFound"),
        "{body}"
    );
    let (status, body) = cloud
        .api
        .post(
            "/api/v1/accounts",
            &json!({"name": "nokey", "provider": "aliyun", "key_id": "x"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("secret")),
        "{body}"
    );
    let (status, body) = cloud
        .api
        .post(
            "/api/v1/accounts",
            &json!({"name": "nocloud", "provider": "gcp", "key_id": "x", "secret": "y"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("provider")),
        "{body}"
    );
    // Look-ups through an account that works.
    let regions = cloud
        .api
        .get(&format!(
            "/api/v1/accounts/{}/lookups/regions",
            cloud.account_id
        ))
        .await;
    assert!(regions.to_string().contains("cn-hangzhou"), "{regions}");
    let (status, body) = cloud.api.post("/api/v1/accounts", &json!({})).await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_timeout_and_init_failure_say_what_happened() {
    let cloud = Cloud::start(quick_delays()).await;
    let slow = cloud.group("slow-init", "sleep 60").await;
    let failing = cloud
        .group(
            "failing-init",
            "echo preparing; echo disk is full >&2; exit 3",
        )
        .await;
    let slow_template = cloud
        .template("slow", Some(slow), json!({"init_timeout_secs": 10}))
        .await;
    let failing_template = cloud.template("failing", Some(failing), json!({})).await;
    let (_, slow_machine) = cloud
        .api
        .post(
            "/api/v1/machines",
            &json!({"template_id": slow_template, "count": 1}),
        )
        .await;
    let (_, failing_machine) = cloud
        .api
        .post(
            "/api/v1/machines",
            &json!({"template_id": failing_template, "count": 1}),
        )
        .await;
    let slow_id = ids(&slow_machine)[0];
    let failing_id = ids(&failing_machine)[0];

    // Being created: deletion is refused.
    let (status, body) = cloud
        .api
        .delete(&format!("/api/v1/machines/{failing_id}"))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("being created")
    );

    let details = cloud
        .settle(&[slow_id, failing_id], Duration::from_secs(60))
        .await;
    let slow = &details[0]["machine"];
    assert_eq!(slow["state"], "init_timeout", "{:#}", details[0]);
    assert!(
        slow["reason"].as_str().unwrap().contains("within 10 s"),
        "{slow}"
    );
    let failed = &details[1]["machine"];
    assert_eq!(failed["state"], "init_failed", "{:#}", details[1]);
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("exit code 3") && reason.contains("disk is full"),
        "{reason}"
    );
    let log = log_text(&details[1]);
    assert!(
        log.contains("init stdout: preparing") && log.contains("init stderr: disk is full"),
        "{log}"
    );

    // A template with live machines cannot go; once they are released it can.
    let (status, body) = cloud
        .api
        .delete(&format!("/api/v1/machine-templates/{failing_template}"))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("machine failing-"),
        "{body}"
    );
    let (status, _) = cloud
        .api
        .delete(&format!("/api/v1/machines/{failing_id}"))
        .await;
    assert_eq!(status, 202);
    cloud.settle(&[failing_id], Duration::from_secs(30)).await;
    let (status, body) = cloud
        .api
        .delete(&format!("/api/v1/machine-templates/{failing_template}"))
        .await;
    assert_eq!(status, 204, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn template_rules_and_quotas_are_enforced() {
    let cloud = Cloud::start(quick_delays()).await;
    let base = cloud.template_body("rules", None).await;
    let with = |pointer: &str, value: Value| {
        let mut body = base.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        body
    };
    for (body, field, words) in [
        (
            with("/spec/bandwidth_mbps", json!(0)),
            "spec.bandwidth_mbps",
            "PayByTraffic",
        ),
        (
            with(
                "/spec/data_disks",
                json!({"category": "cloud_ssd", "size_gb": 100, "count": 5}),
            ),
            "spec.data_disks.count",
            "0 and 4",
        ),
        (
            with(
                "/spec/data_disks",
                json!({"category": "cloud", "size_gb": 4000, "count": 1}),
            ),
            "spec.data_disks.size_gb",
            "5 and 2000",
        ),
        (
            with("/spec/image", json!("no-such-image")),
            "spec.image",
            "does not exist",
        ),
        (
            with("/spec/zone", json!("cn-hangzhou-z")),
            "spec.zone",
            "does not exist",
        ),
        (with("/spec/subnet", Value::Null), "spec.subnet", "VPC"),
        (with("/quota_hours", json!(-1)), "quota_hours", "0 or more"),
        (with("/account_id", json!(999)), "account_id", "no account"),
    ] {
        let (status, answer) = cloud.api.post("/api/v1/machine-templates", &body).await;
        assert_eq!(status, 422, "{field}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(words),
            "{answer}"
        );
    }
    // Several broken fields: one answer names them all.
    let mut broken = with("/spec/bandwidth_mbps", json!(0));
    broken["name"] = json!("");
    broken["quota_hours"] = json!(-1);
    let (status, answer) = cloud.api.post("/api/v1/machine-templates", &broken).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "name", "{answer}");
    let others: Vec<&str> = answer["error"]["also"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(others, ["spec.bandwidth_mbps", "quota_hours"], "{answer}");

    // No quota left: creating is refused, and says why.
    let template = cloud
        .template("metered", None, json!({"quota_hours": 0}))
        .await;
    let (status, body) = cloud
        .api
        .post(
            "/api/v1/machines",
            &json!({"template_id": template, "count": 1}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no quota left"),
        "{body}"
    );

    // A machine that lived 2 days and 3 minutes is charged 49 hours.
    let (status, _) = cloud
        .api
        .put(
            &format!("/api/v1/quotas/{template}"),
            &json!({"quota_hours": 1}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, created) = cloud
        .api
        .post(
            "/api/v1/machines",
            &json!({"template_id": template, "count": 1}),
        )
        .await;
    let id = ids(&created)[0];
    cloud.settle(&[id], Duration::from_secs(60)).await;
    let db = format!(
        "sqlite://{}",
        cloud.api.server.data_dir.path().join("dcp.db").display()
    );
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
        .await
        .unwrap();
    let lived = (2 * 24 * 60 + 3) * 60 * 1000_i64;
    sqlx::query("update machines set created_at = created_at - $1 where id = $2")
        .bind(lived)
        .bind(id)
        .execute(&mut conn)
        .await
        .unwrap();
    let (status, _) = cloud.api.delete(&format!("/api/v1/machines/{id}")).await;
    assert_eq!(status, 202);
    let released = cloud.settle(&[id], Duration::from_secs(30)).await;
    assert_eq!(
        released[0]["machine"]["charged_hours"], 49,
        "{:#}",
        released[0]
    );
    let quota = cloud.api.get("/api/v1/quotas").await;
    let metered = quota["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["template_id"] == template)
        .unwrap();
    assert_eq!(
        (
            metered["used_hours"].as_i64(),
            metered["credit_hours"].as_i64()
        ),
        (Some(49), Some(-48))
    );
    // Overdrawn: refused again.
    let (status, _) = cloud
        .api
        .post(
            "/api/v1/machines",
            &json!({"template_id": template, "count": 1}),
        )
        .await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn existing_servers_are_adopted_by_password_and_get_dcp_key() {
    let mut cloud = Cloud::start(quick_delays()).await;
    let mut fleet = Fleet::start(1);
    let (user, password) = fleet.password_login();
    let address = fleet.hosts[0].ip().to_string();
    let (status, body) = cloud
        .api
        .post(
            "/api/v1/machines/adopt",
            &json!({"address": address, "user": user, "password": "wrong"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("password")),
        "{body}"
    );
    let (status, machine) = cloud
        .api
        .post(
            "/api/v1/machines/adopt",
            &json!({"name": "old-db", "address": address, "user": user, "password": password}),
        )
        .await;
    assert_eq!(status, 201, "{machine}");
    assert_eq!(machine["state"], "ready");
    assert_eq!(machine["provider"], "adopted");
    let id = machine["id"].as_i64().unwrap();
    // Later commands log in with DCP's key, not the (forgotten) password.
    let done = cloud.run("id -un", &[id]).await;
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["hosts"][0]["stdout"].as_str().unwrap().trim(), user);
    // Releasing an adopted server only forgets it.
    let (status, _) = cloud.api.delete(&format!("/api/v1/machines/{id}")).await;
    assert_eq!(status, 202);
    let gone = cloud.settle(&[id], Duration::from_secs(10)).await;
    assert_eq!(gone[0]["machine"]["state"], "deleted");
    assert!(
        fleet.ssh(0, "true").status.success(),
        "the server itself is untouched"
    );
    let lines = cloud.api.server.drain_output().join("\n");
    assert!(
        !lines.contains(&password),
        "the adoption password leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn machines_in_flight_finish_after_dcp_is_killed() {
    // Slow enough that the kill lands while the machines are being created.
    let mut cloud = Cloud::start(aliyun_sim::Delays {
        pending: Duration::from_secs(3),
        ..quick_delays()
    })
    .await;
    let template = cloud.template("durable", None, json!({})).await;
    let machines = cloud.create(template, 3).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    cloud.api.server.kill();
    cloud.api.server.restart();
    let details = cloud.settle(&machines, Duration::from_secs(90)).await;
    assert_eq!(states(&details), vec!["ready"; 3], "{details:#?}");
    assert_eq!(
        cloud.sim.instances().len(),
        3,
        "a replayed create made no second instance"
    );
}

/// What a TCP server at `address` says first (empty when the connection
/// closes or says nothing within 5 s).
async fn banner(address: &str) -> String {
    use tokio::io::AsyncReadExt as _;
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return String::new();
    };
    let mut buffer = [0_u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buffer[..n]).into_owned(),
        _ => String::new(),
    }
}

/// `POST` with an `Idempotency-Key`.
async fn post_keyed(cloud: &Cloud, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let reply = cloud
        .api
        .http
        .post(cloud.api.server.url(path))
        .bearer_auth(&cloud.api.token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_accounts_load_balancers_are_managed_through_its_cloud() {
    let cloud = Cloud::start(quick_delays()).await;
    let account = cloud
        .api
        .get(&format!("/api/v1/accounts/{}", cloud.account_id))
        .await;
    assert_eq!(account["manages_load_balancers"], true, "{account}");
    let base = format!("/api/v1/accounts/{}/load-balancers", cloud.account_id);
    let hz = "region=cn-hangzhou";

    // A retried create (same key) answers the first load balancer.
    let input = json!({"region": "cn-hangzhou", "name": "web", "address_type": "intranet"});
    let (status, lb) = post_keyed(&cloud, &base, "create-web", &input).await;
    assert_eq!(status, 201, "{lb}");
    let (status, again) = post_keyed(&cloud, &base, "create-web", &input).await;
    assert_eq!((status, &again["id"]), (201, &lb["id"]), "{again}");
    let id = lb["id"].as_str().unwrap().to_owned();
    let listed = cloud.api.get(&format!("{base}?{hz}")).await;
    assert_eq!(listed["total"], 1, "{listed}");
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web"], "{listed}");
    assert_eq!(listed["items"][0]["status"], "active");
    // A page at a time, by name.
    let (status, other) = post_keyed(
        &cloud,
        &base,
        "create-api",
        &json!({"region": "cn-hangzhou", "name": "api", "address_type": "internet"}),
    )
    .await;
    assert_eq!(status, 201, "{other}");
    for (page, name) in [(1, "api"), (2, "web")] {
        let one = cloud
            .api
            .get(&format!("{base}?{hz}&page={page}&per_page=1"))
            .await;
        assert_eq!(
            (&one["total"], &one["items"][0]["name"]),
            (&json!(2), &json!(name)),
            "{one}"
        );
    }
    let (status, body) = cloud
        .api
        .delete(&format!("{base}/{}?{hz}", other["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 204, "{body}");

    // Bad input is refused before the cloud is called, naming each field.
    let (status, err) = cloud
        .api
        .post(
            &base,
            &json!({"region": "Hang Zhou", "name": "", "address_type": "intranet", "spec": "a b"}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    let mut fields = vec![err["error"]["field"].as_str().unwrap().to_owned()];
    fields.extend(
        err["error"]["also"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["field"].as_str().unwrap().to_owned()),
    );
    assert_eq!(fields, ["region", "name", "spec"], "{err}");
    let (status, err) = cloud.api.get_status(&base).await;
    assert_eq!(status, 400, "a list needs its region: {err}");
    let (status, err) = cloud
        .api
        .get_status(&format!("{base}/lb-nosuch?{hz}"))
        .await;
    assert_eq!(status, 404, "{err}");

    // A TCP listener on the machines' SSH port: fleet-mode instances are
    // real sshds, so the cloud's checks find them healthy.
    let listener = json!({"port": 2222, "protocol": "tcp", "backend_port": 22,
                          "health_check": {"interval_seconds": 1, "healthy_threshold": 2}});
    let listeners = format!("{base}/{id}/listeners?{hz}");
    let (status, body) = cloud.api.post(&listeners, &listener).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = cloud.api.post(&listeners, &listener).await;
    assert_eq!(status, 204, "the same listener again is no error: {body}");
    let other = json!({"port": 2222, "protocol": "tcp", "backend_port": 2200});
    let (status, body) = cloud.api.post(&listeners, &other).await;
    assert_eq!(status, 409, "another listener on the port: {body}");
    let (status, body) = cloud
        .api
        .put(
            &format!("{base}/{id}/listeners/2222/running?{hz}"),
            &json!({"running": true}),
        )
        .await;
    assert_eq!(status, 204, "{body}");

    cloud.attach_new_instances(&id, 2).await;

    // White list: set, changed (one added, one removed), enforced.
    let white_list = format!("{base}/{id}/listeners/2222/white-list?{hz}");
    let (status, body) = cloud
        .api
        .put(
            &white_list,
            &json!({"enabled": false, "entries": ["10.0.0.0/8", "127.0.0.1"]}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = cloud
        .api
        .put(
            &white_list,
            &json!({"enabled": true, "entries": ["127.0.0.1", "192.0.2.7"]}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, err) = cloud
        .api
        .put(
            &white_list,
            &json!({"enabled": true, "entries": ["127.0.0.1", "nope"]}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("entries[1]")),
        "{err}"
    );

    // The detail: the listener running with its list, both backends healthy.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let detail = loop {
        let detail = cloud.api.get(&format!("{base}/{id}?{hz}")).await;
        let healthy = detail["backends"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["health"][0]["health"] == "normal")
            .count();
        if healthy == 2 {
            break detail;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backends never became healthy: {detail:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Enforced, the white list keeps out whom it does not name: this test
    // connects from 127.0.0.1; named, it gets the backend's SSH banner.
    let address = format!("{}:2222", lb["address"].as_str().unwrap());
    for (entries, admitted) in [
        (json!(["192.0.2.7"]), false),
        (json!(["127.0.0.1", "192.0.2.7"]), true),
    ] {
        let (status, body) = cloud
            .api
            .put(&white_list, &json!({"enabled": true, "entries": entries}))
            .await;
        assert_eq!(status, 204, "{body}");
        assert_eq!(
            banner(&address).await.starts_with("SSH-"),
            admitted,
            "{entries}"
        );
    }
    let listener = &detail["listeners"][0];
    assert_eq!(listener["status"], "running", "{detail:#}");
    assert_eq!(listener["access_control"], true, "{detail:#}");
    let mut entries: Vec<&str> = listener["white_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    entries.sort_unstable();
    assert_eq!(entries, ["127.0.0.1", "192.0.2.7"], "{detail:#}");
    let addresses: BTreeSet<String> = cloud
        .sim
        .instances()
        .iter()
        .map(|i| i.private_ip.to_string())
        .collect();
    for backend in detail["backends"].as_array().unwrap() {
        assert!(
            addresses.contains(backend["address"].as_str().unwrap()),
            "{backend}"
        );
    }

    // Stopping, then deleting: the load balancer is gone, twice over.
    let (status, body) = cloud
        .api
        .put(
            &format!("{base}/{id}/status?{hz}"),
            &json!({"status": "inactive"}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = cloud
        .api
        .put(
            &format!("{base}/{id}/status?{hz}"),
            &json!({"status": "locked"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("status")),
        "{body}"
    );
    let listed = cloud.api.get(&format!("{base}?{hz}")).await;
    assert_eq!(listed["items"][0]["status"], "inactive", "{listed}");
    for _ in 0..2 {
        let (status, body) = cloud.api.delete(&format!("{base}/{id}?{hz}")).await;
        assert_eq!(status, 204, "{body}");
    }
    assert!(cloud.sim.load_balancers().is_empty());
}
