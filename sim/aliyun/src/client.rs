//! A signed-request client for the simulator, as DCP's plugins sign (POST,
//! common parameters in the query, the action's in a form body, HMAC-SHA1
//! over both): for tests that set the simulated cloud up or read it back
//! through its own API, so they go through the same checks as the plugins.

// For tests: whatever goes wrong is the calling test's failure, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use serde_json::Value;

use crate::Simulator;

/// An answer: the status and the body, parsed when it is JSON.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: String,
    /// The body as text.
    pub text: String,
    /// The body parsed (`null` when it is not JSON).
    pub json: Value,
}

impl Reply {
    /// The error `Code`.
    pub fn code(&self) -> &str {
        self.json["Code"].as_str().unwrap_or_default()
    }

    /// Panics unless this is a success.
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "{}", self.text);
        self.json
    }

    /// Panics unless this is the error `code` with `status`.
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code()), (status, code), "{}", self.text);
    }
}

/// A number the lenient way (the API sometimes sends numbers as strings).
pub fn num(value: &Value) -> u64 {
    match value {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("not a number: {other}"),
    }
}

/// A list inside its wrapper, `[]` when the wrapper is absent.
pub fn list<'a>(value: &'a Value, wrapper: &str, item: &str) -> &'a [Value] {
    value[wrapper][item].as_array().map_or(&[], Vec::as_slice)
}

/// Signs and sends RPC requests to one product.
#[derive(Clone, Debug)]
pub struct Client {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// The product's endpoint, scheme included.
    pub endpoint: String,
    /// The product's API version.
    pub version: String,
    /// The AccessKey id it signs as.
    pub key_id: String,
    /// The AccessKey secret it signs with.
    pub secret: String,
    /// Per request; tests of slow replies shorten it.
    pub timeout: Duration,
}

impl Client {
    /// A client of the simulator's ECS, as the demo key.
    pub fn ecs(sim: &Simulator) -> Self {
        Self::new(sim.ecs_endpoint(), "2014-05-26")
    }

    /// A client of the simulator's VPC, as the demo key.
    pub fn vpc(sim: &Simulator) -> Self {
        Self::new(sim.vpc_endpoint(), "2016-04-28")
    }

    /// A client of the simulator's SLB, as the demo key.
    pub fn slb(sim: &Simulator) -> Self {
        Self::new(sim.slb_endpoint(), "2014-05-15")
    }

    fn new(endpoint: String, version: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            endpoint,
            version: version.to_owned(),
            key_id: crate::DEMO_KEY_ID.to_owned(),
            secret: crate::DEMO_SECRET.to_owned(),
            timeout: Duration::from_secs(20),
        }
    }

    /// The same client signing with another AccessKey.
    pub fn with_key(mut self, key_id: &str, secret: &str) -> Self {
        self.key_id = key_id.to_owned();
        self.secret = secret.to_owned();
        self
    }

    /// The common parameters of a fresh request, as DCP's plugin sends them.
    pub fn common(&self, action: &str) -> Vec<(String, String)> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        [
            ("AccessKeyId", self.key_id.as_str()),
            ("Action", action),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", &uuid::Uuid::now_v7().to_string()),
            ("SignatureVersion", "1.0"),
            ("Timestamp", &aliyun_rpc::timestamp(now)),
            ("Version", self.version.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Calls `action`, panicking on a transport error.
    pub async fn call(&self, action: &str, params: &[(&str, &str)]) -> Reply {
        self.try_call(action, params)
            .await
            .expect("transport error")
    }

    /// Calls `action` like the plugin: POST, common parameters in the query,
    /// the action's in a form body, the signature over both.
    pub async fn try_call(
        &self,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<Reply, reqwest::Error> {
        let body: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.send("POST", self.common(action), body).await
    }

    /// Sends exactly these parameters (`query` in the URL, `form` in the
    /// body), signed with this client's secret for `method`.
    pub async fn send(
        &self,
        method: &str,
        query: Vec<(String, String)>,
        form: Vec<(String, String)>,
    ) -> Result<Reply, reqwest::Error> {
        let all: Vec<(String, String)> = query.iter().chain(&form).cloned().collect();
        let signature = sign(&self.secret, method, &all);
        self.send_signed(method, query, form, &signature).await
    }

    /// Like [`Self::send`] with a given signature.
    pub async fn send_signed(
        &self,
        method: &str,
        query: Vec<(String, String)>,
        form: Vec<(String, String)>,
        signature: &str,
    ) -> Result<Reply, reqwest::Error> {
        let url = format!(
            "{}/?{}",
            self.endpoint,
            aliyun_rpc::encode_query(&query, signature)
        );
        let mut request = self
            .http
            .request(method.parse().unwrap(), url)
            .timeout(self.timeout);
        if !form.is_empty() {
            let body: Vec<String> = form
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        aliyun_rpc::percent_encode(k),
                        aliyun_rpc::percent_encode(v)
                    )
                })
                .collect();
            request = request
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.join("&"));
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            content_type,
            text,
            json,
        })
    }

    /// Polls DescribeInstanceAttribute until `id` has `status`.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let instance = self
                .call("DescribeInstanceAttribute", &[("InstanceId", id)])
                .await
                .ok();
            if instance["Status"] == status {
                return instance;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never became {status}: {instance}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until `id` is gone (DescribeInstanceAttribute says 404).
    pub async fn wait_gone(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = self
                .call("DescribeInstanceAttribute", &[("InstanceId", id)])
                .await;
            if reply.status == 404 {
                reply.expect_error(404, "InvalidInstanceId.NotFound");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never went away: {}",
                reply.text
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// RunInstances in cn-hangzhou-h with sensible defaults plus `extra`.
    pub async fn run(&self, extra: &[(&str, &str)]) -> Reply {
        let mut params: Vec<(&str, &str)> = vec![
            ("RegionId", "cn-hangzhou"),
            ("ZoneId", "cn-hangzhou-h"),
            ("ImageId", "ubuntu_22_04_x64_20G_alibase_20240130.vhd"),
            ("InstanceType", "ecs.g6.large"),
            ("SecurityGroupId", "sg-bp1dcpsim0default01"),
            ("VSwitchId", "vsw-bp1dcpsim0zoneh0001"),
            ("SystemDisk.Category", "cloud_efficiency"),
            ("SystemDisk.Size", "40"),
            ("InternetChargeType", "PayByTraffic"),
            ("InstanceChargeType", "PostPaid"),
        ];
        for (k, v) in extra {
            params.retain(|(name, _)| name != k);
            params.push((k, v));
        }
        self.call("RunInstances", &params).await
    }
}

/// Signature V1 computed here, independently of the simulator's verifier.
pub fn sign(secret: &str, method: &str, params: &[(String, String)]) -> String {
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(aliyun_rpc::signing_key(secret).as_bytes()).unwrap();
    mac.update(aliyun_rpc::string_to_sign(method, params).as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The ids of a RunInstances answer.
pub fn ids(reply: &Value) -> Vec<String> {
    list(reply, "InstanceIdSets", "InstanceIdSet")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}
