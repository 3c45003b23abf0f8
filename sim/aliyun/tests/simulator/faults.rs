//! Injected faults: throttling and server errors without side effects,
//! lost replies with them, slow replies, and the admin surface.

use std::time::{Duration, Instant};

use aliyun_sim::{Faults, Options};

use crate::client::{Client, ids, start};

#[tokio::test]
async fn throttling_and_server_errors_happen_before_any_side_effect() {
    let sim = start(Options::default()).await;
    let ecs = Client::ecs(&sim);
    sim.set_faults(Faults {
        throttle_rate: 1.0,
        ..Faults::default()
    });
    let reply = ecs.run(&[("ClientToken", "t-1")]).await;
    reply.expect_error(400, "Throttling.User");
    assert_eq!(
        reply.json["Message"],
        "Request was denied due to user flow control."
    );

    sim.set_faults(Faults {
        server_error_rate: 1.0,
        ..Faults::default()
    });
    let mut codes = Vec::new();
    for _ in 0..12 {
        let reply = ecs.run(&[("ClientToken", "t-1")]).await;
        match reply.code() {
            "ServiceUnavailable" => assert_eq!(reply.status, 503),
            "InternalError" => assert_eq!(reply.status, 500),
            other => panic!("{other}: {}", reply.text),
        }
        codes.push(reply.code().to_owned());
    }
    assert!(
        codes.iter().any(|c| c == "ServiceUnavailable")
            && codes.iter().any(|c| c == "InternalError")
    );
    assert!(sim.instances().is_empty(), "{:?}", sim.instances());
    assert_eq!(sim.calls("RunInstances"), 13, "failed attempts still count");

    // The retry that finally gets through creates exactly one instance.
    sim.set_faults(Faults::default());
    let created = ecs.run(&[("ClientToken", "t-1")]).await.ok();
    assert_eq!(ids(&created).len(), 1);
    assert_eq!(sim.instances().len(), 1);
}

#[tokio::test]
async fn a_lost_reply_is_a_transport_error_after_the_effect() {
    let sim = start(Options::default()).await;
    let ecs = Client::ecs(&sim);
    sim.set_faults(Faults {
        drop_reply_after_effect: vec!["RunInstances".to_owned()],
        drop_rate: 1.0,
        ..Faults::default()
    });
    let params = [
        ("RegionId", "cn-hangzhou"),
        ("ImageId", "ubuntu_22_04_x64_20G_alibase_20240130.vhd"),
        ("InstanceType", "ecs.t6-c1m1.large"),
        ("SecurityGroupId", "sg-bp1dcpsim0default01"),
        ("VSwitchId", "vsw-bp1dcpsim0zoneh0001"),
        ("ClientToken", "lost-1"),
    ];
    let lost = ecs.try_call("RunInstances", &params).await;
    let error = lost.expect_err("the reply should have been lost");
    assert!(!error.is_status() && !error.is_timeout(), "{error:?}");
    let created = sim.instances();
    assert_eq!(created.len(), 1, "the effect happened");
    assert_eq!(created[0].client_token.as_deref(), Some("lost-1"));

    // Other actions still answer; the retry with the same token finds the
    // instance instead of making a second one.
    assert_eq!(ecs.call("DescribeRegions", &[]).await.status, 200);
    sim.set_faults(Faults::default());
    let retried = ecs.call("RunInstances", &params).await.ok();
    assert_eq!(ids(&retried), [created[0].id.clone()]);
    assert_eq!(sim.instances().len(), 1);
}

#[tokio::test]
async fn slow_replies_outlast_a_short_client_timeout() {
    let sim = start(Options::default()).await;
    let mut ecs = Client::ecs(&sim);
    sim.set_faults(Faults {
        slow_reply: Some(Duration::from_millis(400)),
        slow_rate: 1.0,
        ..Faults::default()
    });
    let started = Instant::now();
    assert_eq!(ecs.call("DescribeRegions", &[]).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
    ecs.timeout = Duration::from_millis(100);
    let error = ecs.try_call("DescribeRegions", &[]).await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
}

#[tokio::test]
async fn the_admin_surface_lists_instances_and_sets_faults() {
    let sim = start(Options {
        extra_instances: 2,
        ..Options::default()
    })
    .await;
    let http = reqwest::Client::new();
    let instances: serde_json::Value = http
        .get(format!("{}/_sim/instances", sim.ecs_endpoint()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(instances.as_array().unwrap().len(), 2);
    assert_eq!(instances[0]["status"], "Running");
    assert!(
        instances[0]["private_ip"]
            .as_str()
            .unwrap()
            .starts_with("127.21.")
    );

    let reply = http
        .put(format!("{}/_sim/faults", sim.ecs_endpoint()))
        .json(&serde_json::json!({"throttle_rate": 1.0, "slow_reply_ms": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(
        sim.faults(),
        Faults {
            throttle_rate: 1.0,
            slow_reply: Some(Duration::from_millis(5)),
            ..Faults::default()
        }
    );
    Client::ecs(&sim)
        .call("DescribeRegions", &[])
        .await
        .expect_error(400, "Throttling.User");
    // The VPC endpoint has no admin surface; Aliyun serves only `/`.
    let vpc = http
        .get(format!("{}/_sim/instances", sim.vpc_endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(vpc.status(), 404);
}
