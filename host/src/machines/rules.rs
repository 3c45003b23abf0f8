//! The rules a machine template must follow (OpenDCP's Aliyun checks, and
//! the provider's own look-ups), and how released machines are charged.

use dcp_api_types::{NetworkType, TemplateSpec};
use time::OffsetDateTime;

use super::Error;
use crate::{
    plugins::CloudProvider,
    validate::{Checks, Invalid},
};

/// Data disk sizes (GiB) allowed per category (OpenDCP's Aliyun rules; ESSD
/// as efficiency/SSD).
fn data_disk_range(category: &str) -> Option<(u32, u32)> {
    match category {
        "cloud" => Some((5, 2000)),
        "cloud_efficiency" | "cloud_ssd" | "cloud_essd" => Some((20, 32768)),
        "ephemeral_ssd" => Some((5, 800)),
        _ => None,
    }
}

/// Checks a spec on its own: required fields, networking, disks,
/// bandwidth per charge type — each part whatever the others found, so one
/// answer names every broken field.
pub(super) fn check_spec(spec: &TemplateSpec) -> Result<(), Invalid> {
    let mut checks = Checks::default();
    for (field, value) in [
        ("spec.region", &spec.region),
        ("spec.zone", &spec.zone),
        ("spec.instance_type", &spec.instance_type),
        ("spec.image", &spec.image),
    ] {
        if value.trim().is_empty() {
            checks.check(Err(Invalid::new(field, "is required")));
        }
    }
    checks.check(networking(spec));
    checks.check(system_disk(spec));
    checks.check(data_disks(spec));
    checks.check(charges(spec));
    checks.finish()
}

fn networking(spec: &TemplateSpec) -> Result<(), Invalid> {
    let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    match spec.network_type {
        NetworkType::Vpc => {
            if !given(&spec.vpc) {
                return Err(Invalid::new("spec.vpc", "is required for VPC networking"));
            }
            if !given(&spec.subnet) {
                return Err(Invalid::new(
                    "spec.subnet",
                    "is required for VPC networking",
                ));
            }
        }
        NetworkType::Classic => {
            if given(&spec.vpc) || given(&spec.subnet) {
                return Err(Invalid::new(
                    "spec.vpc",
                    "must be empty for classic networking (choose network type vpc to use a VPC)",
                ));
            }
        }
    }
    Ok(())
}

fn system_disk(spec: &TemplateSpec) -> Result<(), Invalid> {
    if !(20..=500).contains(&spec.system_disk.size_gb) {
        return Err(Invalid::new(
            "spec.system_disk.size_gb",
            "must be between 20 and 500 GiB",
        ));
    }
    if spec.system_disk.category == "ephemeral_ssd"
        || data_disk_range(&spec.system_disk.category).is_none()
    {
        return Err(Invalid::new(
            "spec.system_disk.category",
            format!(
                "{:?} cannot hold a system disk; use cloud, cloud_efficiency, cloud_ssd or cloud_essd",
                spec.system_disk.category
            ),
        ));
    }
    Ok(())
}

fn data_disks(spec: &TemplateSpec) -> Result<(), Invalid> {
    let Some(disks) = &spec.data_disks else {
        return Ok(());
    };
    if disks.count > 4 {
        return Err(Invalid::new(
            "spec.data_disks.count",
            "must be between 0 and 4",
        ));
    }
    if disks.count > 0 {
        let (min, max) = data_disk_range(&disks.category).ok_or_else(|| {
            Invalid::new(
                "spec.data_disks.category",
                format!("unknown disk category {:?}", disks.category),
            )
        })?;
        if !(min..=max).contains(&disks.size_gb) {
            return Err(Invalid::new(
                "spec.data_disks.size_gb",
                format!("must be between {min} and {max} GiB for {}", disks.category),
            ));
        }
    }
    Ok(())
}

fn charges(spec: &TemplateSpec) -> Result<(), Invalid> {
    let (min, max) = match spec.internet_charge_type.as_str() {
        "PayByBandwidth" => (0, 100),
        "PayByTraffic" => (1, 100),
        other => {
            return Err(Invalid::new(
                "spec.internet_charge_type",
                format!("must be PayByTraffic or PayByBandwidth, not {other:?}"),
            ));
        }
    };
    if !(min..=max).contains(&spec.bandwidth_mbps) {
        return Err(Invalid::new(
            "spec.bandwidth_mbps",
            format!(
                "must be between {min} and {max} Mbit/s when charged {}",
                spec.internet_charge_type
            ),
        ));
    }
    if !matches!(spec.instance_charge_type.as_str(), "PostPaid" | "PrePaid") {
        return Err(Invalid::new(
            "spec.instance_charge_type",
            format!(
                "must be PostPaid or PrePaid, not {:?}",
                spec.instance_charge_type
            ),
        ));
    }
    Ok(())
}

/// Checks a spec against the provider's look-ups: the zone, image, instance
/// type, network and disk categories must exist where the spec says. A
/// template that passes cannot fail later for naming something that is not there.
pub(super) async fn check_with_provider(
    provider: &dyn CloudProvider,
    spec: &TemplateSpec,
) -> Result<(), Error> {
    let has = |choices: &[crate::plugins::Choice], id: &str| choices.iter().any(|c| c.id == id);
    let missing =
        |field: &'static str, what: &str, id: &str, choices: &[crate::plugins::Choice]| {
            let mut known: Vec<&str> = choices.iter().map(|c| c.id.as_str()).take(8).collect();
            if choices.len() > known.len() {
                known.push("…");
            }
            Error::Invalid(Invalid::new(
                field,
                format!(
                    "{what} {id:?} does not exist there; choose one of: {}",
                    known.join(", ")
                ),
            ))
        };
    let region = spec.region.as_str();
    let regions = provider.list_regions().await?;
    if !has(&regions, region) {
        return Err(missing("spec.region", "region", region, &regions));
    }
    let zones = provider.list_zones(region).await?;
    if !has(&zones, &spec.zone) {
        return Err(missing("spec.zone", "zone", &spec.zone, &zones));
    }
    let images = provider.list_images(region).await?;
    if !has(&images, &spec.image) {
        return Err(missing("spec.image", "image", &spec.image, &images));
    }
    let types = provider
        .list_instance_types(region, Some(&spec.zone))
        .await?;
    if !has(&types, &spec.instance_type) {
        return Err(missing(
            "spec.instance_type",
            "instance type",
            &spec.instance_type,
            &types,
        ));
    }
    let disks = provider.list_disk_categories(region, &spec.zone).await?;
    if !has(&disks, &spec.system_disk.category) {
        return Err(missing(
            "spec.system_disk.category",
            "disk category",
            &spec.system_disk.category,
            &disks,
        ));
    }
    if let Some(data) = spec.data_disks.as_ref().filter(|d| d.count > 0)
        && !has(&disks, &data.category)
    {
        return Err(missing(
            "spec.data_disks.category",
            "disk category",
            &data.category,
            &disks,
        ));
    }
    if let (Some(vpc), Some(subnet)) = (&spec.vpc, &spec.subnet) {
        let vpcs = provider.list_vpcs(region).await?;
        if !has(&vpcs, vpc) {
            return Err(missing("spec.vpc", "VPC", vpc, &vpcs));
        }
        let subnets = provider.list_subnets(region, vpc, Some(&spec.zone)).await?;
        if !has(&subnets, subnet) {
            return Err(missing("spec.subnet", "vswitch", subnet, &subnets));
        }
    }
    if let Some(group) = spec.security_group.as_deref().filter(|g| !g.is_empty()) {
        let groups = provider
            .list_security_groups(region, spec.vpc.as_deref())
            .await?;
        if !has(&groups, group) {
            return Err(missing(
                "spec.security_group",
                "security group",
                group,
                &groups,
            ));
        }
    }
    Ok(())
}

/// The instance-hours a machine that lived from `created` to `released`
/// is charged: its real lifetime rounded up to whole hours (OpenDCP
/// subtracted hours of the day and so ignored days).
#[must_use]
pub fn billable_hours(created: OffsetDateTime, released: OffsetDateTime) -> i64 {
    let ms = (released - created).whole_milliseconds().max(0);
    i64::try_from((ms + 3_599_999) / 3_600_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use dcp_api_types::{DataDisks, DiskSpec};
    use time::{Duration, macros::datetime};

    use super::*;

    fn spec() -> TemplateSpec {
        TemplateSpec {
            region: "cn-hangzhou".into(),
            zone: "cn-hangzhou-h".into(),
            network_type: NetworkType::Vpc,
            vpc: Some("vpc-1".into()),
            subnet: Some("vsw-1".into()),
            security_group: Some("sg-1".into()),
            instance_type: "ecs.g6.large".into(),
            image: "ubuntu".into(),
            system_disk: DiskSpec {
                category: "cloud_efficiency".into(),
                size_gb: 40,
            },
            data_disks: None,
            internet_charge_type: "PayByTraffic".into(),
            bandwidth_mbps: 5,
            instance_charge_type: "PostPaid".into(),
        }
    }

    fn field(spec: &TemplateSpec) -> String {
        check_spec(spec).unwrap_err().field.into_owned()
    }

    #[test]
    fn opendcp_rules() {
        assert!(check_spec(&spec()).is_ok());
        let mut s = spec();
        s.data_disks = Some(DataDisks {
            category: "cloud".into(),
            size_gb: 100,
            count: 5,
        });
        assert_eq!(field(&s), "spec.data_disks.count");
        s.data_disks = Some(DataDisks {
            category: "cloud".into(),
            size_gb: 2001,
            count: 1,
        });
        assert_eq!(field(&s), "spec.data_disks.size_gb");
        s.data_disks = Some(DataDisks {
            category: "cloud_ssd".into(),
            size_gb: 19,
            count: 1,
        });
        assert_eq!(field(&s), "spec.data_disks.size_gb");
        s.data_disks = Some(DataDisks {
            category: "ephemeral_ssd".into(),
            size_gb: 800,
            count: 4,
        });
        assert!(check_spec(&s).is_ok());
        let mut s = spec();
        s.bandwidth_mbps = 0;
        assert_eq!(field(&s), "spec.bandwidth_mbps", "PayByTraffic needs ≥ 1");
        s.internet_charge_type = "PayByBandwidth".into();
        assert!(check_spec(&s).is_ok(), "PayByBandwidth allows 0");
        s.bandwidth_mbps = 101;
        assert_eq!(field(&s), "spec.bandwidth_mbps");
        let mut s = spec();
        s.subnet = None;
        assert_eq!(field(&s), "spec.subnet");
        s.network_type = NetworkType::Classic;
        assert_eq!(field(&s), "spec.vpc", "classic takes no VPC");
        s.vpc = None;
        assert!(check_spec(&s).is_ok());
    }

    #[test]
    fn charged_by_real_elapsed_time_rounded_up() {
        let created = datetime!(2026-01-01 23:50 UTC);
        // OpenDCP's `now.Hour() - create.Hour() + 1` gave 2 here.
        assert_eq!(
            billable_hours(created, created + Duration::days(2) + Duration::minutes(3)),
            49
        );
        assert_eq!(billable_hours(created, created + Duration::minutes(1)), 1);
        assert_eq!(billable_hours(created, created + Duration::hours(1)), 1);
        assert_eq!(billable_hours(created, created), 0);
    }
}
