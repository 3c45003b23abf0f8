//! `plugin.toml`: what a plugin says it is and what it asks to be allowed.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{OriginGrant, World};
use crate::validate::{self, Invalid};

/// A plugin's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name: 1–64 characters of `a-z`, `0-9`, `-`, `_`.
    pub name: String,
    /// Its version (semver, e.g. `1.2.0`).
    pub version: String,
    /// The world it targets: `cloud-provider`, `load-balancer` or `remote-command`.
    pub world: String,
    /// One line on what it does.
    #[serde(default)]
    pub description: String,
    /// What it asks to be allowed.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// What a plugin may do beyond computing: the capabilities an operator grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Origins its HTTP may reach, e.g. `https://ecs.aliyuncs.com`; append
    /// `#private` to allow a non-public address (a private cloud's API).
    #[serde(default)]
    pub http: BTreeSet<String>,
    /// Credentials it may open by name, e.g. `account`.
    #[serde(default)]
    pub secrets: BTreeSet<String>,
    /// Whether it may run commands on the targets of its calls.
    #[serde(default)]
    pub ssh: bool,
}

/// What an upgrade asks for beyond, and no longer needs of, what is granted now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CapabilityDiff {
    /// Capabilities requested that the active version was not granted.
    pub added: Vec<String>,
    /// Capabilities granted to the active version that are no longer requested.
    pub removed: Vec<String>,
}

impl Capabilities {
    /// Every capability as a line, e.g. `http https://ecs.aliyuncs.com:443`.
    #[must_use]
    pub fn lines(&self) -> BTreeSet<String> {
        let mut lines: BTreeSet<String> = self.http.iter().map(|o| format!("http {o}")).collect();
        lines.extend(self.secrets.iter().map(|s| format!("secret {s}")));
        if self.ssh {
            lines.insert("ssh".to_owned());
        }
        lines
    }

    /// What `self` (requested) adds to and drops from `granted`.
    #[must_use]
    pub fn diff(&self, granted: &Self) -> CapabilityDiff {
        let (new, old) = (self.lines(), granted.lines());
        CapabilityDiff {
            added: new.difference(&old).cloned().collect(),
            removed: old.difference(&new).cloned().collect(),
        }
    }

    /// The HTTP origins as grants.
    pub fn origins(&self) -> Result<Vec<OriginGrant>, String> {
        self.http.iter().map(|o| OriginGrant::parse(o)).collect()
    }
}

impl Manifest {
    /// Parses and checks a manifest; errors name the field.
    pub fn parse(text: &str) -> Result<(Self, World), Invalid> {
        let manifest: Self = toml::from_str(text).map_err(|e| {
            Invalid::new(
                "manifest",
                format!("is not a valid plugin.toml: {}", e.message()),
            )
        })?;
        validate::identifier("manifest.name", &manifest.name, 64)?;
        if !is_semver(&manifest.version) {
            return Err(Invalid::new(
                "manifest.version",
                format!(
                    "{:?} is not a semantic version like 1.2.0",
                    manifest.version
                ),
            ));
        }
        let world = World::from_name(&manifest.world).ok_or_else(|| {
            Invalid::new(
                "manifest.world",
                format!(
                    "{:?} is not a world of {}; use one of {}",
                    manifest.world,
                    World::PACKAGE,
                    World::ALL.map(World::name).join(", ")
                ),
            )
        })?;
        validate::max_chars("manifest.description", &manifest.description, 1024)?;
        manifest
            .capabilities
            .origins()
            .map_err(|e| Invalid::new("manifest.capabilities.http", e))?;
        if manifest.capabilities.ssh && world == World::CloudProvider {
            return Err(Invalid::new(
                "manifest.capabilities.ssh",
                "the cloud-provider world has no ssh import",
            ));
        }
        if !manifest.capabilities.http.is_empty() && world == World::RemoteCommand {
            return Err(Invalid::new(
                "manifest.capabilities.http",
                "the remote-command world has no http import",
            ));
        }
        Ok((manifest, world))
    }
}

fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && v.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIYUN: &str = r#"
        name = "aliyun"
        version = "1.2.0"
        world = "cloud-provider"
        description = "Aliyun ECS"
        [capabilities]
        http = ["https://ecs.aliyuncs.com"]
        secrets = ["account"]
    "#;

    #[test]
    fn manifests_parse_and_name_bad_fields() {
        let (manifest, world) = Manifest::parse(ALIYUN).unwrap();
        assert_eq!(
            (manifest.name.as_str(), world),
            ("aliyun", World::CloudProvider)
        );
        let field = |text: &str| Manifest::parse(text).unwrap_err().field;
        assert_eq!(field(&ALIYUN.replace("1.2.0", "one")), "manifest.version");
        assert_eq!(
            field(&ALIYUN.replace("cloud-provider", "dns")),
            "manifest.world"
        );
        assert_eq!(
            field(&ALIYUN.replace("\"aliyun\"", "\"Ali Yun\"")),
            "manifest.name"
        );
        assert_eq!(
            field(&ALIYUN.replace("https://ecs", "ftp://ecs")),
            "manifest.capabilities.http"
        );
        assert_eq!(field("name = "), "manifest");
        assert_eq!(
            field(&format!("{ALIYUN}\nssh = true")),
            "manifest.capabilities.ssh"
        );
    }

    #[test]
    fn upgrades_show_what_they_add_and_drop() {
        let granted = Capabilities {
            http: ["https://ecs.aliyuncs.com".to_owned()].into(),
            secrets: ["account".to_owned()].into(),
            ssh: false,
        };
        let requested = Capabilities {
            http: [
                "https://ecs.aliyuncs.com".to_owned(),
                "https://vpc.aliyuncs.com".to_owned(),
            ]
            .into(),
            secrets: BTreeSet::new(),
            ssh: false,
        };
        let diff = requested.diff(&granted);
        assert_eq!(diff.added, ["http https://vpc.aliyuncs.com"]);
        assert_eq!(diff.removed, ["secret account"]);
    }
}
