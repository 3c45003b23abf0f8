//! The gateway: signatures, common parameters, routing, formats, errors.

use std::time::{SystemTime, UNIX_EPOCH};

use aliyun_sim::{Account, Options};

use crate::client::{Client, Reply, start};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `common` with `name` set to `value` (or removed when `None`).
fn with(
    mut common: Vec<(String, String)>,
    name: &str,
    value: Option<&str>,
) -> Vec<(String, String)> {
    common.retain(|(k, _)| k != name);
    if let Some(value) = value {
        common.push((name.to_owned(), value.to_owned()));
    }
    common
}

#[tokio::test]
async fn the_docs_example_request_verifies_once_with_its_method_only() {
    // Vector A (reference §1.4), byte for byte, at the moment it was signed.
    let sim = start(Options {
        accounts: vec![Account {
            key_id: "testid".to_owned(),
            secret: "testsecret".to_owned(),
            active: true,
        }],
        ..Options::default()
    })
    .await;
    sim.set_clock_offset(1_456_231_584 - i64::try_from(now()).unwrap());
    let client = Client::ecs(&sim).with_key("testid", "testsecret");
    let vector_a = owned(aliyun_rpc::vectors::A_GET.params);
    // The same request sent as POST: the method is signed, so it fails —
    // before the nonce is spent.
    let post = client
        .send_signed(
            "POST",
            vector_a.clone(),
            vec![],
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY=",
        )
        .await
        .unwrap();
    assert_eq!(post.status, 400, "{}", post.text);
    assert!(
        post.text.contains("<Code>SignatureDoesNotMatch</Code>"),
        "{}",
        post.text
    );
    assert!(
        post.text
            .contains("server string to sign is:POST&amp;%2F&amp;AccessKeyId%3Dtestid"),
        "{}",
        post.text
    );

    let get = client
        .send_signed(
            "GET",
            vector_a.clone(),
            vec![],
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY=",
        )
        .await
        .unwrap();
    assert_eq!(get.status, 200, "{}", get.text);
    assert!(
        get.content_type.starts_with("text/xml"),
        "{}",
        get.content_type
    );
    assert!(
        get.text.contains("<DescribeRegionsResponse>"),
        "{}",
        get.text
    );
    assert!(
        get.text.contains("<RegionId>cn-beijing</RegionId>"),
        "{}",
        get.text
    );
    assert_eq!(get.text.matches("<Region>").count(), 3, "{}", get.text);

    let replay = client
        .send_signed("GET", vector_a, vec![], "OLeaidS1JvxuMvnyHOwuJ+uX5qY=")
        .await
        .unwrap();
    assert_eq!(replay.status, 400);
    assert!(
        replay.text.contains("<Code>SignatureNonceUsed</Code>"),
        "{}",
        replay.text
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_the_servers_string_to_sign() {
    let sim = start(Options::default()).await;
    let client = Client::ecs(&sim).with_key(aliyun_sim::DEMO_KEY_ID, "not-the-secret");
    let query = client.common("DescribeRegions");
    let form = owned(&[("AcceptLanguage", "en-US"), ("Odd", "a+b /c*~中")]);
    let all: Vec<(String, String)> = query.iter().chain(&form).cloned().collect();
    let reply = client.send("POST", query, form).await.unwrap();
    reply.expect_error(400, "SignatureDoesNotMatch");
    assert_eq!(
        reply.json["Message"],
        format!(
            "Specified signature is not matched with our calculation. server string to sign is:{}",
            aliyun_rpc::string_to_sign("POST", &all)
        )
    );
    assert_eq!(
        sim.calls("DescribeRegions"),
        0,
        "refused calls are not counted"
    );

    // The right secret, same awkward values: accepted, and counted.
    let reply = Client::ecs(&sim)
        .call(
            "DescribeRegions",
            &[("AcceptLanguage", "en-US"), ("Odd", "a+b /c*~中")],
        )
        .await;
    assert_eq!(
        reply.ok()["Regions"]["Region"][0]["LocalName"],
        "China (Hangzhou)"
    );
    assert_eq!(sim.calls("DescribeRegions"), 1);
}

#[tokio::test]
async fn keys_must_exist_and_be_active() {
    let sim = start(Options {
        accounts: vec![
            Account {
                key_id: "LTAIactive".to_owned(),
                secret: "s1".to_owned(),
                active: true,
            },
            Account {
                key_id: "LTAIdisabled".to_owned(),
                secret: "s2".to_owned(),
                active: false,
            },
        ],
        ..Options::default()
    })
    .await;
    let ecs = Client::ecs(&sim);
    ecs.clone()
        .with_key("LTAIactive", "s1")
        .call("DescribeRegions", &[])
        .await
        .ok();
    ecs.clone()
        .with_key("LTAInobody", "s1")
        .call("DescribeRegions", &[])
        .await
        .expect_error(404, "InvalidAccessKeyId.NotFound");
    ecs.with_key("LTAIdisabled", "s2")
        .call("DescribeRegions", &[])
        .await
        .expect_error(400, "InvalidAccessKeyId.Inactive");
}

#[tokio::test]
async fn timestamps_must_be_well_formed_and_within_fifteen_minutes() {
    let sim = start(Options::default()).await;
    let client = Client::ecs(&sim);
    let at = |secs: u64| aliyun_rpc::timestamp(secs);
    let send = |timestamp: String| {
        let client = client.clone();
        async move {
            let query = with(
                client.common("DescribeRegions"),
                "Timestamp",
                Some(&timestamp),
            );
            client.send("GET", query, vec![]).await.unwrap()
        }
    };
    send(at(now() - 20 * 60))
        .await
        .expect_error(400, "InvalidTimeStamp.Expired");
    send(at(now() + 20 * 60))
        .await
        .expect_error(400, "InvalidTimeStamp.Expired");
    assert_eq!(send(at(now() - 10 * 60)).await.status, 200);
    send("2016-02-23 12:46:24".to_owned())
        .await
        .expect_error(400, "InvalidTimeStamp.Format");
    // The simulator's clock moves, not the client's.
    sim.set_clock_offset(3600);
    send(at(now()))
        .await
        .expect_error(400, "InvalidTimeStamp.Expired");
    assert_eq!(send(at(now() + 3600)).await.status, 200);
}

#[tokio::test]
async fn a_nonce_is_accepted_once() {
    let sim = start(Options::default()).await;
    let client = Client::ecs(&sim);
    let query = client.common("DescribeRegions");
    assert_eq!(
        client
            .send("POST", query.clone(), vec![])
            .await
            .unwrap()
            .status,
        200
    );
    client
        .send("POST", query, vec![])
        .await
        .unwrap()
        .expect_error(400, "SignatureNonceUsed");
    // A retry with a fresh nonce, as drivers must make it.
    assert_eq!(client.call("DescribeRegions", &[]).await.status, 200);
}

#[tokio::test]
async fn actions_belong_to_one_product_and_version() {
    let sim = start(Options::default()).await;
    let (ecs, vpc) = (Client::ecs(&sim), Client::vpc(&sim));
    let region = [("RegionId", "cn-hangzhou")];
    // The VPC action, with its own version, sent to the ECS endpoint.
    let mut wrong_product = ecs.clone();
    wrong_product.version = "2016-04-28".to_owned();
    wrong_product
        .call("DescribeVSwitches", &region)
        .await
        .expect_error(404, "InvalidApi.NotFound");
    ecs.call("DescribeVSwitches", &region)
        .await
        .expect_error(404, "InvalidApi.NotFound");
    vpc.call("DescribeInstances", &region)
        .await
        .expect_error(404, "InvalidApi.NotFound");
    ecs.call("DescribeAnything", &region)
        .await
        .expect_error(404, "InvalidApi.NotFound");
    let mut old = vpc.clone();
    old.version = "2014-05-26".to_owned();
    old.call("DescribeVSwitches", &region)
        .await
        .expect_error(404, "InvalidApi.NotFound");
    assert_eq!(vpc.call("DescribeVSwitches", &region).await.status, 200);
}

#[tokio::test]
async fn missing_and_unsupported_common_parameters() {
    let sim = start(Options::default()).await;
    let client = Client::ecs(&sim);
    client
        .call("DescribeZones", &[])
        .await
        .expect_error(400, "MissingRegionId");
    client
        .call("DescribeZones", &[("RegionId", "cn-nowhere")])
        .await
        .expect_error(404, "InvalidRegionId.NotFound");
    let send = |query: Vec<(String, String)>| {
        let client = client.clone();
        async move { client.send("POST", query, vec![]).await.unwrap() }
    };
    let common = client.common("DescribeRegions");
    send(with(common.clone(), "SignatureNonce", None))
        .await
        .expect_error(400, "MissingSignatureNonce");
    send(with(common.clone(), "Timestamp", None))
        .await
        .expect_error(400, "MissingTimestamp");
    send(with(common.clone(), "SignatureMethod", Some("HMAC-SHA256")))
        .await
        .expect_error(400, "InvalidSignatureMethod");
    send(with(common.clone(), "SignatureVersion", Some("2.0")))
        .await
        .expect_error(400, "InvalidSignatureVersion");
    // No signature at all.
    let reply = client
        .send_signed("POST", common, vec![], "")
        .await
        .unwrap();
    reply.expect_error(400, "IncompleteSignature");
}

#[tokio::test]
async fn answers_are_xml_unless_json_is_asked_for_in_any_case() {
    let sim = start(Options::default()).await;
    let client = Client::ecs(&sim);
    let xml = client
        .send(
            "GET",
            with(client.common("DescribeRegions"), "Format", None),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(xml.status, 200);
    assert!(
        xml.text
            .starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><DescribeRegionsResponse>"),
        "{}",
        xml.text
    );
    assert_eq!(xml.text.matches("<Region>").count(), 3, "{}", xml.text);
    assert!(xml.text.contains("<RequestId>"), "{}", xml.text);

    let lower = client
        .send(
            "GET",
            with(client.common("DescribeRegions"), "Format", Some("json")),
            vec![],
        )
        .await
        .unwrap();
    assert!(
        lower.content_type.starts_with("application/json"),
        "{}",
        lower.content_type
    );
    assert_eq!(lower.json["Regions"]["Region"].as_array().unwrap().len(), 3);

    let error = client
        .send(
            "POST",
            with(client.common("DescribeZones"), "Format", Some("XML")),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(error.status, 400);
    assert!(
        error.text.contains("<Error><Code>MissingRegionId</Code>"),
        "{}",
        error.text
    );
}

#[tokio::test]
async fn errors_have_aliyuns_shape_and_every_request_its_own_id() {
    let sim = start(Options::default()).await;
    let client = Client::ecs(&sim);
    let first: Reply = client
        .call(
            "DescribeInstanceAttribute",
            &[("InstanceId", "i-bp1nosuchinstance0")],
        )
        .await;
    first.expect_error(404, "InvalidInstanceId.NotFound");
    let body = first.json.as_object().unwrap();
    let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["Code", "HostId", "Message", "Recommend", "RequestId"]
    );
    assert_eq!(body["HostId"], "ecs.aliyuncs.com");
    assert_eq!(body["Message"], "The specified InstanceId does not exist.");
    let id = body["RequestId"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(id, id.to_ascii_uppercase());
    assert!(body["Recommend"].as_str().unwrap().contains(id));
    let second = client.call("DescribeRegions", &[]).await.ok();
    assert_ne!(second["RequestId"].as_str().unwrap(), id);
}

#[tokio::test]
async fn parameters_may_travel_in_the_query_or_a_form_body_with_get_or_post() {
    let sim = start(Options::default()).await;
    let client = Client::ecs(&sim);
    let region = owned(&[("RegionId", "cn-beijing")]);
    for method in ["GET", "POST"] {
        let in_query: Vec<(String, String)> = client
            .common("DescribeZones")
            .into_iter()
            .chain(region.clone())
            .collect();
        let reply = client.send(method, in_query, vec![]).await.unwrap();
        assert_eq!(reply.ok()["Zones"]["Zone"][1]["ZoneId"], "cn-beijing-b");
    }
    let reply = client
        .send("POST", client.common("DescribeZones"), region)
        .await
        .unwrap();
    assert_eq!(reply.ok()["Zones"]["Zone"][0]["ZoneId"], "cn-beijing-a");
}
