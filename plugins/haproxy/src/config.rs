//! The plugin's settings (the unit's merged with the node's own), checked
//! field by field so every refusal names its field.

use balancer_kit::settings::{self, PathKind, milliseconds};

use crate::Failure;

/// The longest drain a setting may ask for (the call's deadline bounds it
/// too).
const MAX_DRAIN_TIMEOUT_MS: u64 = 600_000;

/// Where HAProxy is and how long a removed server may drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    /// The haproxy executable, absolute (`haproxy -c` checks the file).
    pub(crate) haproxy: String,
    /// The socat executable, absolute (it talks to the admin socket).
    pub(crate) socat: String,
    /// The admin-level stats socket, absolute.
    pub(crate) socket: String,
    /// The configuration file HAProxy starts from, absolute.
    pub(crate) config_file: String,
    /// How long a removed server's sessions may take to finish before they
    /// are cut.
    pub(crate) drain_timeout_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            haproxy: "/usr/sbin/haproxy".to_owned(),
            socat: "/usr/bin/socat".to_owned(),
            socket: "/run/haproxy/admin.sock".to_owned(),
            config_file: "/etc/haproxy/haproxy.cfg".to_owned(),
            drain_timeout_ms: 20_000,
        }
    }
}

/// The JSON Schema of the settings: a flat object, so DCP's UI renders it
/// as a form.
pub(crate) const SCHEMA: &str = r#"{"type":"object","additionalProperties":false,"properties":{
"socket":{"type":"string","title":"Admin socket","description":"Absolute path of HAProxy's stats socket with level admin (global: stats socket <path> level admin); the SSH user must be able to write to it.","default":"/run/haproxy/admin.sock"},
"config_file":{"type":"string","title":"Configuration file","description":"Absolute path of the file HAProxy starts from. Every DCP upstream needs a backend (or listen) section of the same name in it; DCP rewrites the dcp_ server lines of those sections, checked with haproxy -c first.","default":"/etc/haproxy/haproxy.cfg"},
"drain_timeout_ms":{"type":"integer","title":"Drain timeout (ms)","description":"How long a removed backend's open sessions may take to finish before they are cut and the server is deleted; the call's own deadline bounds it too.","minimum":0,"maximum":600000,"default":20000},
"haproxy":{"type":"string","title":"haproxy binary","description":"Absolute path of the haproxy executable on the node (for haproxy -c).","default":"/usr/sbin/haproxy"},
"socat":{"type":"string","title":"socat binary","description":"Absolute path of socat on the node, which talks to the admin socket.","default":"/usr/bin/socat"}}}"#;

/// Checks a path: absolute, only `[A-Za-z0-9._/-]` (characters that need
/// no quoting anywhere, not even in socat's address syntax), no `..`, `.`
/// or empty component, not a directory (`/` at the end).
fn check_path(field: &str, path: &str) -> Result<String, Failure> {
    settings::check_path(field, path, PathKind::File)
}

impl Config {
    /// The HAProxy plugin's settings from a document (read field by field by
    /// `balancer_kit::settings::each`: an empty document, and `null`
    /// fields, mean the defaults).
    pub(crate) fn parse(text: &str) -> Result<Self, Failure> {
        let mut config = Self::default();
        settings::each(text, |field, value| {
            let text = || settings::text(field, value);
            match field {
                "haproxy" => config.haproxy = check_path(field, text()?)?,
                "socat" => config.socat = check_path(field, text()?)?,
                "socket" => config.socket = check_path(field, text()?)?,
                "config_file" => config.config_file = check_path(field, text()?)?,
                "drain_timeout_ms" => {
                    config.drain_timeout_ms = milliseconds(field, value, 0, MAX_DRAIN_TIMEOUT_MS)?;
                }
                _ => {
                    return Err(Failure::invalid(format!(
                        "{field}: unknown setting; the haproxy plugin has socket, config_file, \
                         drain_timeout_ms, haproxy and socat"
                    )));
                }
            }
            Ok(())
        })?;
        Ok(config)
    }

    /// The directory of the configuration file (the lock and the staged
    /// file go there, so the swap is one rename).
    pub(crate) fn config_dir(&self) -> &str {
        match self.config_file.rsplit_once('/') {
            Some(("", _)) | None => "/",
            Some((dir, _)) => dir,
        }
    }

    /// A hidden name beside the configuration file: `.<name>.<suffix>`.
    pub(crate) fn beside_config(&self, suffix: &str) -> String {
        let name = self
            .config_file
            .rsplit_once('/')
            .map_or(self.config_file.as_str(), |(_, name)| name);
        let dir = self.config_dir();
        let dir = dir.strip_suffix('/').unwrap_or(dir);
        format!("{dir}/.{name}.{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_and_new_file_are_hidden_beside_the_file() {
        let config = Config::default();
        assert_eq!(config.config_dir(), "/etc/haproxy");
        assert_eq!(
            config.beside_config("dcp-lock"),
            "/etc/haproxy/.haproxy.cfg.dcp-lock"
        );
        let root = Config::parse(r#"{"config_file": "/h.cfg"}"#).unwrap();
        assert_eq!(root.beside_config("x"), "/.h.cfg.x");
    }

    #[test]
    fn settings_are_taken() {
        let config = Config::parse(
            r#"{"haproxy": "/opt/hx/sbin/haproxy", "socat": "/opt/socat", "socket": "/srv/lb/admin.sock",
                "config_file": "/srv/lb/lb.cfg", "drain_timeout_ms": 0}"#,
        )
        .unwrap();
        assert_eq!(
            config,
            Config {
                haproxy: "/opt/hx/sbin/haproxy".to_owned(),
                socat: "/opt/socat".to_owned(),
                socket: "/srv/lb/admin.sock".to_owned(),
                config_file: "/srv/lb/lb.cfg".to_owned(),
                drain_timeout_ms: 0,
            }
        );
    }

    #[test]
    fn settings_are_checked_and_the_schema_has_their_defaults() {
        let defaults = Config::default();
        let refusals = [
            (r#"{"colour": "red"}"#, "colour", "unknown setting"),
            (r#"{"socket": "run/admin.sock"}"#, "socket", "absolute"),
            (r#"{"socket": "/run/a.sock,fork"}"#, "socket", "','"),
            (r#"{"socket": "/run/a:sock"}"#, "socket", "':'"),
            (r#"{"config_file": "/etc/'x'"}"#, "config_file", "'\\''"),
            (
                r#"{"config_file": "/etc/../root"}"#,
                "config_file",
                "\"..\"",
            ),
            (
                r#"{"config_file": "/etc/haproxy/"}"#,
                "config_file",
                "directory",
            ),
            (r#"{"config_file": "/"}"#, "config_file", "directory"),
            (
                r#"{"haproxy": "/usr//sbin/haproxy"}"#,
                "haproxy",
                "empty component",
            ),
            (r#"{"socat": "socat"}"#, "socat", "absolute"),
            (r#"{"socat": "/usr/bin/so cat"}"#, "socat", "' '"),
            (r#"{"socket": 12}"#, "socket", "must be a string"),
            (r#"{"socket": ""}"#, "socket", "empty"),
            (
                r#"{"drain_timeout_ms": -1}"#,
                "drain_timeout_ms",
                "from 0 to 600000",
            ),
            (
                r#"{"drain_timeout_ms": 600001}"#,
                "drain_timeout_ms",
                "600000",
            ),
            (
                r#"{"drain_timeout_ms": 1.5}"#,
                "drain_timeout_ms",
                "whole number",
            ),
            (
                r#"{"drain_timeout_ms": "10"}"#,
                "drain_timeout_ms",
                "whole number",
            ),
        ];
        balancer_kit::testing::Settings {
            parse: Config::parse,
            nulls: r#"{"socket": null, "drain_timeout_ms": null}"#,
            refusals: &refusals,
            schema: SCHEMA,
            fields: 5,
            defaults: &[
                ("haproxy", defaults.haproxy.clone().into()),
                ("socat", defaults.socat.clone().into()),
                ("socket", defaults.socket.clone().into()),
                ("config_file", defaults.config_file.clone().into()),
                ("drain_timeout_ms", defaults.drain_timeout_ms.into()),
            ],
            default: defaults,
        }
        .check();
    }
}
