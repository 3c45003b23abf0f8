//! Orchestration (OpenDCP's orion): clusters → services → pools → nodes.
//!
//! The rules live here, between the API and the store, so every caller —
//! the REST API today, the task engine later — goes through the same checks.

use dcp_api_types::{
    ClusterInput, ContainerSpec, HealthCheck, HealthProbe, PoolInput, PortProtocol, ServiceInput,
};

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
    let mut checks = validate::Checks::default();
    checks.check(validate::identifier("name", &input.name, NAME_MAX));
    checks.check(validate::max_chars(
        "description",
        &input.description,
        DESCRIPTION_MAX,
    ));
    checks.check(validate::max_chars("service_type", &input.service_type, 64));
    checks.check(validate::image_reference("image", &input.image));
    checks.check(container_spec(&input.container));
    checks.finish()?;
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
    if let Some(check) = &spec.health_check {
        health_check(check, spec)?;
    }
    Ok(())
}

/// Most arguments of a health-check command, and longest argument.
const PROBE_ARGS_MAX: usize = 64;
const PROBE_ARG_MAX: usize = 4096;

fn health_check(check: &HealthCheck, spec: &ContainerSpec) -> Result<(), Invalid> {
    let within = |field: &'static str, value: u32, min: u32, max: u32| {
        if (min..=max).contains(&value) {
            Ok(())
        } else {
            Err(Invalid::new(
                format!("container.health_check.{field}"),
                format!("must be between {min} and {max} seconds"),
            ))
        }
    };
    within(
        "interval_secs",
        check.interval_secs,
        1,
        HealthCheck::MAX_INTERVAL_SECS,
    )?;
    within(
        "timeout_secs",
        check.timeout_secs,
        1,
        HealthCheck::MAX_TIMEOUT_SECS,
    )?;
    within(
        "start_period_secs",
        check.start_period_secs,
        0,
        HealthCheck::MAX_START_PERIOD_SECS,
    )?;
    if !(1..=HealthCheck::MAX_RETRIES).contains(&check.retries) {
        return Err(Invalid::new(
            "container.health_check.retries",
            format!("must be between 1 and {}", HealthCheck::MAX_RETRIES),
        ));
    }
    match &check.probe {
        HealthProbe::Http { path, port } => {
            let printable = path.bytes().all(|b| b.is_ascii_graphic());
            if !path.starts_with('/') || !printable || path.len() > 1024 {
                return Err(Invalid::new(
                    "container.health_check.probe.http.path",
                    "must start with '/' and be at most 1024 printable ASCII characters without spaces",
                ));
            }
            let published = spec
                .ports
                .iter()
                .any(|p| p.container_port == *port && p.protocol == PortProtocol::Tcp);
            if !published {
                return Err(Invalid::new(
                    "container.health_check.probe.http.port",
                    format!(
                        "container port {port} is not one of the service's published TCP ports"
                    ),
                ));
            }
        }
        HealthProbe::Exec { command: argv } => {
            if argv.is_empty() || argv.len() > PROBE_ARGS_MAX {
                return Err(Invalid::new(
                    "container.health_check.probe.exec.command",
                    format!("must be a program and its arguments: 1 to {PROBE_ARGS_MAX} items"),
                ));
            }
            for (i, arg) in argv.iter().enumerate() {
                if arg.contains('\0') || arg.len() > PROBE_ARG_MAX || (i == 0 && arg.is_empty()) {
                    return Err(Invalid::new(
                        format!("container.health_check.probe.exec.command[{i}]"),
                        format!(
                            "must be at most {PROBE_ARG_MAX} bytes without NUL; the program is not empty"
                        ),
                    ));
                }
            }
        }
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
        binding_id: input.binding_id,
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

    #[test]
    fn health_checks_ask_a_published_port_or_run_a_program() {
        let mut spec = ContainerSpec {
            ports: vec![PortMapping {
                container_port: 80,
                host_port: Some(8080),
                protocol: PortProtocol::Tcp,
            }],
            health_check: Some(HealthCheck {
                probe: HealthProbe::Http {
                    path: "/health?deep=1".into(),
                    port: 80,
                },
                interval_secs: 5,
                timeout_secs: 3,
                retries: 3,
                start_period_secs: 0,
            }),
            ..ContainerSpec::default()
        };
        assert!(container_spec(&spec).is_ok());
        // Two checks within a 10 s start period, then 3 failures: 5 checks
        // of up to 3 s, 5 s apart.
        let mut slow = spec.health_check.clone().unwrap();
        slow.start_period_secs = 10;
        assert_eq!(slow.longest_secs(), 5 * 8);
        let refused = |spec: &ContainerSpec| {
            let e = container_spec(spec).unwrap_err();
            (e.field.into_owned(), e.message)
        };
        let check = spec.health_check.as_mut().unwrap();
        check.probe = HealthProbe::Http {
            path: "/health".into(),
            port: 8080,
        };
        let (field, message) = refused(&spec);
        assert_eq!(field, "container.health_check.probe.http.port");
        assert!(message.contains("8080 is not one of"), "{message}");
        let check = spec.health_check.as_mut().unwrap();
        check.probe = HealthProbe::Http {
            path: "/a b".into(),
            port: 80,
        };
        assert_eq!(refused(&spec).0, "container.health_check.probe.http.path");
        let check = spec.health_check.as_mut().unwrap();
        check.probe = HealthProbe::Exec { command: vec![] };
        assert_eq!(
            refused(&spec).0,
            "container.health_check.probe.exec.command"
        );
        let check = spec.health_check.as_mut().unwrap();
        check.probe = HealthProbe::Exec {
            command: vec!["/bin/check".into(), "a\0b".into()],
        };
        assert_eq!(
            refused(&spec).0,
            "container.health_check.probe.exec.command[1]"
        );
        let check = spec.health_check.as_mut().unwrap();
        check.probe = HealthProbe::Exec {
            command: vec!["/bin/check".into()],
        };
        check.interval_secs = 0;
        assert_eq!(refused(&spec).0, "container.health_check.interval_secs");
        let check = spec.health_check.as_mut().unwrap();
        check.interval_secs = 5;
        check.retries = 0;
        assert_eq!(refused(&spec).0, "container.health_check.retries");
    }
}
