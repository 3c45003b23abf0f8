//! ECS (`2014-05-26`): the actions of the contract and the shapes DCP's
//! plugin reads, with the error codes of Aliyun's ECS docs.

use std::{net::Ipv4Addr, sync::Arc};

use serde_json::{Value, json};

use crate::{
    catalog::{self, DISK_CATEGORIES, IMAGES, INSTANCE_TYPES, REGIONS},
    cloud::{Cloud, lock},
    key_pairs, launch,
    params::{self, Params},
    reply::{ApiError, minutes},
    world::{Instance, InstanceStatus, World},
};

/// Every action this endpoint answers; anything else is
/// `InvalidApi.NotFound`.
pub(crate) const ACTIONS: &[&str] = &[
    "DescribeRegions",
    "DescribeZones",
    "DescribeImages",
    "DescribeInstanceTypes",
    "DescribeSecurityGroups",
    "ImportKeyPair",
    "DescribeKeyPairs",
    "DeleteKeyPairs",
    "RunInstances",
    "DescribeInstances",
    "DescribeInstanceStatus",
    "DescribeInstanceAttribute",
    "StartInstance",
    "StopInstance",
    "DeleteInstance",
    "AllocatePublicIpAddress",
];

/// Runs `action` for the caller `key_id`.
pub(crate) fn handle(
    cloud: &Arc<Cloud>,
    key_id: &str,
    action: &str,
    p: &Params,
) -> Result<Value, ApiError> {
    match action {
        "DescribeRegions" => Ok(describe_regions(cloud, p)),
        "DescribeZones" => describe_zones(p),
        "DescribeImages" => describe_images(p),
        "DescribeInstanceTypes" => describe_instance_types(p),
        "DescribeSecurityGroups" => describe_security_groups(cloud, p),
        "ImportKeyPair" => key_pairs::import_key_pair(cloud, p),
        "DescribeKeyPairs" => key_pairs::describe_key_pairs(cloud, p),
        "DeleteKeyPairs" => key_pairs::delete_key_pairs(cloud, p),
        "RunInstances" => launch::run_instances(cloud, key_id, p),
        "DescribeInstances" => describe_instances(cloud, p),
        "DescribeInstanceStatus" => describe_instance_status(cloud, p),
        "DescribeInstanceAttribute" => describe_instance_attribute(cloud, p),
        "StartInstance" => start_instance(cloud, p),
        "StopInstance" => stop_instance(cloud, p),
        "DeleteInstance" => delete_instance(cloud, p),
        "AllocatePublicIpAddress" => allocate_public_ip(cloud, p),
        _ => Err(ApiError::api_not_found()),
    }
}

/// `AcceptLanguage=en-US` asks for English names; Chinese is the default.
fn english(p: &Params) -> bool {
    p.value("AcceptLanguage")
        .is_some_and(|l| l.to_ascii_lowercase().starts_with("en"))
}

fn describe_regions(cloud: &Cloud, p: &Params) -> Value {
    let english = english(p);
    let regions: Vec<Value> = REGIONS
        .iter()
        .map(|r| {
            json!({
                "RegionId": r.id,
                "LocalName": if english { r.english_name } else { r.local_name },
                "RegionEndpoint": cloud.ecs_host,
                "Status": "available",
            })
        })
        .collect();
    json!({ "Regions": { "Region": regions } })
}

fn describe_zones(p: &Params) -> Result<Value, ApiError> {
    let region = p.region()?;
    let english = english(p);
    let types: Vec<&str> = INSTANCE_TYPES.iter().map(|t| t.id).collect();
    let zones: Vec<Value> = region
        .zones
        .iter()
        .map(|z| {
            json!({
                "ZoneId": z.id,
                "LocalName": if english { z.english_name } else { z.local_name },
                "AvailableResourceCreation": {
                    "ResourceTypes": ["VSwitch", "IoOptimized", "Instance", "Disk"],
                },
                "AvailableInstanceTypes": { "InstanceTypes": types },
                "AvailableDiskCategories": { "DiskCategories": DISK_CATEGORIES },
            })
        })
        .collect();
    Ok(json!({ "Zones": { "Zone": zones } }))
}

fn describe_images(p: &Params) -> Result<Value, ApiError> {
    let region = p.region()?;
    let page = p.page()?;
    let ids: Option<Vec<&str>> = p
        .value("ImageId")
        .map(|v| v.split(',').map(str::trim).collect());
    let images: Vec<Value> = IMAGES
        .iter()
        .filter(|i| ids.as_ref().is_none_or(|ids| ids.contains(&i.id)))
        .filter(|i| {
            p.value("ImageName")
                .is_none_or(|n| params::matches(n, i.id))
        })
        .filter(|_| {
            p.value("OSType")
                .is_none_or(|t| t.eq_ignore_ascii_case("linux"))
        })
        .filter(|_| p.value("Architecture").is_none_or(|a| a == "x86_64"))
        .filter(|_| p.value("ImageOwnerAlias").is_none_or(|a| a == "system"))
        .filter(|_| {
            p.value("Status")
                .is_none_or(|s| s.split(',').any(|s| s == "Available"))
        })
        .map(|i| {
            json!({
                "ImageId": i.id,
                "ImageName": i.id,
                "ImageFamily": i.family,
                "ImageVersion": "",
                "OSName": i.os_name,
                "OSNameEn": i.os_name_en,
                "OSType": "linux",
                "Platform": i.platform,
                "Architecture": "x86_64",
                "Status": "Available",
                "ImageOwnerAlias": "system",
                "IsPublic": true,
                "IsSupportCloudinit": true,
                "IsSupportIoOptimized": true,
                "Usage": "instance",
                "Size": i.size_gib,
                "CreationTime": catalog::IMAGE_CREATION_TIME,
                "Description": "",
                "DiskDeviceMappings": { "DiskDeviceMapping": [{
                    "Type": "system",
                    "Size": i.size_gib.to_string(),
                    "Device": "/dev/xvda",
                    "Format": "",
                    "SnapshotId": "",
                }]},
                "Tags": { "Tag": [] },
            })
        })
        .collect();
    let mut body = page.answer("Images", "Image", images);
    body.insert("RegionId".to_owned(), json!(region.id));
    Ok(Value::Object(body))
}

fn describe_instance_types(p: &Params) -> Result<Value, ApiError> {
    if let Some(id) = p.value("RegionId") {
        catalog::region(id).ok_or_else(ApiError::region_not_found)?;
    }
    let wanted = p.list("InstanceTypes")?;
    let types: Vec<Value> = INSTANCE_TYPES
        .iter()
        .filter(|t| wanted.is_empty() || wanted.contains(&t.id))
        .filter(|t| p.value("InstanceTypeFamily").is_none_or(|f| f == t.family))
        .map(|t| {
            json!({
                "InstanceTypeId": t.id,
                "InstanceTypeFamily": t.family,
                "CpuCoreCount": t.cpus,
                "MemorySize": t.memory_gib,
                "CpuArchitecture": "X86",
                "InstanceCategory": "General-purpose",
                "GPUAmount": 0,
                "GPUSpec": "",
                "EniQuantity": 2,
                "LocalStorageCategory": "",
            })
        })
        .collect();
    Ok(json!({ "NextToken": "", "InstanceTypes": { "InstanceType": types } }))
}

fn describe_security_groups(cloud: &Cloud, p: &Params) -> Result<Value, ApiError> {
    let region = p.region()?;
    let page = p.page()?;
    let ids = p.json_list("SecurityGroupIds", 100)?;
    let world = lock(&cloud.world);
    let group = region.security_group_id;
    let instances = world
        .instances
        .iter()
        .filter(|i| i.security_groups.iter().any(|g| g == group))
        .count();
    let groups: Vec<Value> = std::iter::once(group)
        .filter(|g| ids.as_ref().is_none_or(|ids| ids.iter().any(|i| i == g)))
        .filter(|g| p.value("SecurityGroupId").is_none_or(|id| id == *g))
        .filter(|_| p.value("VpcId").is_none_or(|v| v == region.vpc_id))
        .filter(|_| {
            p.value("SecurityGroupName")
                .is_none_or(|n| n == "default-sg")
        })
        .map(|g| {
            json!({
                "SecurityGroupId": g,
                "SecurityGroupName": "default-sg",
                "Description": "System created security group.",
                "SecurityGroupType": "normal",
                "VpcId": region.vpc_id,
                "CreationTime": "2024-02-01T00:00:00Z",
                "EcsCount": instances,
                "ResourceGroupId": "",
                "ServiceManaged": false,
                "Tags": { "Tag": [] },
            })
        })
        .collect();
    let mut body = page.answer("SecurityGroups", "SecurityGroup", groups);
    body.insert("RegionId".to_owned(), json!(region.id));
    Ok(Value::Object(body))
}

/// Aliyun's rule for instance and key pair names: 2–`max` characters,
/// starting with a letter (Chinese included), then letters, digits and
/// `. _ - :`, never a URL.
pub(crate) fn valid_name(name: &str, max: usize) -> bool {
    let count = name.chars().count();
    let mut chars = name.chars();
    (2..=max).contains(&count)
        && chars.next().is_some_and(|c| c.is_alphabetic())
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
        && !name.starts_with("http://")
        && !name.starts_with("https://")
}

/// An instance in DescribeInstances' shape; `attribute` gives
/// DescribeInstanceAttribute's variant (where `IoOptimized` is a string).
fn instance_json(i: &Instance, attribute: bool) -> Value {
    let public: Vec<String> = i
        .visible_public_ip()
        .iter()
        .map(Ipv4Addr::to_string)
        .collect();
    let tags: Vec<Value> = i
        .tags
        .iter()
        .map(|(k, v)| json!({ "TagKey": k, "TagValue": v }))
        .collect();
    let stopped_mode = if i.status == InstanceStatus::Stopped {
        "KeepCharging"
    } else {
        "Not-applicable"
    };
    let mut body = json!({
        "InstanceId": i.id,
        "InstanceName": i.name,
        "HostName": i.host_name,
        "Description": i.description,
        "Status": i.status.as_str(),
        "RegionId": i.region.id,
        "ZoneId": i.zone.id,
        "InstanceType": i.instance_type.id,
        "InstanceTypeFamily": i.instance_type.family,
        "Cpu": i.instance_type.cpus,
        // GiB in the catalog, whole MiB here; the catalog's sizes are whole.
        "Memory": (i.instance_type.memory_gib * 1024.0).round() as u64,
        "ImageId": i.image.id,
        "OSType": "linux",
        "OSName": i.image.os_name,
        "OSNameEn": i.image.os_name_en,
        "CreationTime": minutes(i.created_at),
        "StartTime": i.started_at.map(minutes).unwrap_or_default(),
        "ExpiredTime": "2099-12-31T15:59Z",
        "InstanceChargeType": i.instance_charge_type,
        "InternetChargeType": i.internet_charge_type,
        "InternetMaxBandwidthOut": i.bandwidth_out,
        "InternetMaxBandwidthIn": 200,
        "InstanceNetworkType": "vpc",
        "KeyPairName": i.key_pair_name.clone().unwrap_or_default(),
        "DeletionProtection": i.deletion_protection,
        "IoOptimized": if attribute { json!("optimized") } else { json!(true) },
        "StoppedMode": stopped_mode,
        "Recyclable": false,
        "DeviceAvailable": true,
        "GPUAmount": 0,
        "GPUSpec": "",
        "ResourceGroupId": "",
        "VlanId": "",
        "ClusterId": "",
    });
    let data_disks: Vec<Value> = i
        .data_disks
        .iter()
        .map(|d| json!({ "Category": d.category, "Size": d.size_gib }))
        .collect();
    let wrapped = json!({
        "SystemDisk": { "Category": i.system_disk.category, "Size": i.system_disk.size_gib },
        "DataDisks": { "DataDisk": data_disks },
        "PublicIpAddress": { "IpAddress": public },
        "InnerIpAddress": { "IpAddress": [] },
        "VpcAttributes": {
            "VpcId": i.region.vpc_id,
            "VSwitchId": i.zone.vswitch_id,
            "NatIpAddress": "",
            "PrivateIpAddress": { "IpAddress": [i.private_ip.to_string()] },
        },
        "EipAddress": { "AllocationId": "", "IpAddress": "", "Bandwidth": 0, "InternetChargeType": "" },
        "SecurityGroupIds": { "SecurityGroupId": i.security_groups },
        "Tags": { "Tag": tags },
        "OperationLocks": { "LockReason": [] },
    });
    if let (Value::Object(body), Value::Object(wrapped)) = (&mut body, wrapped) {
        body.extend(wrapped);
    }
    body
}

fn describe_instances(cloud: &Cloud, p: &Params) -> Result<Value, ApiError> {
    let region = p.region()?;
    let page = p.page()?;
    let ids = p.json_list("InstanceIds", 100)?;
    let private_ips = p.json_list("PrivateIpAddresses", 100)?;
    let public_ips = p.json_list("PublicIpAddresses", 100)?;
    let status = p
        .value("Status")
        .map(|s| InstanceStatus::parse(s).ok_or_else(|| ApiError::invalid("Status")))
        .transpose()?;
    let tags: Vec<(String, String)> = p
        .records("Tag")?
        .into_values()
        .filter_map(|f| {
            f.get("Key").map(|k| {
                (
                    (*k).to_owned(),
                    f.get("Value").copied().unwrap_or_default().to_owned(),
                )
            })
        })
        .collect();
    let is = |name: &str, actual: &str| p.value(name).is_none_or(|v| v == actual);
    let world = lock(&cloud.world);
    let found: Vec<Value> = world
        .instances
        .iter()
        .filter(|i| i.region.id == region.id)
        .filter(|i| ids.as_ref().is_none_or(|ids| ids.contains(&i.id)))
        .filter(|i| status.is_none_or(|s| s == i.status))
        .filter(|i| {
            is("ZoneId", i.zone.id)
                && is("VpcId", i.region.vpc_id)
                && is("VSwitchId", i.zone.vswitch_id)
        })
        .filter(|i| is("InstanceType", i.instance_type.id) && is("ImageId", i.image.id))
        .filter(|i| {
            is(
                "KeyPairName",
                i.key_pair_name.as_deref().unwrap_or_default(),
            )
        })
        .filter(|i| {
            p.value("SecurityGroupId")
                .is_none_or(|g| i.security_groups.iter().any(|s| s == g))
        })
        .filter(|i| {
            p.value("InstanceName")
                .is_none_or(|n| params::matches(n, &i.name))
        })
        .filter(|i| {
            private_ips
                .as_ref()
                .is_none_or(|ips| ips.contains(&i.private_ip.to_string()))
        })
        .filter(|i| {
            public_ips.as_ref().is_none_or(|ips| {
                i.visible_public_ip()
                    .is_some_and(|ip| ips.contains(&ip.to_string()))
            })
        })
        .filter(|i| {
            tags.iter().all(|(k, v)| {
                i.tags
                    .iter()
                    .any(|(tk, tv)| tk == k && (v.is_empty() || tv == v))
            })
        })
        .map(|i| instance_json(i, false))
        .collect();
    let mut body = page.answer("Instances", "Instance", found);
    body.insert("NextToken".to_owned(), json!(""));
    Ok(Value::Object(body))
}

fn describe_instance_status(cloud: &Cloud, p: &Params) -> Result<Value, ApiError> {
    let region = p.region()?;
    let page = p.page()?;
    let ids = p.list("InstanceId")?;
    let world = lock(&cloud.world);
    let statuses: Vec<Value> = world
        .instances
        .iter()
        .filter(|i| i.region.id == region.id)
        .filter(|i| ids.is_empty() || ids.contains(&i.id.as_str()))
        .filter(|i| p.value("ZoneId").is_none_or(|z| z == i.zone.id))
        .map(|i| json!({ "InstanceId": i.id, "Status": i.status.as_str() }))
        .collect();
    Ok(Value::Object(page.answer(
        "InstanceStatuses",
        "InstanceStatus",
        statuses,
    )))
}

/// The instance `InstanceId` names (in `RegionId`, when given).
fn find<'w>(world: &'w mut World, p: &Params) -> Result<&'w mut Instance, ApiError> {
    let id = p.required("InstanceId")?;
    let region = p.value("RegionId");
    world
        .instance_mut(id)
        .filter(|i| region.is_none_or(|r| r == i.region.id))
        .ok_or_else(ApiError::instance_not_found)
}

fn describe_instance_attribute(cloud: &Cloud, p: &Params) -> Result<Value, ApiError> {
    let mut world = lock(&cloud.world);
    Ok(instance_json(find(&mut world, p)?, true))
}

fn start_instance(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    let mut world = lock(&cloud.world);
    let instance = find(&mut world, p)?;
    if instance.deleting || instance.status != InstanceStatus::Stopped {
        return Err(ApiError::incorrect_status());
    }
    cloud.begin_start(instance);
    Ok(json!({}))
}

fn stop_instance(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    p.flag("ForceStop")?;
    let mut world = lock(&cloud.world);
    let instance = find(&mut world, p)?;
    if instance.deleting || instance.status != InstanceStatus::Running {
        return Err(ApiError::incorrect_status());
    }
    cloud.begin_stop(instance);
    Ok(json!({}))
}

fn delete_instance(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    let force = p.flag("Force")?;
    let mut world = lock(&cloud.world);
    let instance = find(&mut world, p)?;
    if instance.deleting {
        // Already on its way out: a retry of a call whose reply was lost.
        return Ok(json!({}));
    }
    if instance.deletion_protection {
        return Err(ApiError::new(
            403,
            "InvalidOperation.DeletionProtection",
            "The instance is protected from release; disable DeletionProtection first.",
        ));
    }
    match instance.status {
        InstanceStatus::Stopped => {}
        InstanceStatus::Running if force => {}
        _ => return Err(ApiError::incorrect_status()),
    }
    cloud.begin_delete(instance);
    Ok(json!({}))
}

fn allocate_public_ip(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    let mut world = lock(&cloud.world);
    let instance = find(&mut world, p)?;
    if instance.deleting
        || !matches!(
            instance.status,
            InstanceStatus::Running | InstanceStatus::Stopped
        )
    {
        return Err(ApiError::incorrect_status());
    }
    if let Some(ip) = instance.public_ip {
        return Ok(json!({ "IpAddress": ip.to_string() }));
    }
    let id = instance.id.clone();
    let ip = world
        .allocate_public(cloud.fleet.is_some())
        .ok_or_else(|| {
            ApiError::new(
                403,
                "QuotaExceed.PublicIpAddress",
                "The public IP address quota is exceeded.",
            )
        })?;
    let instance = world
        .instance_mut(&id)
        .ok_or_else(ApiError::instance_not_found)?;
    instance.public_ip = Some(ip);
    if instance.status == InstanceStatus::Running {
        cloud.relisten(instance);
    }
    Ok(json!({ "IpAddress": ip.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_aliyun_rules() {
        assert!(valid_name("web-01", 128));
        assert!(valid_name("中文名", 128));
        assert!(!valid_name("1web", 128));
        assert!(!valid_name("w", 128));
        assert!(!valid_name("web server", 128));
        assert!(!valid_name("http://x", 128));
    }
}
