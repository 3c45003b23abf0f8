//! The `shell` and `longscript` modules. They act on a machine only through
//! the host's `ssh` import, on targets the call was given.

use dcp_plugin_sdk::command::{
    self, PluginError, PluginInfo,
    exports::dcp::plugin::command::{Guest, ModuleInfo, Outcome},
    ssh,
};
use serde::Deserialize;

struct ShellCommand;

/// Parameters of both modules.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// The command line (`shell`) or the script (`longscript`).
    script: String,
    /// Seconds the command may run.
    #[serde(default = "default_timeout")]
    timeout_secs: u32,
}

fn default_timeout() -> u32 {
    300
}

const SCHEMA: &str = r#"{"type":"object","required":["script"],"additionalProperties":false,
"properties":{"script":{"type":"string","description":"what to run"},
"timeout_secs":{"type":"integer","minimum":1,"default":300}}}"#;

fn parse(module: &str, params: &str) -> Result<Params, PluginError> {
    if !matches!(module, "shell" | "longscript") {
        return Err(PluginError::not_found(format!(
            "no module {module:?}: this plugin has shell and longscript"
        )));
    }
    let params: Params = command::parse_config(params)?;
    if params.script.trim().is_empty() {
        return Err(PluginError::invalid_input("script: is required"));
    }
    Ok(params)
}

fn outcome(out: ssh::ExecOutput) -> Outcome {
    Outcome {
        exit_code: out.exit_code.unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        changed: true,
    }
}

impl Guest for ShellCommand {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "shell-command".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "shell and longscript modules".into(),
            config_schema: "{}".into(),
        }
    }

    fn modules() -> Vec<ModuleInfo> {
        vec![
            ModuleInfo {
                name: "shell".into(),
                description: "Run one command line with sh -c".into(),
                params_schema: SCHEMA.into(),
            },
            ModuleInfo {
                name: "longscript".into(),
                description:
                    "Write a script to a private temporary file, run it with bash, remove it".into(),
                params_schema: SCHEMA.into(),
            },
        ]
    }

    fn plan(module: String, params: String) -> Result<String, PluginError> {
        let params = parse(&module, &params)?;
        Ok(match module.as_str() {
            "shell" => format!("sh -c {}", params.script),
            _ => format!(
                "write a {}-line script to a private temporary file, run it with bash, remove it",
                params.script.lines().count()
            ),
        })
    }

    fn run(module: String, target: String, params: String) -> Result<Outcome, PluginError> {
        let params = parse(&module, &params)?;
        let timeout_ms = params.timeout_secs.saturating_mul(1000);
        let session = ssh::connect(&target)?;
        if module == "shell" {
            return Ok(outcome(session.exec(&params.script, None, timeout_ms)?));
        }
        // The call id is a UUID, so the path needs no quoting. One session
        // writes the script from stdin and runs it: a second session (an
        // upload first) cost every step another channel, shell and process
        // on the host. The file is private (umask 077, in a subshell so the
        // script keeps the login's umask) and removed however bash ends:
        // normally, or killed with its process group on timeout or cancel
        // (TERM). The script's stdin is at its end, as it was when uploaded.
        let path = format!("/tmp/dcp-{}.sh", command::context::call_id());
        let run = format!(
            "trap 'rm -f {path}' EXIT; trap 'exit 143' TERM HUP INT; \
             (umask 077 && exec cat > {path}) || {{ echo 'dcp: could not write the script to {path}' >&2; exit 126; }}; \
             bash {path}"
        );
        Ok(outcome(session.exec(
            &run,
            Some(params.script.as_bytes()),
            timeout_ms,
        )?))
    }
}

dcp_plugin_sdk::command::export_remote_command!(ShellCommand with_types_in dcp_plugin_sdk::command);
