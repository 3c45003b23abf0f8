//! The plugin's settings (the unit's merged with the node's own), checked
//! field by field so every refusal names its field.

use balancer_kit::settings::{self, PathKind, check_path, join, milliseconds};

use crate::Failure;

/// The longest reload wait a setting may ask for.
const MAX_RELOAD_TIMEOUT_MS: u64 = 120_000;
/// The shortest: a reload needs at least this to start a generation.
const MIN_RELOAD_TIMEOUT_MS: u64 = 100;

/// Where nginx is and how long its reload may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    /// The nginx executable, absolute.
    pub(crate) nginx: String,
    /// The directory the configuration files are relative to, absolute,
    /// without a trailing `/` (`conf_dir`; the prefix when only that is set).
    pub(crate) prefix: String,
    /// nginx's prefix (`-p`), when set; unset, nginx uses its compiled-in
    /// one — which a distribution's configuration relies on (Debian loads
    /// its modules relative to it).
    pub(crate) nginx_prefix: Option<String>,
    /// The main configuration file (`-c`), relative to the prefix or
    /// absolute.
    pub(crate) conf: String,
    /// Where upstream files go, relative to the prefix.
    pub(crate) upstream_dir: String,
    /// The master's pid file, absolute (a relative setting is resolved
    /// against the prefix).
    pub(crate) pid_file: String,
    /// How long to wait for the new workers and the old ones' drain.
    pub(crate) reload_timeout_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nginx: "/usr/sbin/nginx".to_owned(),
            prefix: "/etc/nginx".to_owned(),
            nginx_prefix: None,
            conf: "nginx.conf".to_owned(),
            upstream_dir: "dcp-upstreams".to_owned(),
            pid_file: "/run/nginx.pid".to_owned(),
            reload_timeout_ms: 10_000,
        }
    }
}

/// The JSON Schema of the settings: a flat object, so DCP's UI renders it
/// as a form.
pub(crate) const SCHEMA: &str = r#"{"type":"object","additionalProperties":false,"properties":{
"nginx":{"type":"string","title":"nginx binary","description":"Absolute path of the nginx executable on the node.","default":"/usr/sbin/nginx"},
"conf_dir":{"type":"string","title":"Configuration directory","description":"Absolute; the main file, the upstream directory and published files are relative to it. The prefix when only that is set.","default":"/etc/nginx"},
"prefix":{"type":"string","title":"Prefix directory","description":"nginx's prefix (-p), absolute, for an nginx run with one; leave it unset for a distribution's nginx (Debian's loads its modules relative to the compiled-in prefix)."},
"conf":{"type":"string","title":"Main configuration file","description":"Passed as -c: relative to the configuration directory, or absolute. Its http block must include <upstream directory>/*.conf.","default":"nginx.conf"},
"upstream_dir":{"type":"string","title":"Upstream directory","description":"Relative to the configuration directory; DCP writes one <name>.conf per upstream there and leaves other files alone.","default":"dcp-upstreams"},
"pid_file":{"type":"string","title":"PID file","description":"The running master's pid file: absolute, or relative to the configuration directory.","default":"/run/nginx.pid"},
"reload_timeout_ms":{"type":"integer","title":"Reload timeout (ms)","description":"How long a reload may take to start new workers and let the old ones finish their requests; a configuration nginx has not taken by then is rolled back.","minimum":100,"maximum":120000,"default":10000}}}"#;

impl Config {
    /// The nginx plugin's settings from a document (read field by field by
    /// `balancer_kit::settings::each`: an empty document, and `null`
    /// fields, mean the defaults).
    pub(crate) fn parse(text: &str) -> Result<Self, Failure> {
        let mut config = Self::default();
        let mut pid_file = None;
        let mut conf_dir = None;
        settings::each(text, |field, value| {
            let text = || settings::text(field, value);
            match field {
                "nginx" => config.nginx = check_path(field, text()?, PathKind::Absolute)?,
                "prefix" => {
                    config.nginx_prefix = Some(check_path(field, text()?, PathKind::Absolute)?);
                }
                "conf_dir" => conf_dir = Some(check_path(field, text()?, PathKind::Absolute)?),
                "conf" => config.conf = check_path(field, text()?, PathKind::Any)?,
                "upstream_dir" => {
                    config.upstream_dir = check_path(field, text()?, PathKind::Relative)?;
                }
                "pid_file" => pid_file = Some(check_path(field, text()?, PathKind::Any)?),
                "reload_timeout_ms" => {
                    config.reload_timeout_ms =
                        milliseconds(field, value, MIN_RELOAD_TIMEOUT_MS, MAX_RELOAD_TIMEOUT_MS)?;
                }
                _ => {
                    return Err(Failure::invalid(format!(
                        "{field}: unknown setting; the nginx plugin has nginx, conf_dir, prefix, \
                         conf, upstream_dir, pid_file and reload_timeout_ms"
                    )));
                }
            }
            Ok(())
        })?;
        if let Some(dir) = conf_dir.or_else(|| config.nginx_prefix.clone()) {
            config.prefix = dir;
        }
        if config.nginx == "/" {
            return Err(Failure::invalid("nginx: \"/\" is not an executable"));
        }
        if config.conf == "/" {
            return Err(Failure::invalid("conf: \"/\" is not a file"));
        }
        if let Some(pid_file) = pid_file {
            config.pid_file = if pid_file.starts_with('/') {
                pid_file
            } else {
                join(&config.prefix, &pid_file)
            };
        }
        Ok(config)
    }

    /// A path relative to the prefix, made absolute.
    pub(crate) fn under_prefix(&self, path: &str) -> String {
        join(&self.prefix, path)
    }

    /// The main configuration file's absolute path.
    pub(crate) fn conf_path(&self) -> String {
        if self.conf.starts_with('/') {
            self.conf.clone()
        } else {
            self.under_prefix(&self.conf)
        }
    }

    /// The absolute path of upstream `name`'s file.
    pub(crate) fn upstream_file(&self, name: &str) -> String {
        self.under_prefix(&format!("{}/{name}.conf", self.upstream_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_distributions_nginx_runs_without_a_prefix_and_a_prefixed_one_with_it() {
        let debian = Config::parse("{}").unwrap();
        assert_eq!(debian.nginx_prefix, None);
        assert_eq!(debian.conf_path(), "/etc/nginx/nginx.conf");
        let prefixed = Config::parse(r#"{"prefix": "/srv/lb"}"#).unwrap();
        assert_eq!(prefixed.nginx_prefix.as_deref(), Some("/srv/lb"));
        assert_eq!(prefixed.conf_path(), "/srv/lb/nginx.conf");
        let both =
            Config::parse(r#"{"prefix": "/usr/local/nginx", "conf_dir": "/etc/lb"}"#).unwrap();
        assert_eq!(both.nginx_prefix.as_deref(), Some("/usr/local/nginx"));
        assert_eq!(both.upstream_file("web"), "/etc/lb/dcp-upstreams/web.conf");
    }

    #[test]
    fn settings_are_normalised() {
        let config = Config::parse(
            r#"{"nginx": "/opt/nginx/sbin/nginx", "prefix": "/srv/lb/", "conf": "main.conf",
                "upstream_dir": "conf.d/dcp/", "pid_file": "run/nginx.pid", "reload_timeout_ms": 2500}"#,
        )
        .unwrap();
        assert_eq!(config.prefix, "/srv/lb");
        assert_eq!(config.upstream_dir, "conf.d/dcp");
        assert_eq!(config.pid_file, "/srv/lb/run/nginx.pid");
        assert_eq!(config.reload_timeout_ms, 2500);
        assert_eq!(config.upstream_file("web"), "/srv/lb/conf.d/dcp/web.conf");
        assert_eq!(config.conf_path(), "/srv/lb/main.conf");
        let absolute =
            Config::parse(r#"{"conf": "/etc/nginx/nginx.conf", "prefix": "/usr/share/nginx"}"#);
        assert_eq!(absolute.unwrap().conf_path(), "/etc/nginx/nginx.conf");
    }

    #[test]
    fn settings_are_checked_and_the_schema_has_their_defaults() {
        let defaults = Config::default();
        let refusals = [
            (r#"{"colour": "red"}"#, "colour", "unknown setting"),
            (r#"{"prefix": "etc/nginx"}"#, "prefix", "absolute"),
            (r#"{"prefix": "/etc/nginx; rm -rf /"}"#, "prefix", "';'"),
            (r#"{"prefix": "/etc/'x'"}"#, "prefix", "'\\''"),
            (r#"{"prefix": "/etc/../root"}"#, "prefix", "\"..\""),
            (
                r#"{"nginx": "/usr//sbin/nginx"}"#,
                "nginx",
                "empty component",
            ),
            (r#"{"nginx": "nginx"}"#, "nginx", "absolute"),
            (r#"{"conf": "/"}"#, "conf", "not a file"),
            (r#"{"conf": "./nginx.conf"}"#, "conf", "\".\""),
            (r#"{"upstream_dir": "../up"}"#, "upstream_dir", "\"..\""),
            (r#"{"upstream_dir": ""}"#, "upstream_dir", "empty"),
            (r#"{"pid_file": "/run/nginx pid"}"#, "pid_file", "' '"),
            (r#"{"pid_file": 12}"#, "pid_file", "must be a string"),
            (
                r#"{"reload_timeout_ms": 0}"#,
                "reload_timeout_ms",
                "from 100 to 120000",
            ),
            (
                r#"{"reload_timeout_ms": 120001}"#,
                "reload_timeout_ms",
                "120000",
            ),
            (
                r#"{"reload_timeout_ms": 1.5}"#,
                "reload_timeout_ms",
                "whole number",
            ),
            (
                r#"{"reload_timeout_ms": "10"}"#,
                "reload_timeout_ms",
                "whole number",
            ),
        ];
        // No default: unset, nginx runs with its compiled-in prefix.
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        assert!(schema["properties"]["prefix"].get("default").is_none());
        balancer_kit::testing::Settings {
            parse: Config::parse,
            nulls: r#"{"prefix": null, "reload_timeout_ms": null}"#,
            refusals: &refusals,
            schema: SCHEMA,
            fields: 7,
            defaults: &[
                ("nginx", defaults.nginx.clone().into()),
                ("conf_dir", defaults.prefix.clone().into()),
                ("conf", defaults.conf.clone().into()),
                ("upstream_dir", defaults.upstream_dir.clone().into()),
                ("pid_file", defaults.pid_file.clone().into()),
                ("reload_timeout_ms", defaults.reload_timeout_ms.into()),
            ],
            default: defaults,
        }
        .check();
    }
}
