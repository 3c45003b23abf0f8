//! DCP wired to the Aliyun simulator for machine tests: the simulator (in
//! this process, fleet mode: every running instance is a real `sshd` on its
//! own 127.21.x.y), a `dcp serve` with the aliyun plugin granted the
//! simulator's loopback origins, a demo account and a template.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use aliyun_sim::{Delays, FleetOptions, Options, Simulator, client::Client as SimClient};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{Api, ServerOptions, fixture_plugin};

/// A DCP and an Aliyun simulator it is wired to.
pub struct Cloud {
    /// The simulator.
    pub sim: Simulator,
    /// The DCP server and its API client.
    pub api: Api,
    /// The aliyun plugin version uploaded for the simulator.
    pub plugin_id: i64,
    /// The demo account's id.
    pub account_id: i64,
    /// Fleet-mode files (sshd configs, keys).
    pub dir: TempDir,
}

/// How fast the simulated cloud moves: a few hundred milliseconds per state.
#[must_use]
pub fn quick_delays() -> Delays {
    Delays {
        pending: Duration::from_millis(300),
        starting: Duration::from_millis(300),
        stopping: Duration::from_millis(200),
        deleting: Duration::from_millis(200),
    }
}

impl Cloud {
    /// Starts the simulator in fleet mode with `delays` and a DCP that
    /// polls it every 200 ms, uploads and activates the aliyun plugin
    /// granted the simulator's origins, and adds the demo account.
    pub async fn start(delays: Delays) -> Self {
        Self::start_with(delays, Vec::new()).await
    }

    /// [`Cloud::start`] with more environment for `dcp` (e.g. a short task lease).
    pub async fn start_with(delays: Delays, env: Vec<(String, String)>) -> Self {
        Self::start_on(
            delays,
            ServerOptions {
                env,
                ..ServerOptions::default()
            },
        )
        .await
    }

    /// [`Cloud::start`] with a `dcp` started with `options` (its database,
    /// more environment).
    pub async fn start_on(delays: Delays, options: ServerOptions) -> Self {
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd (run as root)");
        let dir = tempfile::tempdir().unwrap();
        let sim = Simulator::start(Options {
            delays,
            fleet: Some(FleetOptions {
                dir: dir.path().to_path_buf(),
            }),
            ..Options::default()
        })
        .await
        .expect("starting the Aliyun simulator");
        let api = Api::start_with(&ServerOptions {
            env: machine_env().into_iter().chain(options.env).collect(),
            ..options
        })
        .await;
        let plugin_id = upload_for(&api, &sim).await;
        let (status, account) = api
            .post(
                "/api/v1/accounts",
                &json!({
                    "name": "sim",
                    "provider": "aliyun",
                    "config": endpoints(&sim),
                    "key_id": aliyun_sim::DEMO_KEY_ID,
                    "secret": aliyun_sim::DEMO_SECRET,
                }),
            )
            .await;
        assert_eq!(status, 201, "{account}");
        Self {
            account_id: account["id"].as_i64().unwrap(),
            sim,
            api,
            plugin_id,
            dir,
        }
    }

    /// An SLB in the simulator, made through its API, with a running HTTP
    /// listener on port 80 that sends to [`crate::web_port`] and checks
    /// `/healthz` every second; answers its id and address.
    pub async fn load_balancer(&self) -> (String, String) {
        let slb = SimClient::slb(&self.sim);
        let hz = ("RegionId", "cn-hangzhou");
        let lb = slb
            .call("CreateLoadBalancer", &[hz, ("LoadBalancerName", "web")])
            .await
            .ok();
        let id = lb["LoadBalancerId"].as_str().unwrap().to_owned();
        let address = lb["Address"].as_str().unwrap().to_owned();
        let lb_id = ("LoadBalancerId", id.as_str());
        let backend_port = crate::web_port().to_string();
        slb.call(
            "CreateLoadBalancerHTTPListener",
            &[
                hz,
                lb_id,
                ("ListenerPort", "80"),
                ("BackendServerPort", &backend_port),
                ("Bandwidth", "-1"),
                ("StickySession", "off"),
                ("HealthCheck", "on"),
                ("HealthCheckURI", "/healthz"),
                ("HealthCheckInterval", "1"),
                ("HealthyThreshold", "2"),
                ("UnhealthyThreshold", "2"),
            ],
        )
        .await
        .ok();
        slb.call(
            "StartLoadBalancerListener",
            &[hz, lb_id, ("ListenerPort", "80")],
        )
        .await
        .ok();
        (id, address)
    }

    /// `count` new running instances (real sshds in fleet mode) attached to
    /// the load balancer `lb` as backend servers through the simulator's
    /// API (not through DCP); answers their ids.
    ///
    /// # Panics
    /// When the simulator refuses a step.
    pub async fn attach_new_instances(&self, lb: &str, count: u32) -> Vec<String> {
        let ecs = SimClient::ecs(&self.sim);
        let amount = count.to_string();
        let run = ecs.run(&[("Amount", amount.as_str())]).await.ok();
        let instances = aliyun_sim::client::ids(&run);
        assert_eq!(instances.len(), count as usize, "{run}");
        for instance in &instances {
            ecs.wait_status(instance, "Running").await;
        }
        let servers: Vec<Value> = instances
            .iter()
            .map(|i| json!({"ServerId": i, "Weight": "100"}))
            .collect();
        SimClient::slb(&self.sim)
            .call(
                "AddBackendServers",
                &[
                    ("RegionId", "cn-hangzhou"),
                    ("LoadBalancerId", lb),
                    ("BackendServers", &Value::from(servers).to_string()),
                ],
            )
            .await
            .ok();
        instances
    }

    /// Uploads the slb plugin for the simulator and adds the load balancer
    /// `lb` to the group `group` as a unit (serving its `default_upstream`)
    /// whose one node is this cloud's account; answers the unit's id.
    ///
    /// # Panics
    /// When DCP refuses a step.
    pub async fn join_slb(&self, group: i64, lb: &str) -> i64 {
        upload_bundled_for(
            &self.api,
            "slb",
            &[self.sim.slb_endpoint(), self.sim.ecs_endpoint()],
        )
        .await;
        let (status, unit) = self
            .api
            .post(
                "/api/v1/lb-units",
                &json!({"group_id": group, "name": format!("slb-{lb}"), "plugin": "slb",
                        "config": {"region": "cn-hangzhou", "slb_endpoint": self.sim.slb_endpoint(),
                                   "ecs_endpoint": self.sim.ecs_endpoint(), "timeout_ms": 3000,
                                   "load_balancer_id": lb, "upstream": "default_upstream"}}),
            )
            .await;
        assert_eq!(status, 201, "{unit}");
        let (status, node) = self
            .api
            .post(
                &format!("/api/v1/lb-units/{}/nodes", unit["id"]),
                &json!({"account_id": self.account_id, "settings": {}}),
            )
            .await;
        assert_eq!(status, 201, "{node}");
        assert_eq!(node["in_sync"], true, "{node}");
        unit["id"].as_i64().unwrap()
    }

    /// Creates a template named `name` in cn-hangzhou with `quota_hours`,
    /// initialised by the command group `init_group` (none = the default
    /// check); answers its id.
    pub async fn template(&self, name: &str, init_group: Option<i64>, extra: Value) -> i64 {
        let mut body = self.template_body(name, init_group).await;
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                body.insert(k.clone(), v.clone());
            }
        }
        let (status, template) = self.api.post("/api/v1/machine-templates", &body).await;
        assert_eq!(status, 201, "{template}");
        template["id"].as_i64().unwrap()
    }

    /// The first choice of a look-up, through DCP like the UI's form.
    pub async fn first(&self, kind: &str, query: &str) -> String {
        let choices = self
            .api
            .get(&format!(
                "/api/v1/accounts/{}/lookups/{kind}?{query}",
                self.account_id
            ))
            .await;
        choices[0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no {kind}: {choices}"))
            .to_owned()
    }

    /// A valid template body, its network looked up like the UI does.
    pub async fn template_body(&self, name: &str, init_group: Option<i64>) -> Value {
        let vpc = self.first("vpcs", "region=cn-hangzhou").await;
        let subnet = self
            .first(
                "subnets",
                &format!("region=cn-hangzhou&vpc={vpc}&zone=cn-hangzhou-h"),
            )
            .await;
        let group = self
            .first("security-groups", &format!("region=cn-hangzhou&vpc={vpc}"))
            .await;
        json!({
            "name": name,
            "account_id": self.account_id,
            "spec": {
                "region": "cn-hangzhou",
                "zone": "cn-hangzhou-h",
                "network_type": "vpc",
                "vpc": vpc,
                "subnet": subnet,
                "security_group": group,
                "instance_type": "ecs.g6.large",
                "image": "ubuntu_22_04_x64_20G_alibase_20240130.vhd",
                "system_disk": {"category": "cloud_efficiency", "size_gb": 40},
                "data_disks": null,
                "internet_charge_type": "PayByTraffic",
                "bandwidth_mbps": 5,
                "instance_charge_type": "PostPaid",
            },
            "init_group_id": init_group,
            "init_timeout_secs": 60,
            "quota_hours": 100,
        })
    }

    /// A shell command group running `script`; answers the group's id.
    pub async fn group(&self, name: &str, script: &str) -> i64 {
        let (status, command) = self
            .api
            .post(
                "/api/v1/commands",
                &json!({"name": name, "mode": "shell", "script": script}),
            )
            .await;
        assert_eq!(status, 201, "{command}");
        let (status, group) = self
            .api
            .post(
                "/api/v1/command-groups",
                &json!({"name": name, "command_ids": [command["id"]]}),
            )
            .await;
        assert_eq!(status, 201, "{group}");
        group["id"].as_i64().unwrap()
    }

    /// Creates `count` machines from `template`; answers their ids.
    pub async fn create(&self, template: i64, count: u32) -> Vec<i64> {
        let (status, created) = self
            .api
            .post(
                "/api/v1/machines",
                &json!({"template_id": template, "count": count}),
            )
            .await;
        assert_eq!(status, 202, "{created}");
        created
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect()
    }

    /// Runs a shell `script` on machines and answers the execution once it ended.
    pub async fn run(&self, script: &str, machine_ids: &[i64]) -> Value {
        let (status, execution) = self
            .api
            .post(
                "/api/v1/executions",
                &json!({"command": {"mode": "shell", "script": script}, "machine_ids": machine_ids}),
            )
            .await;
        assert_eq!(status, 201, "{execution}");
        let id = execution["id"].as_i64().unwrap();
        loop {
            let e = self.api.get(&format!("/api/v1/executions/{id}")).await;
            if !matches!(e["state"].as_str(), Some("pending" | "running")) {
                return self.api.execution_with_output(id).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every machine of `ids` is in a state that is not busy
    /// and answers their details.
    pub async fn settle(&self, ids: &[i64], within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let mut details = Vec::new();
            for id in ids {
                details.push(self.api.get(&format!("/api/v1/machines/{id}")).await);
            }
            let busy = details.iter().any(|d| {
                matches!(
                    d["machine"]["state"].as_str(),
                    Some("creating" | "starting" | "initializing" | "deleting")
                )
            });
            if !busy {
                return details;
            }
            assert!(
                Instant::now() < deadline,
                "machines still busy after {within:?}: {details:#?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A cluster and a service `service` running `dcp-test/web:1` with
    /// `container` (its ports, health check, …), and a pool of it growing
    /// from a machine template initialised by `init_group` (none = the
    /// default check), with `pool` fields over those; answers the pool's id.
    pub async fn pool(
        &self,
        service: &str,
        init_group: Option<i64>,
        container: Value,
        pool: Value,
    ) -> i64 {
        let api = &self.api;
        let template = self
            .template(&format!("{service}-vm"), init_group, json!({}))
            .await;
        let (status, cluster) = api
            .post(
                "/api/v1/clusters",
                &json!({"name": format!("{service}-cluster")}),
            )
            .await;
        assert_eq!(status, 201, "{cluster}");
        let (status, created) = api
            .post(
                "/api/v1/services",
                &json!({"cluster_id": cluster["id"], "name": service,
                        "image": crate::docker::web_image("1"), "container": container}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let mut body = json!({"service_id": created["id"], "name": format!("{service}-a"),
                              "template_id": template});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), pool.as_object()) {
            body.extend(extra.clone());
        }
        let (status, pool) = api.post("/api/v1/pools", &body).await;
        assert_eq!(status, 201, "{pool}");
        pool["id"].as_i64().unwrap_or_default()
    }

    /// Starts a task and waits until it is no longer pending or running:
    /// its detail.
    pub async fn task(&self, body: Value, within: Duration) -> Value {
        let (status, task) = self.api.post("/api/v1/tasks", &body).await;
        assert_eq!(status, 202, "{task}");
        self.settle_task(task["id"].as_i64().unwrap_or_default(), within)
            .await
    }

    /// Waits until task `id` is no longer pending or running, with no
    /// command waiting: its detail.
    pub async fn settle_task(&self, id: i64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let detail = self.api.get(&format!("/api/v1/tasks/{id}")).await;
            let state = detail["task"]["state"].as_str().unwrap_or_default();
            if !matches!(state, "pending" | "running") && detail["task"]["command"].is_null() {
                return detail;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} still {state} after {within:?}: {detail:#}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// What every `dcp` wired to the simulator runs with: quick polling.
#[must_use]
pub fn machine_env() -> Vec<(String, String)> {
    vec![
        ("DCP_MACHINE_POLL_MS".into(), "200".into()),
        ("DCP_MACHINE_START_TIMEOUT_SECS".into(), "60".into()),
    ]
}

/// The account config pointing the plugin at the simulator.
#[must_use]
pub fn endpoints(sim: &Simulator) -> Value {
    json!({
        "ecs_endpoint": sim.ecs_endpoint(),
        "vpc_endpoint": sim.vpc_endpoint(),
        "slb_endpoint": sim.slb_endpoint(),
        "timeout_ms": 3000,
    })
}

/// Uploads the aliyun plugin with a manifest that asks for the simulator's
/// loopback origins, approves and activates it; answers the version id.
pub async fn upload_for(api: &Api, sim: &Simulator) -> i64 {
    upload_bundled_for(
        api,
        "aliyun",
        &[sim.ecs_endpoint(), sim.vpc_endpoint(), sim.slb_endpoint()],
    )
    .await
}

/// Uploads the bundled plugin `name` (built by scripts/build-plugins) with
/// its manifest's `http` origins replaced by `endpoints` (loopback, so
/// `#private`) and version `0.1.0-sim`, approves and activates it: the
/// bundled one may only reach the real cloud. Answers the version id.
pub async fn upload_bundled_for(api: &Api, name: &str, endpoints: &[String]) -> i64 {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/{name}/plugin.toml"));
    let manifest =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let origins: Vec<String> = endpoints
        .iter()
        .map(|e| format!("\"{e}#private\""))
        .collect();
    let origins = format!("http = [{}]", origins.join(", "));
    let manifest: String = manifest
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("http") {
                origins.clone()
            } else if line.trim_start().starts_with("version") {
                "version = \"0.1.0-sim\"".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (status, upload) = api.upload(&fixture_plugin(name), &manifest).await;
    assert!(status == 201 || status == 200, "{upload}");
    let id = upload["plugin"]["id"].as_i64().unwrap();
    for step in ["approve", "activate"] {
        let (status, body) = api
            .post(&format!("/api/v1/plugins/{id}/{step}"), &json!({}))
            .await;
        assert_eq!(status, 200, "{step}: {body}");
    }
    id
}
