//! VPC (`2016-04-28`): the default VPC and vSwitches of each region, read
//! only. ECS's legacy DescribeVpcs/DescribeVSwitches are not served on the
//! ECS endpoint, so a driver that sends them to the wrong product finds out.

use serde_json::{Value, json};

use crate::{
    catalog::{VPC_CIDR, Zone},
    cloud::{Cloud, lock},
    params::Params,
    reply::ApiError,
};

/// Every action this endpoint answers.
pub(crate) const ACTIONS: &[&str] = &["DescribeVpcs", "DescribeVSwitches"];

/// When the default networks were "created".
const CREATION_TIME: &str = "2024-02-01T00:00:00Z";

/// Runs `action`.
pub(crate) fn handle(cloud: &Cloud, action: &str, p: &Params) -> Result<Value, ApiError> {
    match action {
        "DescribeVpcs" => describe_vpcs(p),
        "DescribeVSwitches" => describe_vswitches(cloud, p),
        _ => Err(ApiError::api_not_found()),
    }
}

/// A filter that may list several ids separated by commas.
fn listed(p: &Params, name: &str, id: &str) -> bool {
    p.value(name)
        .is_none_or(|ids| ids.split(',').any(|i| i.trim() == id))
}

/// `IsDefault` filter: every simulated network is a default one.
fn default_wanted(p: &Params) -> Result<bool, ApiError> {
    Ok(p.value("IsDefault").is_none() || p.flag("IsDefault")?)
}

fn describe_vpcs(p: &Params) -> Result<Value, ApiError> {
    let region = p.region()?;
    let page = p.page()?;
    let wanted = listed(p, "VpcId", region.vpc_id)
        && p.value("VpcName").is_none_or(|n| n == "default-vpc")
        && default_wanted(p)?;
    let vpcs: Vec<Value> = std::iter::once(region)
        .filter(|_| wanted)
        .map(|r| {
            let vswitches: Vec<&str> = r.zones.iter().map(|z| z.vswitch_id).collect();
            json!({
                "VpcId": r.vpc_id,
                "VpcName": "default-vpc",
                "Description": "System created default VPC.",
                "Status": "Available",
                "CidrBlock": VPC_CIDR,
                "IsDefault": true,
                "VRouterId": format!("vrt-{}", &r.vpc_id[4..]),
                "RegionId": r.id,
                "CreationTime": CREATION_TIME,
                "ResourceGroupId": "",
                "VSwitchIds": { "VSwitchId": vswitches },
                "UserCidrs": { "UserCidr": [] },
                "Tags": { "Tag": [] },
            })
        })
        .collect();
    Ok(Value::Object(page.answer("Vpcs", "Vpc", vpcs)))
}

fn describe_vswitches(cloud: &Cloud, p: &Params) -> Result<Value, ApiError> {
    let region = p.region()?;
    let page = p.page()?;
    let defaults = default_wanted(p)?;
    let world = lock(&cloud.world);
    let vswitches: Vec<Value> = region
        .zones
        .iter()
        .filter(|_| defaults && listed(p, "VpcId", region.vpc_id))
        .filter(|z| listed(p, "VSwitchId", z.vswitch_id))
        .filter(|z| p.value("ZoneId").is_none_or(|id| id == z.id))
        .filter(|z| p.value("VSwitchName").is_none_or(|n| n == vswitch_name(z)))
        .map(|z| {
            let free = usize::try_from(Zone::CAPACITY)
                .unwrap_or(usize::MAX)
                .saturating_sub(world.count_in(z));
            json!({
                "VSwitchId": z.vswitch_id,
                "VSwitchName": vswitch_name(z),
                "Description": "System created default vSwitch.",
                "VpcId": region.vpc_id,
                "ZoneId": z.id,
                "CidrBlock": z.cidr(),
                "AvailableIpAddressCount": free,
                "Status": "Available",
                "IsDefault": true,
                "CreationTime": CREATION_TIME,
                "ResourceGroupId": "",
                "Tags": { "Tag": [] },
            })
        })
        .collect();
    Ok(Value::Object(page.answer(
        "VSwitches",
        "VSwitch",
        vswitches,
    )))
}

fn vswitch_name(zone: &Zone) -> String {
    format!("default-{}", zone.id)
}
