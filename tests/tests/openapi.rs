//! The OpenAPI document tells the truth: every operation it lists is called
//! with inputs generated from its schemas — valid ones at the edges of every
//! range, and invalid ones (wrong types, missing fields, out-of-range
//! numbers, too-long strings, bad enum values, non-JSON bodies, wrong content
//! types, huge ids) — and every answer must be a status the operation
//! documents, with a body matching the documented schema, and never a 5xx.
//!
//! Generation is deterministic (seeded; `DCP_OPENAPI_SEED` picks another
//! seed). Ids are filled with fixtures made first, so most valid calls reach
//! the handler's real work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use dcp_tests::Backend;
use http_body_util::BodyExt as _;
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

/// Valid inputs of these operations are not sent: they reach out to hosts
/// or clouds (SSH connections, VM creation, task steps run over SSH on pool
/// nodes). Their invalid inputs still are, and must be refused.
const SIDE_EFFECTS: [(&str, &str, &str); 5] = [
    (
        "POST",
        "/api/v1/executions",
        "runs commands on hosts over SSH",
    ),
    ("POST", "/api/v1/machines", "creates cloud machines"),
    (
        "POST",
        "/api/v1/machines/adopt",
        "connects to the address over SSH",
    ),
    (
        "POST",
        "/api/v1/tasks",
        "runs steps on the pool's nodes over SSH",
    ),
    (
        "POST",
        "/api/v1/image-projects/{id}/builds",
        "fetches the project's sources and builds on the Docker daemon",
    ),
];

/// Valid inputs these operations cannot be given here: an upload needs a
/// built plugin component (tests/tests/plugins.rs uploads real ones).
const NO_VALID_INPUT: [(&str, &str, &str); 1] = [(
    "POST",
    "/api/v1/plugins",
    "a valid upload is a built WebAssembly component",
)];

/// Body fields whose rules depend on more than the value's own form: the
/// server may refuse a schema-valid value for them with 422. (Operations
/// under a path, the field — `[]` for any index, `.*` for anything below —
/// and why no schema can say it.)
const RULES_NO_SCHEMA_SAYS: [(&str, &str, &str); 27] = [
    (
        "/api/v1/lb-units",
        "plugin",
        "must name an active load-balancer plugin",
    ),
    (
        "/api/v1/lb-units",
        "config",
        "the unit's plugin checks its settings",
    ),
    (
        "/api/v1/lb-units",
        "settings",
        "the unit's plugin checks a node's settings",
    ),
    (
        "/api/v1/lb-units",
        "files[].version",
        "must be a version of the file the unit has",
    ),
    (
        "/api/v1/lb-units",
        "files[].path",
        "must be a file the unit has, named once",
    ),
    (
        "/api/v1/commands",
        "script",
        "its form depends on `mode`: an expert command's script is a JSON module call",
    ),
    (
        "/api/v1/commands",
        "params[].choices",
        "only enum parameters have choices: it depends on the parameter's `type`",
    ),
    (
        "/api/v1/task-templates",
        "steps[].name",
        "a template's purpose decides its first and last steps",
    ),
    (
        "/api/v1/task-templates",
        "steps",
        "a template's purpose decides which steps it must have (a deploy's start_service)",
    ),
    (
        "/api/v1/services",
        "image",
        "an image reference's name (registry and path, before any tag or digest) is at most 255 characters",
    ),
    (
        "/api/v1/services",
        "container.ports[].host_port",
        "a host port is published once across the list",
    ),
    (
        "/api/v1/services",
        "container.volumes[].container_path",
        "a container path is mounted once across the list",
    ),
    (
        "/api/v1/services",
        "container.health_check.probe.http.port",
        "the health check asks one of the service's published TCP ports",
    ),
    (
        "/api/v1/task-templates",
        "steps[].leftover_machines",
        "only a create_vm step makes machines: it depends on the step's `name`",
    ),
    (
        "/api/v1/machine-templates",
        "spec.*",
        "the cloud's own choices and OpenDCP's cross-field rules (network type, disk sizes per category)",
    ),
    (
        "/api/v1/accounts",
        "provider",
        "must name an active cloud-provider plugin",
    ),
    (
        "/api/v1/lb-units",
        "files",
        "no files means the unit's current ones: refused while the unit has none (its state, not the form)",
    ),
    (
        "/api/v1/registry/retention",
        "keep_last",
        "a retention rule has keep_last, keep_days or both (a rule across the two fields)",
    ),
    (
        "/api/v1/lb-units",
        "address",
        "a balancer node's address is a machine DCP knows (created or adopted): a reference, like an id",
    ),
    (
        "/api/v1/lb-units",
        "port",
        "a balancer node's SSH port goes only with its address (a rule across fields: \
         machine_id and account_id name a node without one)",
    ),
    (
        "/api/v1/accounts",
        "secret",
        "required when creating, optional when updating (one schema for both)",
    ),
    (
        "/api/v1/accounts",
        "config",
        "checked by the provider plugin's own configuration schema",
    ),
    (
        "/api/v1/image-projects",
        "repository",
        "base/ holds the bases users push: a project's repository is outside it",
    ),
    (
        "/api/v1/image-projects",
        "dockerfile.*",
        "a source's rules go beyond a schema: a URL's scheme and no credentials in it, refs \
         not starting with '-' and commits in full, paths inside the repository, and the \
         instruction form's (FROM first, one-line values)",
    ),
    (
        "/api/v1/image-projects",
        "media.*",
        "the URL, revision and subdirectory rules depend on the media's kind (git or svn)",
    ),
    (
        "/api/v1/image-projects",
        "build_args.*",
        "a build argument is named like a variable and its value is one line",
    ),
    (
        "/api/v1/image-projects/dockerfile",
        "instructions[].*",
        "FROM first (after any ARG), one-line values, variable names, absolute paths",
    ),
];

/// Operations that ask a node over SSH: the walk's node (127.0.0.1:1) never
/// answers, so their documented 502 is what a valid call gets.
const ASK_THE_NODE: [&str; 2] = [
    "/api/v1/pools/{id}/nodes/{node_id}/container",
    "/api/v1/pools/{id}/nodes/{node_id}/logs",
];

const DEFAULT_SEED: u64 = 0x0D0C_0FFE_E14A_7E57;

#[tokio::test]
async fn every_operation_answers_as_documented_on_sqlite() {
    walk(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_operation_answers_as_documented_on_postgres() {
    walk(Backend::Postgres).await;
}

async fn walk(backend: Backend) {
    // A default key, so a node can be added by address as a fixture; a
    // registry of its own (Debian's docker-registry), so the image market's
    // operations answer from a real one.
    let registry = match backend {
        Backend::Sqlite => "127.26.1.1:5000",
        Backend::Postgres => "127.26.1.2:5000",
    };
    let (state, _db) = backend
        .state_with(|config| {
            dcp_tests::with_default_key(config);
            config.registry_addr = Some(registry.parse().unwrap());
        })
        .await;
    let admin = state
        .store
        .user_credentials("admin")
        .await
        .unwrap()
        .unwrap()
        .0;
    let token = state.auth.create_token(admin.id, "walker").await.unwrap().1;
    let seed = std::env::var("DCP_OPENAPI_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut walker = Walker {
        app: dcp::app(state.clone()),
        token,
        doc: Value::Null,
        rng: Rng(seed),
        seed,
        max_body: state.config.max_body_bytes,
        ids: HashMap::new(),
        validators: HashMap::new(),
        failures: Vec::new(),
        calls: 0,
        successes: 0,
    };
    let doc = walker
        .call(&Call::get("/api/v1/openapi.json"))
        .await
        .json()
        .expect("the document is JSON");
    walker.doc = doc;
    walker.check_references();
    walker.make_fixtures().await;

    let mut operations = walker.operations();
    // Deletes last, innermost first, so the other operations find their
    // fixtures, and a parent's delete meets its children (and answers 409).
    operations.sort_by_key(|op| (op.method == "DELETE", std::cmp::Reverse(op.path.len())));
    for op in &operations {
        walker.operation(op).await;
    }
    eprintln!(
        "openapi walk ({backend:?}, seed {seed:#x}): {} operations, {} calls, {} answered 2xx",
        operations.len(),
        walker.calls,
        walker.successes
    );
    assert!(
        walker.failures.is_empty(),
        "{} answers break the OpenAPI document (seed {seed:#x}):\n\n{}",
        walker.failures.len(),
        walker.failures.join("\n\n")
    );
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = u64::try_from(i128::from(hi) - i128::from(lo) + 1).unwrap_or(u64::MAX);
        let offset = i64::try_from(self.next() % span).unwrap_or(0);
        lo.saturating_add(offset)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// One operation of the document.
struct Operation {
    method: String,
    path: String,
    spec: Value,
}

impl Operation {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn parameters(&self) -> Vec<Value> {
        self.spec["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Why the operation is in `list`, if it is.
    fn listed_in(&self, list: &'static [(&str, &str, &str)]) -> Option<&'static str> {
        list.iter()
            .find(|(m, p, _)| *m == self.method && *p == self.path)
            .map(|(_, _, why)| *why)
    }
}

/// Which kind of values to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    /// Required fields only, every value at its lower bound.
    Low,
    /// Every field, every value at its upper bound.
    High,
    /// Optional fields by a coin, values anywhere in range.
    Any,
}

/// A request to send, and what it is meant to test.
#[derive(Clone)]
struct Call {
    method: Method,
    uri: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Call {
    fn get(uri: &str) -> Self {
        Self {
            method: Method::GET,
            uri: uri.to_owned(),
            content_type: None,
            body: Vec::new(),
        }
    }

    fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body = if body.len() > 400 {
            format!("{}… ({} bytes)", truncate(&body, 400), self.body.len())
        } else {
            body.into_owned()
        };
        format!(
            "{} {} content-type={} body={body}",
            self.method,
            self.uri,
            self.content_type.as_deref().unwrap_or("(none)")
        )
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    fn text(&self) -> String {
        truncate(&String::from_utf8_lossy(&self.body), 600).to_owned()
    }
}

/// Whether an input is meant to be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Valid,
    Invalid,
}

struct Walker {
    app: Router,
    token: String,
    doc: Value,
    rng: Rng,
    seed: u64,
    max_body: usize,
    /// An existing object per collection (`clusters` → an id).
    ids: HashMap<String, i64>,
    validators: HashMap<String, jsonschema::Validator>,
    failures: Vec<String>,
    calls: usize,
    successes: usize,
}

impl Walker {
    async fn call(&mut self, call: &Call) -> Answer {
        self.calls += 1;
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(&call.uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if let Some(ct) = &call.content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(Body::from(call.body.clone())).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = res.into_body();
        let mut bytes = Vec::new();
        if content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("text/event-stream"))
        {
            // A live stream does not end: read its first event only.
            let first_event = async {
                while !contains(&bytes, b"\n\n") {
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                bytes.extend_from_slice(&data);
                            }
                        }
                        _ => break,
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(20), first_event)
                .await
                .expect("an event stream sends its first event");
        } else {
            bytes = body.collect().await.unwrap().to_bytes().to_vec();
        }
        if status.is_success() {
            self.successes += 1;
        }
        Answer {
            status,
            content_type,
            body: bytes,
        }
    }

    fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        for _ in 0..32 {
            match value.get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    value = self
                        .doc
                        .pointer(reference.trim_start_matches('#'))
                        .unwrap_or(&Value::Null);
                }
                None => break,
            }
        }
        value
    }

    /// Every `$ref` in the document points at something.
    fn check_references(&mut self) {
        fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
            match value {
                Value::Object(map) => {
                    if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                        out.push(r);
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&self.doc, &mut all);
        let dangling: Vec<String> = all
            .into_iter()
            .filter(|r| self.doc.pointer(r.trim_start_matches('#')).is_none())
            .map(str::to_owned)
            .collect();
        if !dangling.is_empty() {
            self.failures.push(format!(
                "the document refers to what it lacks: {dangling:?}"
            ));
        }
    }

    fn operations(&self) -> Vec<Operation> {
        let mut out = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, spec) in item.as_object().unwrap() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    out.push(Operation {
                        method: method.to_uppercase(),
                        path: path.clone(),
                        spec: spec.clone(),
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
        out
    }

    async fn post_fixture(&mut self, collection: &str, uri: &str, body: &Value) {
        let call = Call {
            method: Method::POST,
            uri: uri.to_owned(),
            content_type: Some("application/json".into()),
            body: body.to_string().into_bytes(),
        };
        let answer = self.call(&call).await;
        let id = answer
            .json()
            .and_then(|v| {
                v.get("id")
                    .or_else(|| v.get(0).and_then(|v| v.get("id")))
                    .and_then(Value::as_i64)
            })
            .unwrap_or_else(|| {
                panic!(
                    "fixture {collection}: {} answered {} {}",
                    call.describe(),
                    answer.status,
                    answer.text()
                )
            });
        self.ids.insert(collection.to_owned(), id);
    }

    /// One object of each kind the API can make here, so ids in paths and
    /// bodies name real objects. Plugins, accounts, machines, executions and
    /// tasks need a cloud, a plugin build or hosts: their ids answer 404.
    async fn make_fixtures(&mut self) {
        self.post_fixture("clusters", "/api/v1/clusters", &json!({"name": "walk"}))
            .await;
        let cluster = self.ids["clusters"];
        self.post_fixture(
            "services",
            "/api/v1/services",
            &json!({"cluster_id": cluster, "name": "walk", "image": "nginx:1.27"}),
        )
        .await;
        let service = self.ids["services"];
        self.post_fixture(
            "pools",
            "/api/v1/pools",
            &json!({"service_id": service, "name": "walk"}),
        )
        .await;
        let pool = self.ids["pools"];
        self.post_fixture(
            "nodes",
            &format!("/api/v1/pools/{pool}/nodes"),
            &json!({"addresses": [{"address": "127.0.0.1", "port": 1}]}),
        )
        .await;
        self.post_fixture(
            "commands",
            "/api/v1/commands",
            &json!({"name": "walk", "script": "true"}),
        )
        .await;
        let command = self.ids["commands"];
        self.post_fixture(
            "command-groups",
            "/api/v1/command-groups",
            &json!({"name": "walk", "command_ids": [command]}),
        )
        .await;
        self.post_fixture("tokens", "/api/v1/tokens", &json!({"name": "walk"}))
            .await;
        // Anything else listed (seeded task templates) by its first item.
        for op in self.operations() {
            let collection = op.path.trim_start_matches("/api/v1/").to_owned();
            if op.method != "GET" || op.path.contains('{') || self.ids.contains_key(&collection) {
                continue;
            }
            let answer = self.call(&Call::get(&op.path)).await;
            let first = answer.json().and_then(|v| {
                let items = v.get("items").cloned().unwrap_or(v);
                items.get(0)?.get("id")?.as_i64()
            });
            if let Some(id) = first {
                self.ids.insert(collection, id);
            }
        }
    }

    /// The existing object a field or parameter named `name` refers to.
    fn fixture_for(&self, op: &Operation, name: &str) -> Option<i64> {
        let collection = match name {
            "id" => {
                // The segment before `{id}`: /pools/{id}/nodes → pools.
                let before = op.path.split("/{id}").next()?;
                before.rsplit('/').next()?.to_owned()
            }
            _ => {
                let stem = name
                    .strip_suffix("_ids")
                    .or_else(|| name.strip_suffix("_id"))?;
                match stem {
                    "group" => "command-groups".into(),
                    "template" => "machine-templates".into(),
                    s if s.ends_with("template") => "task-templates".into(),
                    s => format!("{s}s"),
                }
            }
        };
        self.ids.get(&collection).copied()
    }

    // ---------------------------------------------------------------
    // Value generation from schemas
    // ---------------------------------------------------------------

    /// A value the schema accepts, at `edge`.
    fn valid(&mut self, op: &Operation, schema: &Value, name: &str, edge: Edge) -> Value {
        let schema = self.resolve(schema).clone();
        if let Some(example) = schema.get("example")
            && edge == Edge::Any
            && self.accepts(&schema, example)
        {
            return example.clone();
        }
        if let Some(value) = schema.get("const") {
            return value.clone();
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            return match edge {
                Edge::Low => values[0].clone(),
                Edge::High => values[values.len() - 1].clone(),
                Edge::Any => {
                    let i = self.rng.between(0, values.len() as i64 - 1);
                    values[usize::try_from(i).unwrap()].clone()
                }
            };
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(options) = schema.get(key).and_then(Value::as_array) {
                let options: Vec<Value> = options
                    .iter()
                    .filter(|o| self.resolve(o).get("type") != Some(&json!("null")))
                    .cloned()
                    .collect();
                let pick = match edge {
                    Edge::Low => 0,
                    Edge::High => options.len() - 1,
                    Edge::Any => {
                        usize::try_from(self.rng.between(0, options.len() as i64 - 1)).unwrap()
                    }
                };
                return self.valid(op, &options[pick], name, edge);
            }
        }
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            let mut merged = Map::new();
            for part in parts.clone() {
                if let Value::Object(fields) = self.valid(op, &part, name, edge) {
                    merged.extend(fields);
                }
            }
            return Value::Object(merged);
        }
        match type_of(&schema).as_deref() {
            Some("object") => {
                let mut out = Map::new();
                let required = required_of(&schema);
                let properties = schema["properties"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for (field, sub) in &properties {
                    let include = match edge {
                        Edge::Low => required.contains(field),
                        Edge::High => true,
                        Edge::Any => required.contains(field) || self.rng.coin(),
                    };
                    if include {
                        let value = self.valid(op, sub, field, edge);
                        out.insert(field.clone(), value);
                    }
                }
                if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object())
                    && edge != Edge::Low
                {
                    let value = self.valid(op, extra, "key", edge);
                    out.insert("walk_key".into(), value);
                }
                Value::Object(out)
            }
            Some("array") => {
                let min = schema["minItems"].as_u64().unwrap_or(0);
                let max = schema["maxItems"].as_u64().unwrap_or(min.max(2));
                let count = match edge {
                    Edge::Low => min,
                    Edge::High => max.min(min.max(2)),
                    Edge::Any => self.rng.between(min as i64, max.min(3) as i64) as u64,
                };
                let items = schema.get("items").cloned().unwrap_or(json!({}));
                (0..count)
                    .map(|_| self.valid(op, &items, name, edge))
                    .collect()
            }
            Some("string") => Value::String(self.valid_string(&schema, name, edge)),
            Some("integer") => {
                if let Some(id) = self.fixture_for(op, name) {
                    return json!(id);
                }
                let (lo, hi) = int_range(&schema);
                json!(match edge {
                    Edge::Low => lo,
                    Edge::High => hi,
                    Edge::Any => self.rng.between(lo, hi),
                })
            }
            Some("number") => {
                let lo = schema["minimum"].as_f64().unwrap_or(0.0);
                let hi = schema["maximum"].as_f64().unwrap_or(1000.0);
                json!(match edge {
                    Edge::Low => lo,
                    Edge::High => hi,
                    Edge::Any => f64::midpoint(lo, hi),
                })
            }
            Some("boolean") => json!(edge != Edge::Low),
            Some("null") => Value::Null,
            // `{}` (any JSON value) and untyped schemas.
            _ => json!({}),
        }
    }

    fn valid_string(&mut self, schema: &Value, name: &str, edge: Edge) -> String {
        if schema["format"] == "date-time" {
            return "2026-01-02T03:04:05Z".into();
        }
        let min = usize::try_from(schema["minLength"].as_u64().unwrap_or(0)).unwrap();
        let max = schema["maxLength"]
            .as_u64()
            .map_or(min.max(24), |m| usize::try_from(m).unwrap());
        let len = match edge {
            Edge::Low => min,
            Edge::High => max,
            Edge::Any => {
                usize::try_from(self.rng.between(min as i64, max.min(min + 40) as i64)).unwrap()
            }
        };
        // Hosts and addresses stay on loopback whatever the schema allows.
        let base = if ["address", "host", "hosts"].contains(&name) {
            "127.0.0.1".to_owned()
        } else {
            "a".repeat(len)
        };
        let candidates = [
            base.clone(),
            "a1".into(),
            "127.0.0.1".into(),
            "127.0.0.1:22".into(),
            "walk-1".into(),
            format!("a{}", "1".repeat(len.saturating_sub(1))),
            // Absolute paths (volume mounts).
            format!("/{}", "a".repeat(len.saturating_sub(1))),
        ];
        candidates
            .into_iter()
            .find(|c| self.accepts(schema, &json!(c)))
            .unwrap_or(base)
    }

    /// Schema-invalid variants of a value: (what is wrong, the value).
    fn invalid(&mut self, schema: &Value) -> Vec<(String, Value)> {
        let schema = self.resolve(schema).clone();
        let mut out = Vec::new();
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            if values.iter().all(Value::is_string) {
                out.push(("a value not in its enum".into(), json!("no-such-value")));
            }
            return out;
        }
        let ty = type_of(&schema);
        let wrong = match ty.as_deref() {
            Some("string") => Some(json!(12345)),
            Some("integer" | "number") => Some(json!("twelve")),
            Some("boolean") => Some(json!("yes")),
            Some("array") => Some(json!({"not": "a list"})),
            Some("object") => Some(json!([1, 2])),
            _ => None,
        };
        if let Some(wrong) = wrong {
            out.push(("a value of the wrong type".into(), wrong));
        }
        if let Some(max) = schema["maxLength"].as_u64() {
            out.push((
                format!("a string longer than {max}"),
                json!("a".repeat(usize::try_from(max).unwrap() + 1)),
            ));
        }
        if let Some(min) = schema["minLength"].as_u64().filter(|m| *m > 0) {
            out.push((
                format!("a string shorter than {min}"),
                json!("a".repeat(usize::try_from(min).unwrap() - 1)),
            ));
        }
        if schema.get("pattern").is_some() {
            for bad in ["Not Valid!", "a\u{0}b", "a\nb"] {
                if !self.accepts(&schema, &json!(bad)) {
                    out.push((format!("a string against its pattern: {bad:?}"), json!(bad)));
                    break;
                }
            }
        }
        if ty.as_deref() == Some("integer") {
            if let Some(min) = schema["minimum"].as_i64() {
                out.push((format!("a number below {min}"), json!(i128::from(min) - 1)));
            }
            if let Some(max) = schema["maximum"].as_i64() {
                out.push((format!("a number above {max}"), json!(i128::from(max) + 1)));
            }
        }
        if let Some(max) = schema["maxItems"].as_u64() {
            let item = schema.get("items").cloned().unwrap_or(json!({}));
            let op = Operation {
                method: String::new(),
                path: String::new(),
                spec: Value::Null,
            };
            let one = self.valid(&op, &item, "item", Edge::Low);
            out.push((
                format!("more than {max} items"),
                Value::Array(vec![one; usize::try_from(max).unwrap() + 1]),
            ));
        }
        out
    }

    /// Whether `schema` (of this document) accepts `value`.
    fn accepts(&mut self, schema: &Value, value: &Value) -> bool {
        self.check(schema, value).is_ok()
    }

    /// Checks `value` against `schema`, `$ref`s resolved against the document.
    fn check(&mut self, schema: &Value, value: &Value) -> Result<(), String> {
        let key = schema.to_string();
        if !self.validators.contains_key(&key) {
            let mut root = match schema {
                Value::Object(map) => map.clone(),
                _ => Map::new(),
            };
            root.insert("components".into(), self.doc["components"].clone());
            let validator = jsonschema::draft202012::new(&Value::Object(root))
                .map_err(|e| format!("the schema does not compile: {e}"))?;
            self.validators.insert(key.clone(), validator);
        }
        let validator = &self.validators[&key];
        let errors: Vec<String> = validator
            .iter_errors(value)
            .take(5)
            .map(|e| format!("at {}: {e}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    // ---------------------------------------------------------------
    // Requests
    // ---------------------------------------------------------------

    /// The operation's parameters, valid, at `edge`.
    fn valid_params(&mut self, op: &Operation, edge: Edge) -> BTreeMap<String, (String, Value)> {
        let mut out = BTreeMap::new();
        for p in op.parameters() {
            let name = p["name"].as_str().unwrap().to_owned();
            let place = p["in"].as_str().unwrap().to_owned();
            let required = p["required"].as_bool().unwrap_or(false);
            let include = required
                || match edge {
                    Edge::Low => false,
                    Edge::High => true,
                    Edge::Any => self.rng.coin(),
                };
            if include {
                let value = self.valid(op, &p["schema"], &name, edge);
                out.insert(name, (place, value));
            }
        }
        out
    }

    fn uri(op: &Operation, params: &BTreeMap<String, (String, Value)>) -> String {
        let mut path = op.path.clone();
        let mut query = Vec::new();
        for (name, (place, value)) in params {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match place.as_str() {
                "path" => path = path.replace(&format!("{{{name}}}"), &encode(&text)),
                "query" => query.push(format!("{}={}", encode(name), encode(&text))),
                _ => {}
            }
        }
        if query.is_empty() {
            path
        } else {
            format!("{path}?{}", query.join("&"))
        }
    }

    /// The JSON body schema, if the operation takes one.
    fn body_schema(op: &Operation) -> Option<(String, Value)> {
        let content = op.spec["requestBody"]["content"].as_object()?;
        content
            .iter()
            .next()
            .map(|(ct, c)| (ct.clone(), c["schema"].clone()))
    }

    async fn operation(&mut self, op: &Operation) {
        let body = Self::body_schema(op);
        let skip_valid = op
            .listed_in(&SIDE_EFFECTS)
            .or_else(|| op.listed_in(&NO_VALID_INPUT));
        let mut base_params = self.valid_params(op, Edge::Low);
        let base_body = body
            .as_ref()
            .map(|(_, schema)| self.valid(op, schema, "body", Edge::Low));
        let json_body = body
            .as_ref()
            .is_some_and(|(ct, _)| ct == "application/json");
        let make = |params: &BTreeMap<String, (String, Value)>, body: Option<&Value>| Call {
            method: Method::from_bytes(op.method.as_bytes()).unwrap(),
            uri: Self::uri(op, params),
            content_type: body.map(|_| "application/json".to_owned()),
            body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        };

        // Valid inputs, at each edge.
        if skip_valid.is_none() && (json_body || body.is_none()) {
            for edge in [Edge::Low, Edge::High, Edge::Any] {
                let params = self.valid_params(op, edge);
                let body = body
                    .as_ref()
                    .map(|(_, schema)| self.valid(op, schema, "body", edge));
                let call = make(&params, body.as_ref());
                let label = format!("valid input ({edge:?} edge)");
                self.judge(op, &label, Intent::Valid, &call).await;
            }
        }

        // Invalid parameters, one at a time.
        for p in op.parameters() {
            let name = p["name"].as_str().unwrap().to_owned();
            let place = p["in"].as_str().unwrap().to_owned();
            let mut variants = self.invalid(&p["schema"]);
            // Query and path values are text: any text is "of type string".
            if type_of(self.resolve(&p["schema"])).as_deref() == Some("string") {
                variants.retain(|(what, _)| what != "a value of the wrong type");
            }
            if place == "path" {
                if type_of(self.resolve(&p["schema"])).as_deref() == Some("integer") {
                    variants.push(("an id beyond 64 bits".into(), json!("99999999999999999999")));
                    // The largest id the schema allows: no object has it.
                    let most = self.resolve(&p["schema"])["maximum"]
                        .as_i64()
                        .unwrap_or(i64::MAX);
                    variants.push(("an id no object has".into(), json!(most)));
                } else {
                    variants.push(("bytes that are not UTF-8".into(), json!("%FF%FE")));
                }
            }
            for (what, value) in variants {
                let mut params = base_params.clone();
                params.insert(name.clone(), (place.clone(), value));
                let mut call = make(&params, base_body.as_ref());
                if what.starts_with("bytes") {
                    call.uri = call.uri.replace("%25FF%25FE", "%FF%FE");
                }
                let intent = if what == "an id no object has" {
                    Intent::Valid
                } else {
                    Intent::Invalid
                };
                let label = format!("{place} parameter `{name}`: {what}");
                self.judge(op, &label, intent, &call).await;
            }
        }
        base_params.retain(|_, (place, _)| place == "path");

        // Invalid bodies.
        let Some((content_type, schema)) = body else {
            return;
        };
        let valid_body = base_body.unwrap_or(Value::Null);
        let raw = |ct: Option<&str>, bytes: Vec<u8>| Call {
            method: Method::from_bytes(op.method.as_bytes()).unwrap(),
            uri: Self::uri(op, &base_params),
            content_type: ct.map(str::to_owned),
            body: bytes,
        };
        let serialized = valid_body.to_string().into_bytes();
        let mut calls = vec![
            (
                "a body that is not JSON".to_owned(),
                raw(Some(&content_type), b"{\"name\": ".to_vec()),
            ),
            (
                "a body of type text/plain".into(),
                raw(Some("text/plain"), serialized.clone()),
            ),
            ("a body with no content type".into(), raw(None, serialized)),
            (
                format!("a body over the {} byte limit", self.max_body),
                raw(
                    Some(&content_type),
                    format!("{{\"walk\": \"{}\"}}", "a".repeat(self.max_body)).into_bytes(),
                ),
            ),
        ];
        if json_body {
            let with = |body: &Value| raw(Some("application/json"), body.to_string().into_bytes());
            calls.push((
                "an empty body".into(),
                raw(Some("application/json"), Vec::new()),
            ));
            for (what, value) in self.invalid(&schema) {
                calls.push((format!("the body: {what}"), with(&value)));
            }
            let resolved = self.resolve(&schema).clone();
            if let Value::Object(fields) = &valid_body {
                if resolved["additionalProperties"] == json!(false) {
                    let mut extra = fields.clone();
                    extra.insert("no_such_field".into(), json!(1));
                    calls.push(("an unknown field".into(), with(&Value::Object(extra))));
                }
                for field in required_of(&resolved) {
                    let mut without = fields.clone();
                    without.remove(&field);
                    calls.push((
                        format!("required field `{field}` missing"),
                        with(&Value::Object(without)),
                    ));
                }
                let properties = resolved["properties"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for (field, sub) in properties {
                    for (what, value) in self.invalid(&sub) {
                        let mut changed = fields.clone();
                        changed.insert(field.clone(), value);
                        calls.push((
                            format!("field `{field}`: {what}"),
                            with(&Value::Object(changed)),
                        ));
                    }
                }
            }
        }
        for (what, call) in calls {
            self.judge(op, &what, Intent::Invalid, &call).await;
        }
    }

    /// Sends `call` and checks the answer against the document.
    async fn judge(&mut self, op: &Operation, what: &str, intent: Intent, call: &Call) {
        let answer = self.call(call).await;
        let status = answer.status.as_u16();
        let mut problems = Vec::new();
        let responses = op.spec["responses"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let documented: Vec<&String> = responses.keys().collect();
        let node_away = status == 502 && ASK_THE_NODE.contains(&op.path.as_str());
        if answer.status.is_server_error() && !node_away {
            problems.push(format!("a server error ({status})"));
        }
        match responses.get(&status.to_string()) {
            None => problems.push(format!(
                "status {status} is not documented (documented: {})",
                documented
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(response) => {
                let response = self.resolve(response).clone();
                if let Err(problem) = self.check_body(&response, &answer) {
                    problems.push(problem);
                }
            }
        }
        match intent {
            Intent::Invalid if answer.status.is_success() => problems.push(format!(
                "the input breaks the documented schema, yet the server accepted it ({status})"
            )),
            Intent::Valid if matches!(status, 400 | 413 | 415) => problems.push(format!(
                "the input follows the documented schema, yet the server refused its form ({status})"
            )),
            Intent::Valid if status == 422 => {
                let field = answer
                    .json()
                    .and_then(|v| v["error"]["field"].as_str().map(str::to_owned));
                if let Some(field) = field
                    && let Some(problem) = Self::refused_valid(op, call, &field)
                {
                    problems.push(problem);
                }
            }
            _ => {}
        }
        if !problems.is_empty() {
            let mut report = format!("{} — {what}\n  request: {}", op.name(), call.describe());
            let _ = write!(
                report,
                "\n  answer:  {} {}\n  problem: {}\n  (seed {:#x})",
                status,
                answer.text(),
                problems.join("\n  problem: "),
                self.seed
            );
            self.failures.push(report);
        }
    }

    /// Why a 422 naming `field` for a schema-valid input shows a constraint
    /// missing from the document, if it does. A parameter's schema says all
    /// it takes; so does a body field's, but for references to other
    /// objects (`…_id`) and the rules in [`RULES_NO_SCHEMA_SAYS`].
    fn refused_valid(op: &Operation, call: &Call, field: &str) -> Option<String> {
        if op.parameters().iter().any(|p| p["name"] == field) {
            return Some(format!(
                "the documented parameter `{field}` allows the value sent, yet the server \
                 refused it (422)"
            ));
        }
        let last = field.rsplit('.').next().unwrap_or(field);
        let last = last.split('[').next().unwrap_or(last);
        if last.ends_with("_id") || last.ends_with("_ids") {
            return None;
        }
        let general = without_indexes(field);
        if RULES_NO_SCHEMA_SAYS.iter().any(|(path, rule, _why)| {
            op.path.starts_with(path)
                && (general == *rule
                    || rule
                        .strip_suffix(".*")
                        .is_some_and(|prefix| general.starts_with(&format!("{prefix}."))))
        }) {
            return None;
        }
        let body: Value = serde_json::from_slice(&call.body).ok()?;
        match at_field(&body, field) {
            None => Some(format!(
                "the body omitted `{field}`, which the document does not require, yet the \
                 server refused it (422)"
            )),
            Some(value) if !value.is_object() => Some(format!(
                "the document allows `{field}` = {value}, yet the server refused it (422)"
            )),
            Some(_) => None,
        }
    }

    /// The answer's body matches the documented response.
    fn check_body(&mut self, response: &Value, answer: &Answer) -> Result<(), String> {
        let Some(content) = response["content"].as_object().filter(|c| !c.is_empty()) else {
            return if answer.body.is_empty() {
                Ok(())
            } else {
                Err("the documented response has no body, yet one was sent".into())
            };
        };
        let mime = answer
            .content_type
            .as_deref()
            .and_then(|ct| ct.split(';').next())
            .unwrap_or("(none)")
            .trim()
            .to_owned();
        let Some(documented) = content.get(&mime) else {
            return Err(format!(
                "content type {mime} is not documented (documented: {})",
                content.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        let schema = documented["schema"].clone();
        let value = match mime.as_str() {
            "application/json" => serde_json::from_slice(&answer.body)
                .map_err(|e| format!("the body is not JSON: {e}"))?,
            "text/event-stream" => {
                let text = String::from_utf8_lossy(&answer.body);
                let data: String = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                serde_json::from_str(&data)
                    .map_err(|e| format!("the first event's data is not JSON: {e}: {text}"))?
            }
            _ => Value::String(String::from_utf8_lossy(&answer.body).into_owned()),
        };
        self.check(&schema, &value)
            .map_err(|e| format!("the body does not match the documented schema: {e}"))?;
        if let Some(code) = value["error"]["code"].as_str() {
            let code: dcp_api_types::ErrorCode =
                serde_json::from_value(json!(code)).map_err(|e| format!("error code: {e}"))?;
            if code.status() != answer.status.as_u16() {
                return Err(format!(
                    "error code {code:?} belongs to status {}, not {}",
                    code.status(),
                    answer.status
                ));
            }
        }
        Ok(())
    }
}

/// `a[0].b[12]` → `a[].b[]`.
fn without_indexes(field: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in field.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

/// The value at a field path as the server names it: `a.b[0].c`.
fn at_field<'a>(body: &'a Value, field: &str) -> Option<&'a Value> {
    let mut value = body;
    for part in field.split('.') {
        let mut pieces = part.split('[');
        let name = pieces.next()?;
        if !name.is_empty() {
            value = value.get(name)?;
        }
        for index in pieces {
            value = value.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(value)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The schema's type, the first that is not `null` when it lists several.
fn type_of(schema: &Value) -> Option<String> {
    match &schema["type"] {
        Value::String(t) => Some(t.clone()),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .map(str::to_owned),
        _ if schema.get("properties").is_some() => Some("object".into()),
        _ => None,
    }
}

fn required_of(schema: &Value) -> Vec<String> {
    schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// An integer schema's range, bounded to keep values sendable.
fn int_range(schema: &Value) -> (i64, i64) {
    let lo = schema["minimum"]
        .as_i64()
        .or_else(|| schema["exclusiveMinimum"].as_i64().map(|m| m + 1))
        .unwrap_or(0);
    let hi = schema["maximum"]
        .as_i64()
        .or_else(|| schema["exclusiveMaximum"].as_i64().map(|m| m - 1))
        .unwrap_or(lo.saturating_add(1000));
    (lo, hi)
}

/// Percent-encodes everything but unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// What the walker cannot reach without a plugin or a running execution.
#[tokio::test]
async fn plugin_configs_are_objects_and_execution_events_are_untagged() {
    let (state, _db) = Backend::Sqlite.state().await;
    let admin = state
        .store
        .user_credentials("admin")
        .await
        .unwrap()
        .unwrap()
        .0;
    let token = state.auth.create_token(admin.id, "t").await.unwrap().1;
    let app = dcp::app(state);
    let send = |req: Request<Body>| {
        let app = app.clone();
        async move {
            let res = app.oneshot(req).await.unwrap();
            let status = res.status();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    // The schema says `config` is an object; an array is refused naming it
    // (before any plugin is looked up).
    let (status, body) = send(
        Request::post("/api/v1/plugins/1/test")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"config": []}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "config", "{body}");

    // An event's data is the variant's value alone (the SSE event name
    // says which), and so is the documented schema.
    let (_, doc) = send(
        Request::get("/api/v1/openapi.json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let schema = &doc["components"]["schemas"]["ExecutionEvent"];
    let variants: Vec<&str> = schema["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("ExecutionEvent: {schema}"))
        .iter()
        .map(|v| v["$ref"].as_str().unwrap_or_else(|| panic!("tagged: {v}")))
        .collect();
    assert_eq!(
        variants,
        [
            "#/components/schemas/Execution",
            "#/components/schemas/ExecutionHost",
            "#/components/schemas/HostOutput",
            "#/components/schemas/ExecutionSummary"
        ]
    );
}

/// The documented pattern of an image reference is the server's rule: each
/// reference is accepted by both or refused by both (the 255-character
/// limit of the name alone is beyond a pattern; see RULES_NO_SCHEMA_SAYS).
#[tokio::test]
async fn image_references_are_refused_as_the_document_says() {
    let (state, _db) = Backend::Sqlite.state().await;
    let admin = state
        .store
        .user_credentials("admin")
        .await
        .unwrap()
        .unwrap()
        .0;
    let token = state.auth.create_token(admin.id, "t").await.unwrap().1;
    let app = dcp::app(state);
    let send = |method: Method, path: &str, body: Option<Value>| {
        let app = app.clone();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        async move {
            let res = app.oneshot(request).await.unwrap();
            let status = res.status();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let (_, doc) = send(Method::GET, "/api/v1/openapi.json", None).await;
    let mut schema = doc["components"]["schemas"]["ServiceInput"]["properties"]["image"].clone();
    assert!(schema.get("pattern").is_some(), "{schema}");
    assert_eq!(
        schema["maxLength"].as_u64(),
        u64::try_from(dcp::validate::IMAGE_REFERENCE_MAX).ok(),
        "the longest reference: a name, a tag and a sha512 digest"
    );
    let tag = &doc["components"]["schemas"]["TaskInput"]["properties"]["tag"];
    assert_eq!(
        tag["maxLength"].as_u64(),
        u64::try_from(dcp::validate::IMAGE_TAG_MAX).ok(),
        "{tag}"
    );
    schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    let documented = jsonschema::draft202012::new(&schema).unwrap();
    let (status, cluster) = send(
        Method::POST,
        "/api/v1/clusters",
        Some(json!({"name": "images"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{cluster}");
    let sha256 = "f".repeat(64);
    for (i, image) in [
        "nginx".to_owned(),
        "registry.local:5000/shop/web:1.4".into(),
        "[::1]:5000/repo:tag".into(),
        format!("web:1@sha256:{sha256}"),
        format!("xn--7o8h.com/web@sha512:{}", "0".repeat(128)),
        "Uppercase/lowercase:Tag_1".into(),
        "a__b/c---d".into(),
        "walk/web:".into(),
        "http://x/y".into(),
        "web@sha256:abc".into(),
        format!("web@sha256:{}", "F".repeat(64)),
        format!("web@md5:{sha256}"),
        "Shop/Web".into(),
        "a___b".into(),
        "web:-1".into(),
        "[fe80::1%eth0]:5000/repo".into(),
        " nginx".into(),
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({"cluster_id": cluster["id"], "name": format!("s{i}"), "image": image});
        let (status, answer) = send(Method::POST, "/api/v1/services", Some(body)).await;
        let in_document = documented.is_valid(&json!(image));
        if in_document {
            assert_eq!(status, StatusCode::CREATED, "{image:?}: {answer}");
        } else {
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{image:?}: {answer}"
            );
            assert_eq!(answer["error"]["field"], "image", "{image:?}: {answer}");
        }
    }
}
