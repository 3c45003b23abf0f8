//! The `cloud` functions over Aliyun's ECS and VPC actions, in plain Rust
//! types (`guest.rs` converts them to and from the WIT records).

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use aliyun_rpc::lenient::{list, number, rfc3339, strings, text};

use crate::rpc::{Failure, Host, Kind, Product, Rpc};

/// One option of a look-up.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    /// The provider's id.
    pub id: String,
    /// A name for humans.
    pub name: String,
    /// Extra facts.
    pub details: Value,
}

/// An instance's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Being created.
    Pending,
    /// Booting.
    Starting,
    /// Up.
    Running,
    /// Shutting down.
    Stopping,
    /// Down.
    Stopped,
    /// Being released.
    Deleting,
    /// Anything else.
    Unknown,
}

impl State {
    fn of(status: &str) -> Self {
        match status {
            "Pending" => Self::Pending,
            "Starting" => Self::Starting,
            "Running" => Self::Running,
            "Stopping" => Self::Stopping,
            "Stopped" => Self::Stopped,
            "Deleted" | "Deleting" | "Released" => Self::Deleting,
            _ => Self::Unknown,
        }
    }
}

/// An instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Machine {
    /// Instance id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// State.
    pub state: State,
    /// Private addresses.
    pub private_ips: Vec<String>,
    /// Public addresses.
    pub public_ips: Vec<String>,
    /// Instance type.
    pub instance_type: String,
    /// Image.
    pub image: String,
    /// Creation time, RFC 3339.
    pub created_at: Option<String>,
}

/// A page of instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    /// The instances on it.
    pub machines: Vec<Machine>,
    /// How many there are in all, if Aliyun said.
    pub total: Option<u32>,
    /// The next page's token, unless this is the last.
    pub next: Option<String>,
}

/// What to launch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Launch {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Vswitch (VPC networking).
    pub subnet: Option<String>,
    /// Security group.
    pub security_group: Option<String>,
    /// Instance type.
    pub instance_type: String,
    /// Image.
    pub image: String,
    /// System disk category and size.
    pub system_disk: (String, u32),
    /// Data disks.
    pub data_disks: Vec<(String, u32)>,
    /// Internet charge type and bandwidth.
    pub internet: Option<(String, u32)>,
    /// Instance charge type.
    pub instance_charge_type: String,
    /// Names are `<prefix>001`, `<prefix>002`, …
    pub name_prefix: String,
    /// A public key to log in with.
    pub ssh_public_key: Option<String>,
    /// Tags.
    pub tags: Vec<(String, String)>,
}

/// A request parameter.
pub(crate) fn p(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

/// Largest page Aliyun serves.
pub(crate) const PAGE: u32 = 100;

/// Lowercase hex of the SHA-256 of `text`.
fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The ClientToken for an idempotency key: the key itself when Aliyun
/// accepts it (≤ 64 ASCII characters), else a digest of it.
pub(crate) fn client_token(key: &str) -> String {
    if !key.is_empty() && key.len() <= 64 && key.chars().all(|c| c.is_ascii_graphic()) {
        key.to_owned()
    } else {
        format!("dcp-{}", &digest(key)[..60])
    }
}

/// The key pair name of a public key: the same key always gets the same
/// name, so importing it again is recognised, not duplicated.
pub(crate) fn key_pair_name(public_key: &str) -> String {
    // Only the key material counts (not its comment).
    let material: Vec<&str> = public_key.split_whitespace().take(2).collect();
    format!("dcp-{}", &digest(&material.join(" "))[..32])
}

/// The cloud of one account.
pub(crate) struct Cloud<'a, H: Host> {
    /// Signed calls.
    pub rpc: Rpc<'a, H>,
}

impl<H: Host> Cloud<'_, H> {
    /// Regions.
    pub(crate) fn regions(&self) -> Result<Vec<Item>, Failure> {
        let answer = self.rpc.call(Product::Ecs, "DescribeRegions", &[])?;
        Ok(list(&answer, "Regions", "Region")
            .iter()
            .map(|r| Item {
                id: text(r, "RegionId"),
                name: text(r, "LocalName"),
                details: json!({"endpoint": text(r, "RegionEndpoint")}),
            })
            .collect())
    }

    fn zone_values(&self, region: &str) -> Result<Vec<Value>, Failure> {
        let answer = self
            .rpc
            .call(Product::Ecs, "DescribeZones", &[p("RegionId", region)])?;
        Ok(list(&answer, "Zones", "Zone").to_vec())
    }

    fn zone(&self, region: &str, zone: &str) -> Result<Value, Failure> {
        self.zone_values(region)?
            .into_iter()
            .find(|z| text(z, "ZoneId") == zone)
            .ok_or_else(|| Failure {
                kind: Kind::NotFound,
                message: format!("zone {zone} does not exist in region {region}"),
                code: None,
                request_id: None,
                retryable: false,
            })
    }

    /// Zones of a region.
    pub(crate) fn zones(&self, region: &str) -> Result<Vec<Item>, Failure> {
        Ok(self
            .zone_values(region)?
            .iter()
            .map(|z| Item {
                id: text(z, "ZoneId"),
                name: text(z, "LocalName"),
                details: json!({
                    "instance_types": strings(z, "AvailableInstanceTypes", "InstanceTypes"),
                    "disk_categories": strings(z, "AvailableDiskCategories", "DiskCategories"),
                }),
            })
            .collect())
    }

    /// VPCs of a region.
    pub(crate) fn vpcs(&self, region: &str) -> Result<Vec<Item>, Failure> {
        let vpcs = self.rpc.all_pages(
            Product::Vpc,
            "DescribeVpcs",
            &[p("RegionId", region)],
            "Vpcs",
            "Vpc",
        )?;
        Ok(vpcs
            .iter()
            .map(|v| Item {
                id: text(v, "VpcId"),
                name: text(v, "VpcName"),
                details: json!({"cidr": text(v, "CidrBlock"), "status": text(v, "Status")}),
            })
            .collect())
    }

    /// Vswitches of a VPC (in a zone).
    pub(crate) fn subnets(
        &self,
        region: &str,
        vpc: &str,
        zone: Option<&str>,
    ) -> Result<Vec<Item>, Failure> {
        let mut params = vec![p("RegionId", region), p("VpcId", vpc)];
        if let Some(zone) = zone {
            params.push(p("ZoneId", zone));
        }
        let switches = self.rpc.all_pages(
            Product::Vpc,
            "DescribeVSwitches",
            &params,
            "VSwitches",
            "VSwitch",
        )?;
        Ok(switches
            .iter()
            .map(|s| Item {
                id: text(s, "VSwitchId"),
                name: text(s, "VSwitchName"),
                details: json!({
                    "zone": text(s, "ZoneId"),
                    "cidr": text(s, "CidrBlock"),
                    "available_ips": number(s, "AvailableIpAddressCount"),
                }),
            })
            .collect())
    }

    /// Images of a region.
    pub(crate) fn images(&self, region: &str) -> Result<Vec<Item>, Failure> {
        let images = self.rpc.all_pages(
            Product::Ecs,
            "DescribeImages",
            &[p("RegionId", region)],
            "Images",
            "Image",
        )?;
        Ok(images
            .iter()
            .map(|i| Item {
                id: text(i, "ImageId"),
                name: text(i, "ImageName"),
                details: json!({"os": text(i, "OSName"), "os_type": text(i, "OSType"), "architecture": text(i, "Architecture")}),
            })
            .collect())
    }

    /// Instance types of a region, only those a zone offers when given.
    pub(crate) fn instance_types(
        &self,
        region: &str,
        zone: Option<&str>,
    ) -> Result<Vec<Item>, Failure> {
        let answer = self.rpc.call(
            Product::Ecs,
            "DescribeInstanceTypes",
            &[p("RegionId", region)],
        )?;
        let offered = match zone {
            Some(zone) => Some(strings(
                &self.zone(region, zone)?,
                "AvailableInstanceTypes",
                "InstanceTypes",
            )),
            None => None,
        };
        Ok(list(&answer, "InstanceTypes", "InstanceType")
            .iter()
            .filter(|t| {
                offered
                    .as_ref()
                    .is_none_or(|o| o.contains(&text(t, "InstanceTypeId")))
            })
            .map(|t| Item {
                id: text(t, "InstanceTypeId"),
                name: format!(
                    "{} ({} vCPU, {} GiB)",
                    text(t, "InstanceTypeId"),
                    number(t, "CpuCoreCount").unwrap_or(0.0),
                    number(t, "MemorySize").unwrap_or(0.0)
                ),
                details: json!({
                    "cpu": number(t, "CpuCoreCount"),
                    "memory_gib": number(t, "MemorySize"),
                    "family": text(t, "InstanceTypeFamily"),
                }),
            })
            .collect())
    }

    /// Security groups of a region (of a VPC).
    pub(crate) fn security_groups(
        &self,
        region: &str,
        vpc: Option<&str>,
    ) -> Result<Vec<Item>, Failure> {
        let mut params = vec![p("RegionId", region)];
        if let Some(vpc) = vpc {
            params.push(p("VpcId", vpc));
        }
        let groups = self.rpc.all_pages(
            Product::Ecs,
            "DescribeSecurityGroups",
            &params,
            "SecurityGroups",
            "SecurityGroup",
        )?;
        Ok(groups
            .iter()
            .map(|g| Item {
                id: text(g, "SecurityGroupId"),
                name: text(g, "SecurityGroupName"),
                details: json!({"vpc": text(g, "VpcId"), "description": text(g, "Description")}),
            })
            .collect())
    }

    /// Disk categories a zone offers.
    pub(crate) fn disk_categories(&self, region: &str, zone: &str) -> Result<Vec<Item>, Failure> {
        Ok(strings(
            &self.zone(region, zone)?,
            "AvailableDiskCategories",
            "DiskCategories",
        )
        .into_iter()
        .map(|c| Item {
            name: c.clone(),
            id: c,
            details: json!({}),
        })
        .collect())
    }

    /// Instance and internet charge types.
    pub(crate) fn charge_types() -> Vec<Item> {
        [
            ("PostPaid", "Pay as you go", "instance"),
            ("PrePaid", "Subscription", "instance"),
            ("PayByTraffic", "By traffic", "internet"),
            ("PayByBandwidth", "By bandwidth", "internet"),
        ]
        .into_iter()
        .map(|(id, name, kind)| Item {
            id: id.to_owned(),
            name: name.to_owned(),
            details: json!({"kind": kind}),
        })
        .collect()
    }

    /// Creates `count` instances; the same `key` never creates a second batch.
    pub(crate) fn create(
        &self,
        spec: &Launch,
        count: u32,
        key: &str,
    ) -> Result<Vec<String>, Failure> {
        if !(1..=100).contains(&count) {
            return Err(Failure::invalid("count: must be between 1 and 100"));
        }
        let mut params = vec![
            p("RegionId", &*spec.region),
            p("ZoneId", &*spec.zone),
            p("ImageId", &*spec.image),
            p("InstanceType", &*spec.instance_type),
            p("InstanceName", &*spec.name_prefix),
            p("UniqueSuffix", "true"),
            p("Amount", count.to_string()),
            p("ClientToken", client_token(key)),
            p("InstanceChargeType", &*spec.instance_charge_type),
            p("SystemDisk.Category", &*spec.system_disk.0),
            p("SystemDisk.Size", spec.system_disk.1.to_string()),
        ];
        if let Some(subnet) = &spec.subnet {
            params.push(p("VSwitchId", &**subnet));
        }
        if let Some(group) = &spec.security_group {
            params.push(p("SecurityGroupId", &**group));
        }
        for (i, (category, size)) in spec.data_disks.iter().enumerate() {
            params.push(p(&format!("DataDisk.{}.Category", i + 1), &**category));
            params.push(p(&format!("DataDisk.{}.Size", i + 1), size.to_string()));
        }
        if let Some((charge, bandwidth)) = &spec.internet {
            params.push(p("InternetChargeType", &**charge));
            params.push(p("InternetMaxBandwidthOut", bandwidth.to_string()));
        }
        for (i, (k, v)) in spec.tags.iter().enumerate() {
            params.push(p(&format!("Tag.{}.Key", i + 1), &**k));
            params.push(p(&format!("Tag.{}.Value", i + 1), &**v));
        }
        if let Some(public_key) = &spec.ssh_public_key {
            let name = key_pair_name(public_key);
            let imported = self.rpc.call(
                Product::Ecs,
                "ImportKeyPair",
                &[
                    p("RegionId", &*spec.region),
                    p("KeyPairName", &*name),
                    p("PublicKeyBody", public_key.trim()),
                ],
            );
            match imported {
                Ok(_) => {}
                // Imported before (a retry, or another machine with this key).
                Err(e) if e.code.as_deref() == Some("KeyPair.AlreadyExist") => {}
                Err(e) => return Err(e),
            }
            params.push(p("KeyPairName", name));
        }
        let answer = self.rpc.call(Product::Ecs, "RunInstances", &params)?;
        let ids = strings(&answer, "InstanceIdSets", "InstanceIdSet");
        if ids.is_empty() {
            return Err(Failure::unexpected(
                "RunInstances",
                "no InstanceIdSets.InstanceIdSet",
            ));
        }
        Ok(ids)
    }

    /// One instance.
    pub(crate) fn get(&self, region: &str, id: &str) -> Result<Machine, Failure> {
        let answer = self.rpc.call(
            Product::Ecs,
            "DescribeInstanceAttribute",
            &[p("RegionId", region), p("InstanceId", id)],
        )?;
        Ok(machine(&answer, region))
    }

    /// A page of instances; the page token is the page number.
    pub(crate) fn list(
        &self,
        region: &str,
        page: Option<&str>,
        size: u32,
    ) -> Result<Page, Failure> {
        let number_of_page: u32 = match page {
            Some(token) => token.parse().map_err(|_| {
                Failure::invalid(format!(
                    "page: {token:?} is not a page token of this plugin"
                ))
            })?,
            None => 1,
        };
        let size = size.clamp(1, PAGE);
        let answer = self.rpc.call(
            Product::Ecs,
            "DescribeInstances",
            &[
                p("RegionId", region),
                p("PageNumber", number_of_page.to_string()),
                p("PageSize", size.to_string()),
            ],
        )?;
        let machines: Vec<Machine> = list(&answer, "Instances", "Instance")
            .iter()
            .map(|i| machine(i, region))
            .collect();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let total = number(&answer, "TotalCount").map(|t| t as u32);
        let seen = (number_of_page - 1).saturating_mul(size)
            + u32::try_from(machines.len()).unwrap_or(u32::MAX);
        let more = machines.len() == size as usize && total.is_none_or(|t| seen < t);
        Ok(Page {
            machines,
            total,
            next: more.then(|| (number_of_page + 1).to_string()),
        })
    }

    /// Starts an instance.
    pub(crate) fn start(&self, region: &str, id: &str) -> Result<(), Failure> {
        self.rpc
            .call(
                Product::Ecs,
                "StartInstance",
                &[p("RegionId", region), p("InstanceId", id)],
            )
            .map(drop)
    }

    /// Stops an instance (OpenDCP's driver called StartInstance here).
    pub(crate) fn stop(&self, region: &str, id: &str, force: bool) -> Result<(), Failure> {
        self.rpc
            .call(
                Product::Ecs,
                "StopInstance",
                &[
                    p("RegionId", region),
                    p("InstanceId", id),
                    p("ForceStop", force.to_string()),
                ],
            )
            .map(drop)
    }

    /// Deletes an instance; one already gone counts as deleted.
    pub(crate) fn delete(&self, region: &str, id: &str) -> Result<(), Failure> {
        match self.rpc.call(
            Product::Ecs,
            "DeleteInstance",
            &[
                p("RegionId", region),
                p("InstanceId", id),
                p("Force", "true"),
            ],
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.code.as_deref() == Some("InvalidInstanceId.NotFound") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Gives an instance a public address.
    pub(crate) fn allocate_public_ip(&self, region: &str, id: &str) -> Result<String, Failure> {
        let answer = self.rpc.call(
            Product::Ecs,
            "AllocatePublicIpAddress",
            &[p("RegionId", region), p("InstanceId", id)],
        )?;
        let ip = text(&answer, "IpAddress");
        if ip.is_empty() {
            return Err(Failure::unexpected(
                "AllocatePublicIpAddress",
                "no IpAddress",
            ));
        }
        Ok(ip)
    }
}

/// An instance from a DescribeInstances entry or a DescribeInstanceAttribute answer.
pub(crate) fn machine(i: &Value, region: &str) -> Machine {
    let mut private_ips = strings(
        i.get("VpcAttributes").unwrap_or(&Value::Null),
        "PrivateIpAddress",
        "IpAddress",
    );
    private_ips.extend(strings(i, "InnerIpAddress", "IpAddress"));
    let mut public_ips = strings(i, "PublicIpAddress", "IpAddress");
    if let Some(eip) = i.get("EipAddress") {
        let ip = text(eip, "IpAddress");
        if !ip.is_empty() {
            public_ips.push(ip);
        }
    }
    let region_of = text(i, "RegionId");
    Machine {
        id: text(i, "InstanceId"),
        name: text(i, "InstanceName"),
        region: if region_of.is_empty() {
            region.to_owned()
        } else {
            region_of
        },
        zone: text(i, "ZoneId"),
        state: State::of(&text(i, "Status")),
        private_ips,
        public_ips,
        instance_type: text(i, "InstanceType"),
        image: text(i, "ImageId"),
        created_at: rfc3339(&text(i, "CreationTime")),
    }
}

#[cfg(test)]
mod tests {
    use aliyun_rpc::scripted::Scripted;

    use super::*;
    use crate::rpc::Config;

    fn cloud_for<'a>(host: &'a Scripted, config: &'a Config) -> Cloud<'a, Scripted> {
        Cloud {
            rpc: Rpc { host, config },
        }
    }

    fn sent_params(host: &Scripted, i: usize) -> Vec<(String, String)> {
        host.sent_params(i)
    }

    fn get(params: &[(String, String)], key: &str) -> Option<String> {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn tokens_and_key_names_are_stable_and_valid() {
        assert_eq!(client_token("dcp-abc"), "dcp-abc");
        let long = client_token(&"x".repeat(100));
        assert!(long.len() <= 64 && long.starts_with("dcp-"));
        assert_eq!(long, client_token(&"x".repeat(100)));
        assert_ne!(client_token("中文"), "中文");
        assert_eq!(
            key_pair_name("ssh-ed25519 AAAA a"),
            key_pair_name("ssh-ed25519 AAAA b")
        );
        assert_ne!(
            key_pair_name("ssh-ed25519 AAAA"),
            key_pair_name("ssh-ed25519 BBBB")
        );
    }

    #[test]
    fn create_imports_the_key_once_and_sends_the_spec() {
        let host = Scripted::new(vec![
            Ok((
                400,
                r#"{"Code":"KeyPair.AlreadyExist","Message":"exists","RequestId":"R1"}"#.into(),
            )),
            Ok((
                200,
                r#"{"RequestId":"R2","InstanceIdSets":{"InstanceIdSet":["i-a","i-b"]}}"#.into(),
            )),
        ]);
        let config = Config::default();
        let cloud = cloud_for(&host, &config);
        let spec = Launch {
            region: "cn-hangzhou".into(),
            zone: "cn-hangzhou-h".into(),
            subnet: Some("vsw-1".into()),
            security_group: Some("sg-1".into()),
            instance_type: "ecs.g6.large".into(),
            image: "img".into(),
            system_disk: ("cloud_efficiency".into(), 40),
            data_disks: vec![("cloud_ssd".into(), 100), ("cloud_ssd".into(), 100)],
            internet: Some(("PayByTraffic".into(), 5)),
            instance_charge_type: "PostPaid".into(),
            name_prefix: "web".into(),
            ssh_public_key: Some("ssh-ed25519 AAAA dcp".into()),
            tags: vec![("dcp-machine".into(), "7".into())],
        };
        assert_eq!(cloud.create(&spec, 2, "key-1").unwrap(), ["i-a", "i-b"]);
        let run = sent_params(&host, 1);
        for (k, v) in [
            ("Action", "RunInstances"),
            ("ClientToken", "key-1"),
            ("Amount", "2"),
            ("VSwitchId", "vsw-1"),
            ("DataDisk.2.Size", "100"),
            ("InternetMaxBandwidthOut", "5"),
            ("Tag.1.Key", "dcp-machine"),
            ("UniqueSuffix", "true"),
        ] {
            assert_eq!(get(&run, k).as_deref(), Some(v), "{k}");
        }
        assert_eq!(
            get(&run, "KeyPairName"),
            Some(key_pair_name("ssh-ed25519 AAAA"))
        );
    }

    #[test]
    fn stop_stops_and_delete_forgives_a_missing_instance() {
        let host = Scripted::new(vec![
            Ok((200, r#"{"RequestId":"R"}"#.into())),
            Ok((
                404,
                r#"{"Code":"InvalidInstanceId.NotFound","Message":"gone","RequestId":"R"}"#.into(),
            )),
        ]);
        let config = Config::default();
        let cloud = cloud_for(&host, &config);
        cloud.stop("cn-hangzhou", "i-1", true).unwrap();
        assert_eq!(
            get(&sent_params(&host, 0), "Action").as_deref(),
            Some("StopInstance")
        );
        assert_eq!(
            get(&sent_params(&host, 0), "ForceStop").as_deref(),
            Some("true")
        );
        cloud.delete("cn-hangzhou", "i-1").unwrap();
        assert_eq!(
            get(&sent_params(&host, 1), "Force").as_deref(),
            Some("true")
        );
    }

    #[test]
    fn instances_parse_leniently_and_page_by_number() {
        let page = r#"{"RequestId":"R","TotalCount":"3","PageNumber":1,"PageSize":2,
            "Instances":{"Instance":[
              {"InstanceId":"i-1","Status":"Running","Cpu":"2","CreationTime":"2017-12-10T04:04Z",
               "VpcAttributes":{"PrivateIpAddress":{"IpAddress":["127.21.1.1"]}},
               "PublicIpAddress":{"IpAddress":[]}},
              {"InstanceId":"i-2","Status":"Stopped"}]}}"#;
        let host = Scripted::new(vec![Ok((200, page.into()))]);
        let config = Config::default();
        let cloud = cloud_for(&host, &config);
        let Page {
            machines,
            total,
            next,
        } = cloud.list("cn-hangzhou", None, 2).unwrap();
        assert_eq!(
            (machines.len(), total, next.as_deref()),
            (2, Some(3), Some("2"))
        );
        assert_eq!(machines[0].private_ips, ["127.21.1.1"]);
        assert_eq!(
            machines[0].created_at.as_deref(),
            Some("2017-12-10T04:04:00Z")
        );
        assert_eq!(
            (machines[0].state, machines[1].state),
            (State::Running, State::Stopped)
        );
        assert!(
            machines[1].private_ips.is_empty(),
            "a missing wrapper is an empty list"
        );
    }
}
