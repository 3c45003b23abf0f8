//! The plugin runtime against misbehaving components: each failure comes
//! back typed, within its deadline, and the host keeps serving.

#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use dcp::plugins::RemoteCommand;
use dcp::plugins::{
    CloudProvider, Failure, Grants, Limits, OriginGrant, Plugin, Runtime, Secret, WasmPlugin,
};
use dcp_tests::{fixture_plugin, memory_hog};
use hmac::{Hmac, Mac};

static RUNTIME: LazyLock<Arc<Runtime>> = LazyLock::new(|| Runtime::new().unwrap());
static CHAOS: LazyLock<Arc<Plugin>> = LazyLock::new(|| {
    Arc::new(
        RUNTIME
            .load("chaos", "0.1.0", &fixture_plugin("chaos-provider"))
            .unwrap(),
    )
});

/// Two linear memories, in two core instances (see [`memory_hog`]).
static HOG: LazyLock<Arc<Plugin>> =
    LazyLock::new(|| Arc::new(RUNTIME.load("hog", "1.0.0", &memory_hog(0)).unwrap()));

const SECRET: &str = "s3cr3t-never-in-the-guest";

fn provider(config: &serde_json::Value, grants: Grants) -> WasmPlugin {
    WasmPlugin::new(
        Arc::clone(&CHAOS),
        Grants {
            config: config.to_string(),
            ..grants
        },
    )
}

fn limits(timeout: Duration) -> Limits {
    Limits {
        timeout,
        ..Limits::default()
    }
}

/// A well-behaved call, to show the host still serves after a bad one.
async fn still_serving() {
    let regions = provider(&serde_json::json!({}), Grants::default())
        .list_regions()
        .await
        .unwrap();
    assert_eq!(
        regions.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["chaos-1", "chaos-2"]
    );
}

fn failure(result: Result<impl std::fmt::Debug, dcp::plugins::Error>) -> Failure {
    let err = result.expect_err("the call must fail");
    assert_eq!(
        (&*err.plugin, &*err.version, err.call),
        ("chaos", "0.1.0", "list-regions")
    );
    err.failure
}

/// An HTTP server on a loopback address of its own.
async fn web_server(ip: &str, delay: Duration) -> String {
    let app = Router::new().route(
        "/",
        get(move || async move {
            tokio::time::sleep(delay).await;
            "hello"
        }),
    );
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_times_out_while_others_are_served() {
    let spinner = provider(
        &serde_json::json!({"mode": "spin"}),
        Grants {
            limits: limits(Duration::from_secs(2)),
            ..Grants::default()
        },
    );
    let start = Instant::now();
    let spin = tokio::spawn(async move { spinner.list_regions().await });
    // While it spins, a well-behaved call gets through.
    tokio::time::sleep(Duration::from_millis(300)).await;
    still_serving().await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "served while the other spun"
    );
    let failure = failure(spin.await.unwrap());
    let elapsed = start.elapsed();
    assert_eq!(failure, Failure::Timeout(Duration::from_secs(2)));
    assert!(
        elapsed < Duration::from_secs(3),
        "stopped within deadline + 1 s, took {elapsed:?}"
    );
    still_serving().await;
}

#[tokio::test]
async fn allocating_past_the_cap_is_out_of_memory() {
    let failure = failure(
        provider(&serde_json::json!({"mode": "oom"}), Grants::default())
            .list_regions()
            .await,
    );
    assert_eq!(failure, Failure::OutOfMemory { limit: 64 << 20 });
    still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_memories_share_its_memory_limit() {
    let hog = WasmPlugin::new(
        Arc::clone(&HOG),
        Grants {
            limits: Limits {
                memory_bytes: 32 << 20,
                ..Limits::default()
            },
            ..Grants::default()
        },
    );
    // 20 MiB each: either memory alone is within 32 MiB, the two are not.
    // Another plugin's call at the same time is served.
    let (grown, ()) = tokio::join!(hog.plan("grow", "20"), still_serving());
    let err = grown.unwrap_err();
    assert_eq!(
        (err.call, err.failure),
        ("plan", Failure::OutOfMemory { limit: 32 << 20 })
    );
    // 15 MiB each fits.
    assert_eq!(hog.plan("grow", "15").await.unwrap(), "ok");
    still_serving().await;
}

#[test]
fn components_with_many_memories_are_refused_at_load() {
    // Two memories of its own and 15 more, each in an instance: each call
    // would take 17 of the pool's memory slots.
    let refused = RUNTIME.load("hog", "2.0.0", &memory_hog(15)).unwrap_err();
    assert!(
        matches!(refused.failure, Failure::Incompatible(_)),
        "{refused}"
    );
    let text = refused.to_string();
    assert!(
        text.contains("17 linear memories") && text.contains("at most 4"),
        "{text}"
    );
    RUNTIME.load("hog", "2.0.0", &memory_hog(2)).unwrap();
}

#[tokio::test]
async fn a_panic_is_a_trap_carrying_the_message() {
    let failure = failure(
        provider(&serde_json::json!({"mode": "panic"}), Grants::default())
            .list_regions()
            .await,
    );
    match failure {
        Failure::Trap(message) => assert!(message.contains("panicking on purpose"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    still_serving().await;
}

#[tokio::test]
async fn http_reaches_only_granted_public_origins() {
    let local = web_server("127.20.0.1", Duration::ZERO).await;
    let call = |url: &str, origins: Vec<OriginGrant>| {
        provider(
            &serde_json::json!({"mode": "http", "url": url}),
            Grants {
                origins,
                ..Grants::default()
            },
        )
    };
    let denied = |f: Failure| match f {
        Failure::Denied(message) => message,
        other => panic!("expected a denial, got {other:?}"),
    };

    // Not granted at all.
    let message = denied(failure(call(&local, Vec::new()).list_regions().await));
    assert!(message.contains("not granted"), "{message}");
    // Granted, but loopback without an explicit allowance.
    let grant = OriginGrant::parse(&local).unwrap();
    let message = denied(failure(call(&local, vec![grant]).list_regions().await));
    assert!(message.contains("loopback"), "{message}");
    // The cloud metadata address, even when its origin is granted.
    let metadata = "http://169.254.169.254/latest/meta-data/";
    let grant = OriginGrant::parse("http://169.254.169.254").unwrap();
    let message = denied(failure(call(metadata, vec![grant]).list_regions().await));
    assert!(message.contains("link-local"), "{message}");
    // Other schemes never.
    let message = denied(failure(
        call("file:///etc/passwd", Vec::new()).list_regions().await,
    ));
    assert!(message.contains("scheme"), "{message}");

    // Granted with the private allowance: the request goes through.
    let grant = OriginGrant::parse(&format!("{local}#private")).unwrap();
    let regions = call(&local, vec![grant]).list_regions().await.unwrap();
    assert_eq!(regions[0].id, "200");
    still_serving().await;
}

#[tokio::test]
async fn time_in_host_imports_counts_against_the_deadline() {
    let slow = web_server("127.20.0.2", Duration::from_secs(10)).await;
    let grant = OriginGrant::parse(&format!("{slow}#private")).unwrap();
    let start = Instant::now();
    let result = provider(
        &serde_json::json!({"mode": "slow-host", "url": slow}),
        Grants {
            origins: vec![grant],
            limits: limits(Duration::from_secs(1)),
            ..Grants::default()
        },
    )
    .list_regions()
    .await;
    // The sandbox's deadline stops the call, not the HTTP client inside it.
    assert_eq!(failure(result), Failure::Timeout(Duration::from_secs(1)));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_output_are_capped() {
    let start = Instant::now();
    let regions = provider(
        &serde_json::json!({"mode": "flood"}),
        Grants {
            limits: limits(Duration::from_secs(60)),
            ..Grants::default()
        },
    )
    .list_regions()
    .await
    .unwrap();
    assert_eq!(regions[0].id, "flooded");
    assert!(start.elapsed() < Duration::from_secs(60));
    still_serving().await;
}

#[tokio::test]
async fn secrets_stay_in_the_host() {
    let mut secrets = BTreeMap::new();
    secrets.insert(
        "account".to_owned(),
        Secret {
            key_id: "LTAI-test-key".into(),
            secret: SECRET.into(),
        },
    );
    let regions = provider(
        &serde_json::json!({"mode": "secret"}),
        Grants {
            secrets,
            ..Grants::default()
        },
    )
    .list_regions()
    .await
    .unwrap();
    let expected = Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes())
        .unwrap()
        .chain_update(b"GET&%2F&Action%3DDescribeRegions")
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let seen: Vec<&str> = regions.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(seen, ["LTAI-test-key", expected.as_str(), "env=0 files=0"]);
    assert!(!format!("{regions:?}").contains(SECRET));

    let failure = failure(
        provider(
            &serde_json::json!({"mode": "other-secret"}),
            Grants::default(),
        )
        .list_regions()
        .await,
    );
    assert!(
        matches!(&failure, Failure::Denied(m) if m.contains("someone-elses")),
        "{failure:?}"
    );
}

#[tokio::test]
async fn plugin_errors_keep_provider_code_and_request_id() {
    let err = provider(&serde_json::json!({}), Grants::default())
        .get_instance("cn-hangzhou", "i-404")
        .await
        .unwrap_err();
    assert_eq!(err.call, "get-instance");
    let text = err.to_string();
    assert!(
        text.contains("InvalidInstanceId.NotFound") && text.contains("req-1"),
        "{text}"
    );
    assert!(!err.failure.retryable());

    let ids = provider(&serde_json::json!({}), Grants::default())
        .create_instances(&spec(), 2, "task-7-node-3")
        .await
        .unwrap();
    assert_eq!(ids, ["web-task-7-node-3-0", "web-task-7-node-3-1"]);
}

fn spec() -> dcp::plugins::InstanceSpec {
    dcp::plugins::InstanceSpec {
        region: "r".into(),
        zone: "z".into(),
        vpc: None,
        subnet: None,
        security_group: None,
        instance_type: "t".into(),
        image: "i".into(),
        system_disk: dcp::plugins::Disk {
            category: "cloud_efficiency".into(),
            size_gb: 40,
        },
        data_disks: Vec::new(),
        internet: None,
        instance_charge_type: "PostPaid".into(),
        name_prefix: "web".into(),
        ssh_public_key: None,
        tags: Vec::new(),
    }
}

#[test]
fn components_outside_the_contract_are_refused_by_name() {
    let foreign = RUNTIME
        .load("future", "9.0.0", &fixture_plugin("foreign-world"))
        .unwrap_err();
    let text = foreign.to_string();
    assert!(matches!(foreign.failure, Failure::Incompatible(_)));
    assert!(
        text.contains("dcp:plugin@0.1.0") && text.contains("cloud-provider"),
        "{text}"
    );

    // A core module (not a component) is refused with advice.
    let core = RUNTIME
        .load("core", "1.0.0", b"\0asm\x01\0\0\0")
        .unwrap_err();
    assert!(core.to_string().contains("not a component"), "{core}");
    let garbage = RUNTIME
        .load("junk", "1.0.0", b"not wasm at all")
        .unwrap_err();
    assert!(
        matches!(garbage.failure, Failure::Incompatible(_)),
        "{garbage}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_instance_slots_waits_instead_of_failing() {
    // 300 calls at once, each parked 300 ms in a host HTTP call: more than
    // the 128 pooled instances, as a 1000-node expand makes.
    let web = web_server("127.20.0.3", Duration::from_millis(300)).await;
    let grant = OriginGrant::parse(&format!("{web}#private")).unwrap();
    let calls: Vec<_> = (0..300)
        .map(|_| {
            let plugin = provider(
                &serde_json::json!({"mode": "slow-host", "url": web}),
                Grants {
                    origins: vec![grant.clone()],
                    limits: limits(Duration::from_secs(5)),
                    ..Grants::default()
                },
            );
            tokio::spawn(async move { plugin.list_regions().await })
        })
        .collect();
    let started = Instant::now();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // Three waves of at most 128, not one.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_sees_what_an_earlier_call_left_in_memory() {
    // Pooled slots keep the pages a call wrote mapped and rewrite them in
    // place (where the kernel has PAGEMAP_SCAN); every call must still start
    // from the plugin's initial memory. The guest reads all of its memory
    // for the counter and marks the calls before it left.
    let plugin = provider(&serde_json::json!({"mode": "remember"}), Grants::default());
    let fresh = ["calls-before=0", "marks-seen=0"];
    // One after another, as a slot is reused by the next call...
    for _ in 0..5 {
        let seen = plugin.list_regions().await.unwrap();
        assert_eq!(
            seen.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            fresh
        );
    }
    // ...and many at once, across slots.
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let plugin = plugin.clone();
            tokio::spawn(async move { plugin.list_regions().await })
        })
        .collect();
    for call in calls {
        let seen = call.await.unwrap().unwrap();
        assert_eq!(
            seen.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            fresh
        );
    }
}
