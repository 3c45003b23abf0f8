//! RunInstances: what was asked for, checked as the ECS docs list it; the
//! ClientToken that makes a retry return the first answer instead of new
//! instances; and the instances themselves, handed to the lifecycle.

use std::{net::Ipv4Addr, sync::Arc};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use rand::Rng;
use serde_json::{Value, json};

use crate::{
    catalog::{self, DISK_CATEGORIES, Region, Zone},
    cloud::{Cloud, lock},
    ecs::valid_name,
    params::Params,
    reply::ApiError,
    tokens::Idempotency,
    world::{Disk, Instance, InstanceStatus, World},
};

/// Linux host names: 2–64 characters, dot-separated labels of letters,
/// digits and `-`, no label starting or ending with `-`.
fn valid_host_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// 8–30 characters with three of: upper case, lower case, digits, symbols.
fn valid_password(password: &str) -> bool {
    const SYMBOLS: &str = "()`~!@#$%^&*-_+=|{}[]:;'<>,.?/";
    let classes = [
        password.chars().any(|c| c.is_ascii_uppercase()),
        password.chars().any(|c| c.is_ascii_lowercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| SYMBOLS.contains(c)),
    ];
    (8..=30).contains(&password.len())
        && password
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || SYMBOLS.contains(c))
        && classes.iter().filter(|c| **c).count() >= 3
}

/// Everything RunInstances was asked for, checked.
struct Launch {
    zone: &'static Zone,
    image: &'static catalog::Image,
    instance_type: &'static catalog::InstanceType,
    security_groups: Vec<String>,
    name: Option<String>,
    host_name: Option<String>,
    description: String,
    unique_suffix: bool,
    amount: u32,
    private_ip: Option<Ipv4Addr>,
    key_pair: Option<(String, String)>,
    system_disk: Disk,
    data_disks: Vec<Disk>,
    internet_charge_type: String,
    bandwidth_out: u32,
    instance_charge_type: String,
    tags: Vec<(String, String)>,
    deletion_protection: bool,
}

impl Launch {
    fn parse(p: &Params, region: &'static Region, world: &World) -> Result<Self, ApiError> {
        let image_id = p.needed("ImageId")?;
        let type_id = p.needed("InstanceType")?;
        let mut group_ids: Vec<&str> = p.value("SecurityGroupId").into_iter().collect();
        for id in p.list("SecurityGroupIds")? {
            if !group_ids.contains(&id) {
                group_ids.push(id);
            }
        }
        if group_ids.is_empty() {
            return Err(ApiError::missing_parameter("SecurityGroupId"));
        }
        let vswitch_id = p.needed("VSwitchId")?;

        let zone_id = p.value("ZoneId");
        if let Some(zone_id) = zone_id
            && !region.zones.iter().any(|z| z.id == zone_id)
        {
            return Err(ApiError::new(
                404,
                "InvalidZoneId.NotFound",
                "The specified zoneId does not exist.",
            ));
        }
        let image = catalog::image(image_id).ok_or_else(|| {
            ApiError::new(
                404,
                "InvalidImageId.NotFound",
                "The specified ImageId does not exist.",
            )
        })?;
        let instance_type = catalog::instance_type(type_id).ok_or_else(|| {
            ApiError::new(
                403,
                "InvalidInstanceType.ValueNotSupported",
                "The specified InstanceType beyond the permitted range.",
            )
        })?;
        let zone = match catalog::vswitch(vswitch_id) {
            Some((r, z)) if r.id == region.id => z,
            _ => {
                return Err(ApiError::new(
                    404,
                    "InvalidVSwitchId.NotFound",
                    "Specified virtual switch does not exist.",
                ));
            }
        };
        if zone_id.is_some_and(|id| id != zone.id) {
            return Err(ApiError::new(
                400,
                "InvalidParameter.Mismatch",
                "Specified virtual switch is not in the specified zone.",
            ));
        }
        for id in &group_ids {
            if *id != region.security_group_id {
                return Err(ApiError::new(
                    404,
                    "InvalidSecurityGroupId.NotFound",
                    "The SecurityGroupId provided does not exist in our records.",
                ));
            }
        }

        let name = p.value("InstanceName");
        let unique_suffix = p.flag("UniqueSuffix")?;
        if let Some(name) = name {
            if !valid_name(name, 128) {
                return Err(ApiError::invalid_as(
                    "InvalidInstanceName.Malformed",
                    "InstanceName",
                ));
            }
            if unique_suffix && name.chars().count() > 125 {
                return Err(ApiError::new(
                    403,
                    "InvalidParams.InstanceNameExceed",
                    "The uniqueSuffix takes three naming places, please shorten your InstanceName.",
                ));
            }
        }
        let host_name = p.value("HostName");
        if let Some(host) = host_name {
            if !valid_host_name(host) {
                return Err(ApiError::invalid_as(
                    "InvalidHostName.Malformed",
                    "HostName",
                ));
            }
            if unique_suffix && host.len() > 61 {
                return Err(ApiError::new(
                    403,
                    "InvalidParams.HostnameExceed",
                    "The uniqueSuffix takes three naming places, please shorten your Hostname.",
                ));
            }
        }
        let description = p.value("Description").unwrap_or_default();
        if description.chars().count() > 256 || description.starts_with("http") {
            return Err(ApiError::invalid_as(
                "InvalidDescription.Malformed",
                "Description",
            ));
        }
        if p.value("Password").is_some_and(|pw| !valid_password(pw)) {
            return Err(ApiError::invalid_as(
                "InvalidPassword.Malformed",
                "Password",
            ));
        }
        let key_pair = match p.value("KeyPairName") {
            None => None,
            Some(name) => {
                let pair = world
                    .key_pairs
                    .iter()
                    .find(|k| k.region == region.id && k.name == name)
                    .ok_or_else(|| {
                        ApiError::new(
                            404,
                            "InvalidKeyPairName.NotFound",
                            "The specified parameter \"KeyPairName\" does not exist in our records.",
                        )
                    })?;
                Some((pair.name.clone(), pair.public_key.clone()))
            }
        };

        let amount = p.number::<u32>("Amount")?.unwrap_or(1);
        if !(1..=100).contains(&amount) {
            return Err(ApiError::invalid("Amount"));
        }
        let private_ip = match p.value("PrivateIpAddress") {
            None => None,
            Some(text) => {
                let ip: Ipv4Addr = text.parse().map_err(|_| {
                    ApiError::invalid_as("InvalidPrivateIpAddress.Malformed", "PrivateIpAddress")
                })?;
                if !(0..Zone::CAPACITY).any(|n| zone.address(n) == ip) {
                    return Err(ApiError::new(
                        400,
                        "InvalidPrivateIpAddress",
                        "Specified private IP address is not in the CIDR block of virtual switch.",
                    ));
                }
                if amount != 1 {
                    return Err(ApiError::invalid("Amount"));
                }
                Some(ip)
            }
        };

        let system_disk = Disk {
            category: disk_category(
                p,
                "SystemDisk.Category",
                "InvalidSystemDiskCategory.ValueNotSupported",
            )?,
            size_gib: p
                .number::<u32>("SystemDisk.Size")
                .map_err(|_| {
                    ApiError::invalid_as(
                        "InvalidSystemDiskSize.ValueNotSupported",
                        "SystemDisk.Size",
                    )
                })?
                .unwrap_or_else(|| image.size_gib.max(40)),
        };
        if !(20..=2048).contains(&system_disk.size_gib) {
            return Err(ApiError::invalid_as(
                "InvalidSystemDiskSize.ValueNotSupported",
                "SystemDisk.Size",
            ));
        }
        if system_disk.size_gib < image.size_gib {
            return Err(ApiError::new(
                404,
                "InvalidSystemDiskSize.LessThanImageSize",
                "The specified parameter SystemDisk.Size is less than the image size.",
            ));
        }
        let disks = p.records("DataDisk")?;
        if disks.len() > 16 {
            return Err(ApiError::new(
                400,
                "InstanceDiskNumber.LimitExceed",
                "The total number of specified disk in an instance exceeds.",
            ));
        }
        let mut data_disks = Vec::new();
        for (n, fields) in &disks {
            let category = match fields.get("Category").filter(|c| !c.is_empty()) {
                None => "cloud_efficiency".to_owned(),
                Some(c) if DISK_CATEGORIES.contains(c) => (*c).to_owned(),
                Some(_) => {
                    return Err(ApiError::invalid_as(
                        "InvalidDataDiskCategory.ValueNotSupported",
                        &format!("DataDisk.{n}.Category"),
                    ));
                }
            };
            let size_name = format!("DataDisk.{n}.Size");
            let size: u32 = fields
                .get("Size")
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ApiError::missing_parameter(&size_name))?
                .parse()
                .map_err(|_| {
                    ApiError::invalid_as("InvalidDataDiskSize.ValueNotSupported", &size_name)
                })?;
            if !(20..=32768).contains(&size) {
                return Err(ApiError::invalid_as(
                    "InvalidDataDiskSize.ValueNotSupported",
                    &size_name,
                ));
            }
            data_disks.push(Disk {
                category,
                size_gib: size,
            });
        }

        let internet_charge_type = p.value("InternetChargeType").unwrap_or("PayByTraffic");
        if !matches!(internet_charge_type, "PayByTraffic" | "PayByBandwidth") {
            return Err(ApiError::new(
                400,
                "InvalidInternetChargeType.ValueNotSupported",
                "The specified InternetChargeType is not valid.",
            ));
        }
        let bandwidth_out = p.number::<u32>("InternetMaxBandwidthOut")?.unwrap_or(0);
        if bandwidth_out > 100 {
            return Err(ApiError::invalid("InternetMaxBandwidthOut"));
        }
        if p.number::<u32>("InternetMaxBandwidthIn")?
            .is_some_and(|b| !(1..=200).contains(&b))
        {
            return Err(ApiError::invalid("InternetMaxBandwidthIn"));
        }
        let instance_charge_type = p.value("InstanceChargeType").unwrap_or("PostPaid");
        match instance_charge_type {
            "PostPaid" => {}
            "PrePaid" => {
                p.needed("Period")?;
            }
            _ => {
                return Err(ApiError::new(
                    404,
                    "InvalidInstanceChargeType.NotFound",
                    "The InstanceChargeType does not exist in our records",
                ));
            }
        }
        if let Some(data) = p.value("UserData")
            && STANDARD.decode(data).map_or(true, |d| d.len() > 16 * 1024)
        {
            return Err(ApiError::new(
                400,
                "InvalidUserData.Base64FormatInvalid",
                "The specified UserData is not valid",
            ));
        }

        Ok(Self {
            zone,
            image,
            instance_type,
            security_groups: group_ids.into_iter().map(str::to_owned).collect(),
            name: name.map(str::to_owned),
            host_name: host_name.map(str::to_owned),
            description: description.to_owned(),
            unique_suffix,
            amount,
            private_ip,
            key_pair,
            system_disk,
            data_disks,
            internet_charge_type: internet_charge_type.to_owned(),
            bandwidth_out,
            instance_charge_type: instance_charge_type.to_owned(),
            tags: tags(p)?,
            deletion_protection: p.flag("DeletionProtection")?,
        })
    }
}

/// Where one of RunInstances' `Amount` instances goes.
struct Seat<'a> {
    id: String,
    /// 1-based position in the batch, for `UniqueSuffix`.
    n: u32,
    region: &'static Region,
    private_ip: Ipv4Addr,
    public_ip: Option<Ipv4Addr>,
    client_token: Option<&'a str>,
    now: i64,
}

impl Launch {
    /// The `seat.n`th instance of this launch, Pending.
    fn instance(&self, seat: Seat<'_>) -> Instance {
        let suffixed = |base: &str| {
            if self.unique_suffix {
                format!("{base}{:03}", seat.n)
            } else {
                base.to_owned()
            }
        };
        Instance {
            name: self
                .name
                .as_deref()
                .map_or_else(|| seat.id.clone(), suffixed),
            // Aliyun's default: `iZ` + the id without `i-` + `Z`.
            host_name: self
                .host_name
                .as_deref()
                .map_or_else(|| format!("iZ{}Z", &seat.id[2..]), suffixed),
            description: self.description.clone(),
            region: seat.region,
            zone: self.zone,
            security_groups: self.security_groups.clone(),
            instance_type: self.instance_type,
            image: self.image,
            status: InstanceStatus::Pending,
            generation: 0,
            deleting: false,
            private_ip: seat.private_ip,
            public_ip: seat.public_ip,
            has_run: false,
            internet_charge_type: self.internet_charge_type.clone(),
            bandwidth_out: self.bandwidth_out,
            instance_charge_type: self.instance_charge_type.clone(),
            key_pair_name: self.key_pair.as_ref().map(|(name, _)| name.clone()),
            authorized_key: self.key_pair.as_ref().map(|(_, key)| key.clone()),
            system_disk: self.system_disk.clone(),
            data_disks: self.data_disks.clone(),
            tags: self.tags.clone(),
            client_token: seat.client_token.map(str::to_owned),
            deletion_protection: self.deletion_protection,
            created_at: seat.now,
            started_at: None,
            in_fleet: true,
            id: seat.id,
        }
    }
}

fn disk_category(p: &Params, name: &str, code: &str) -> Result<String, ApiError> {
    match p.value(name) {
        None => Ok("cloud_efficiency".to_owned()),
        Some(c) if DISK_CATEGORIES.contains(&c) => Ok(c.to_owned()),
        Some(_) => Err(ApiError::invalid_as(code, name)),
    }
}

/// `Tag.N.Key`/`Tag.N.Value`, N from 1 to 20.
fn tags(p: &Params) -> Result<Vec<(String, String)>, ApiError> {
    let records = p.records("Tag")?;
    if records.len() > 20 || records.keys().any(|n| *n > 20) {
        return Err(ApiError::new(
            400,
            "InvalidTagCount",
            "The specified tags are beyond the permitted range.",
        ));
    }
    let reserved = |s: &str| {
        s.starts_with("aliyun")
            || s.starts_with("acs:")
            || s.contains("http://")
            || s.contains("https://")
    };
    let mut tags = Vec::new();
    for fields in records.values() {
        let value = fields.get("Value").copied().unwrap_or_default();
        let Some(key) = fields.get("Key").copied() else {
            return Err(ApiError::new(
                400,
                "InvalidTag.Mismatch",
                "The specified Tag.n.Key and Tag.n.Value are not match.",
            ));
        };
        if key.is_empty() || key.chars().count() > 64 || reserved(key) {
            return Err(ApiError::new(
                400,
                "InvalidTagKey.Malformed",
                "The specified Tag.n.Key is not valid.",
            ));
        }
        if value.chars().count() > 128 || reserved(value) {
            return Err(ApiError::new(
                400,
                "InvalidTagValue.Malformed",
                "The specified Tag.n.Value is not valid.",
            ));
        }
        tags.push((key.to_owned(), value.to_owned()));
    }
    Ok(tags)
}

pub(crate) fn run_instances(
    cloud: &Arc<Cloud>,
    key_id: &str,
    p: &Params,
) -> Result<Value, ApiError> {
    let region = p.region()?;
    let token = Idempotency::of(key_id, p)?;
    let client_token = p.value("ClientToken");
    let mut world = lock(&cloud.world);
    if let Some(answer) = token.replay(&world) {
        // A retry of a call that already ran: the same instances, none new.
        return answer;
    }
    let launch = Launch::parse(p, region, &world)?;
    if p.flag("DryRun")? {
        return Err(ApiError::new(
            400,
            "DryRunOperation",
            "Request validation has been passed with DryRun flag set.",
        ));
    }

    let probe = cloud.fleet.is_some();
    let now = cloud.clock.now();
    let mut created: Vec<Instance> = Vec::new();
    for n in 1..=launch.amount {
        let id = loop {
            let id = world.new_instance_id(region);
            if !created.iter().any(|i| i.id == id) {
                break id;
            }
        };
        let taken = |ip: Ipv4Addr| {
            created
                .iter()
                .any(|i| i.private_ip == ip || i.public_ip == Some(ip))
        };
        let private_ip = match launch.private_ip {
            Some(ip) if world.instances.iter().any(|i| i.private_ip == ip) => {
                return Err(ApiError::new(
                    400,
                    "InvalidPrivateIpAddress.Duplicated",
                    "Specified private IP address is duplicated.",
                ));
            }
            Some(ip) => Some(ip),
            None => std::iter::repeat_with(|| world.allocate_private(launch.zone, probe))
                .take(4)
                .flatten()
                .find(|ip| !taken(*ip)),
        };
        let Some(private_ip) = private_ip else {
            return Err(ApiError::new(
                400,
                "QuotaExceeded.PrivateIpAddress",
                "Don't have enough private IPs in this switch",
            ));
        };
        let public_ip = if launch.bandwidth_out > 0 {
            std::iter::repeat_with(|| world.allocate_public(probe))
                .take(4)
                .flatten()
                .find(|ip| !taken(*ip) && *ip != private_ip)
        } else {
            None
        };
        created.push(launch.instance(Seat {
            id,
            n,
            region,
            private_ip,
            public_ip,
            client_token,
            now,
        }));
    }

    let price = launch.instance_type.hourly_price * f64::from(launch.amount);
    let reply = json!({
        "OrderId": rand::thread_rng().gen_range(200_000_000_000_000_u64..300_000_000_000_000).to_string(),
        "TradePrice": (price * 1000.0).round() / 1000.0,
        "InstanceIdSets": { "InstanceIdSet": created.iter().map(|i| i.id.clone()).collect::<Vec<_>>() },
    });
    token.remember(&mut world, &reply);
    for instance in created {
        cloud.launch(&instance);
        world.instances.push(instance);
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_passwords_follow_aliyun_rules() {
        assert!(valid_host_name("web-01.example"));
        assert!(!valid_host_name("-web"));
        assert!(!valid_host_name("web..x"));
        assert!(valid_password("EcsV587!"));
        assert!(!valid_password("ecsv587x"));
        assert!(!valid_password("Ab1!"));
    }
}
