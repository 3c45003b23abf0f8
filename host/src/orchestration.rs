//! Orchestration (OpenDCP's orion): clusters → services → pools → nodes.
//!
//! The rules live here, between the API and the store, so every caller —
//! the REST API today, the task engine later — goes through the same checks.

use dcp_api_types::{ClusterInput, ContainerSpec, PoolInput, ServiceInput};

use crate::{
    store::{ClusterChange, PoolChange, ServiceChange},
    validate::{self, Invalid},
};

/// Longest cluster name.
pub const CLUSTER_NAME_MAX: usize = 64;
/// Longest cluster description.
pub const DESCRIPTION_MAX: usize = 1024;
/// Longest business-line label.
pub const BUSINESS_LINE_MAX: usize = 64;

/// Checks a cluster's fields: name 1–64 characters of `[a-z0-9-_]`,
/// description ≤ 1024 characters, business line ≤ 64 characters.
pub fn cluster_change(input: ClusterInput) -> Result<ClusterChange, Invalid> {
    validate::identifier("name", &input.name, CLUSTER_NAME_MAX)?;
    validate::max_chars("description", &input.description, DESCRIPTION_MAX)?;
    validate::max_chars("business_line", &input.business_line, BUSINESS_LINE_MAX)?;
    Ok(ClusterChange {
        name: input.name,
        description: input.description,
        business_line: input.business_line.trim().to_owned(),
    })
}

/// Longest service or pool name.
pub const NAME_MAX: usize = 64;

/// Checks a service's fields; the cluster must exist (checked by the caller
/// against the store).
pub fn service_change(input: ServiceInput) -> Result<ServiceChange, Invalid> {
    validate::identifier("name", &input.name, NAME_MAX)?;
    validate::max_chars("description", &input.description, DESCRIPTION_MAX)?;
    validate::max_chars("service_type", &input.service_type, 64)?;
    validate::image_reference("image", &input.image)?;
    container_spec(&input.container)?;
    Ok(ServiceChange {
        cluster_id: input.cluster_id,
        name: input.name,
        description: input.description,
        service_type: input.service_type.trim().to_owned(),
        image: input.image,
        container: serde_json::to_string(&input.container).unwrap_or_default(),
    })
}

fn container_spec(spec: &ContainerSpec) -> Result<(), Invalid> {
    let mut published = std::collections::BTreeSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        if port.container_port == 0 {
            return Err(Invalid::new(
                format!("container.ports[{i}].container_port"),
                "must be between 1 and 65535",
            ));
        }
        if port.host_port == Some(0) {
            return Err(Invalid::new(
                format!("container.ports[{i}].host_port"),
                "must be between 1 and 65535",
            ));
        }
        let host = port.host_port.unwrap_or(port.container_port);
        if !published.insert((host, port.protocol)) {
            return Err(Invalid::new(
                format!("container.ports[{i}].host_port"),
                format!("port {host} is published twice"),
            ));
        }
    }
    for key in spec.env.keys() {
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Invalid::new(
                format!("container.env.{key}"),
                "names are letters, digits and '_', not starting with a digit",
            ));
        }
    }
    let mut mounted = std::collections::BTreeSet::new();
    for (i, volume) in spec.volumes.iter().enumerate() {
        for (part, path) in [
            ("host_path", &volume.host_path),
            ("container_path", &volume.container_path),
        ] {
            if !path.starts_with('/') || path.contains(['\n', '\0', ',']) {
                return Err(Invalid::new(
                    format!("container.volumes[{i}].{part}"),
                    "must be an absolute path",
                ));
            }
        }
        if !mounted.insert(volume.container_path.as_str()) {
            return Err(Invalid::new(
                format!("container.volumes[{i}].container_path"),
                "is mounted twice",
            ));
        }
    }
    if spec.cpu_limit.is_some_and(|c| !(c > 0.0 && c <= 256.0)) {
        return Err(Invalid::new(
            "container.cpu_limit",
            "must be more than 0 and at most 256 cores",
        ));
    }
    if spec
        .memory_limit_mb
        .is_some_and(|m| !(6..=4_194_304).contains(&m))
    {
        return Err(Invalid::new(
            "container.memory_limit_mb",
            "must be between 6 and 4194304 MiB",
        ));
    }
    Ok(())
}

/// Checks a pool's fields; the service and template must exist (checked by
/// the caller against the store).
pub fn pool_change(input: PoolInput) -> Result<PoolChange, Invalid> {
    validate::identifier("name", &input.name, NAME_MAX)?;
    validate::max_chars("description", &input.description, DESCRIPTION_MAX)?;
    Ok(PoolChange {
        service_id: input.service_id,
        name: input.name,
        description: input.description,
        template_id: input.template_id,
        expand_template_id: input.expand_template_id,
        shrink_template_id: input.shrink_template_id,
        deploy_template_id: input.deploy_template_id,
    })
}

#[cfg(test)]
mod tests {
    use dcp_api_types::{PortMapping, PortProtocol, VolumeMount};

    use super::*;

    #[test]
    fn container_specs() {
        let mut spec = ContainerSpec {
            ports: vec![
                PortMapping {
                    container_port: 80,
                    host_port: Some(8080),
                    protocol: PortProtocol::Tcp,
                },
                PortMapping {
                    container_port: 53,
                    host_port: None,
                    protocol: PortProtocol::Udp,
                },
            ],
            volumes: vec![VolumeMount {
                host_path: "/data".into(),
                container_path: "/var/lib".into(),
                read_only: true,
            }],
            cpu_limit: Some(0.5),
            memory_limit_mb: Some(256),
            ..ContainerSpec::default()
        };
        spec.env.insert("LOG_LEVEL".into(), "info".into());
        assert!(container_spec(&spec).is_ok());
        spec.ports.push(PortMapping {
            container_port: 81,
            host_port: Some(8080),
            protocol: PortProtocol::Tcp,
        });
        assert_eq!(
            container_spec(&spec).unwrap_err().field,
            "container.ports[2].host_port"
        );
        spec.ports.pop();
        spec.env.insert("1BAD".into(), String::new());
        assert_eq!(
            container_spec(&spec).unwrap_err().field,
            "container.env.1BAD"
        );
        spec.env.remove("1BAD");
        spec.volumes[0].host_path = "data".into();
        assert_eq!(
            container_spec(&spec).unwrap_err().field,
            "container.volumes[0].host_path"
        );
        spec.volumes[0].host_path = "/data".into();
        spec.cpu_limit = Some(0.0);
        assert_eq!(
            container_spec(&spec).unwrap_err().field,
            "container.cpu_limit"
        );
    }
}
