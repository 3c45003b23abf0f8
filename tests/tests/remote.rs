//! Remote commands end to end: a real `dcp` fans commands out over SSH to a
//! fleet of real `sshd` hosts on loopback addresses.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use dcp_tests::{Api, fixture_plugin, fleet::Fleet};
use serde_json::{Value, json};

/// Polls an execution until it ends; panics after `limit`.
async fn finished(api: &Api, id: i64, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let execution = api.get(&format!("/api/v1/executions/{id}")).await;
        let state = execution["state"].as_str().unwrap().to_owned();
        if !matches!(state.as_str(), "pending" | "running") {
            return api.execution_with_output(id).await;
        }
        assert!(
            Instant::now() < deadline,
            "still {state} after {limit:?}: {execution}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn host(address: std::net::Ipv4Addr, key: &str) -> Value {
    json!({"address": address.to_string(), "port": 22, "user": "root", "private_key": key})
}

fn hosts(fleet: &Fleet) -> Vec<Value> {
    fleet
        .hosts
        .iter()
        .map(|h| host(h.ip(), &fleet.private_key))
        .collect()
}

async fn start(api: &Api, body: &Value) -> i64 {
    let (status, created) = api.post("/api/v1/executions", body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_i64().unwrap()
}

/// Whether a process whose command line is exactly `command` runs on host
/// `i` (asked over OpenSSH, not DCP's channel).
fn running(fleet: &Fleet, i: usize, command: &str) -> bool {
    let out = fleet.ssh(i, &format!("pgrep -f '^{command}$' || true"));
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fan_out_reports_each_host_and_takes_the_timeout_not_the_sum() {
    let fleet = Fleet::start(19);
    let api = Api::start().await;
    let sleeper = fleet.hosts[18].ip();
    let mut targets = hosts(&fleet);
    // Host 17 is given a key it does not trust; one address has no sshd.
    targets[17] = host(fleet.hosts[17].ip(), &fleet.stranger_key());
    targets.push(host(fleet.vacant_address(), &fleet.private_key));
    // sshd tells the command which address it was reached on.
    let script = format!(
        "set -- $SSH_CONNECTION; if [ \"$3\" = {sleeper} ]; then echo sleeping; sleep 6007; else echo \"hello from $3\"; fi"
    );
    let began = Instant::now();
    let id = start(
        &api,
        &json!({"command": {"mode": "shell", "script": script}, "hosts": targets, "timeout_secs": 5}),
    )
    .await;
    let execution = finished(&api, id, Duration::from_secs(60)).await;
    let took = began.elapsed();

    assert_eq!(execution["state"], "partially_failed", "{execution}");
    let hosts = execution["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 20);
    for (i, h) in hosts.iter().enumerate().take(17) {
        assert_eq!(h["state"], "ok", "host {i}: {h}");
        assert_eq!(h["exit_code"], 0);
        let ip = fleet.hosts[i].ip();
        assert_eq!(h["stdout"], format!("hello from {ip}\n"), "{h}");
    }
    assert_eq!(hosts[17]["state"], "failed", "{}", hosts[17]);
    assert!(
        hosts[17]["message"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{}",
        hosts[17]
    );
    assert_eq!(hosts[18]["state"], "timed_out", "{}", hosts[18]);
    // What it printed before the timeout is kept.
    assert_eq!(hosts[18]["stdout"], "sleeping\n", "{}", hosts[18]);
    assert_eq!(hosts[19]["state"], "unreachable", "{}", hosts[19]);
    let counts = &execution["counts"];
    assert_eq!(
        (
            counts["ok"].as_u64(),
            counts["failed"].as_u64(),
            counts["timed_out"].as_u64(),
            counts["unreachable"].as_u64()
        ),
        (Some(17), Some(1), Some(1), Some(1))
    );
    // In parallel: the 5 s timeout plus the kill's grace, not 20 hosts in a row.
    assert!(took < Duration::from_secs(12), "took {took:?}");
    // The timed-out command was killed on its host.
    assert!(!running(&fleet, 18, "sleep 6007"), "sleep 6007 still runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_kills_every_remote_process_within_two_seconds() {
    let fleet = Fleet::start(6);
    let api = Api::start().await;
    let id = start(
        &api,
        &json!({"command": {"mode": "longscript", "script": "echo started\nsleep 3011\necho never"},
                "hosts": hosts(&fleet), "timeout_secs": 60}),
    )
    .await;
    // Wait until every host runs the script, and shows what it printed
    // while it runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(0..fleet.hosts.len()).all(|i| running(&fleet, i, "sleep 3011")) {
        assert!(
            Instant::now() < deadline,
            "the script did not start everywhere"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let live = api.execution_with_output(id).await;
        let hosts = live["hosts"].as_array().unwrap();
        assert!(hosts.iter().all(|h| h["state"] == "running"), "{live}");
        if hosts.iter().all(|h| h["stdout"] == "started\n") {
            break;
        }
        assert!(Instant::now() < deadline, "no live output: {live}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cancelled_at = Instant::now();
    let (status, body) = api
        .post(&format!("/api/v1/executions/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let execution = finished(&api, id, Duration::from_secs(10)).await;
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(2),
        "took {:?}",
        cancelled_at.elapsed()
    );
    assert_eq!(execution["state"], "cancelled");
    for h in execution["hosts"].as_array().unwrap() {
        assert_eq!(h["state"], "cancelled", "{h}");
        // What it printed before the cancel is kept.
        assert_eq!(h["stdout"], "started\n", "{h}");
    }
    for i in 0..fleet.hosts.len() {
        assert!(
            !running(&fleet, i, "sleep 3011"),
            "host {i} still runs the script"
        );
    }
    // The wrapper removed the uploaded scripts even though bash was killed.
    let left = fleet.ssh(0, "grep -l 'sleep 3011' /tmp/dcp-*.sh 2>/dev/null | wc -l");
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "0");
    // Cancelling again is a conflict, not a second cancel.
    let (status, _) = api
        .post(&format!("/api/v1/executions/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409);
}

/// A longscript is written to a file only its login can read and run from
/// there, in one session: it sees the login's umask (not the private one
/// its file was written under), an empty stdin (not its own text), and
/// its file is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_longscript_runs_from_a_private_file_as_the_login_would_run_it() {
    let fleet = Fleet::start(1);
    let api = Api::start().await;
    let output = |body: Value| {
        let api = &api;
        async move {
            let id = start(api, &body).await;
            let execution = finished(api, id, Duration::from_secs(20)).await;
            let host = &execution["hosts"][0];
            assert_eq!(host["state"], "ok", "{execution}");
            host["stdout"].as_str().unwrap().to_owned()
        }
    };
    let login = output(json!({"command": {"mode": "shell", "script": "umask"},
                              "hosts": hosts(&fleet)}))
    .await;
    let script = output(json!({"command": {"mode": "longscript",
                                           "script": "umask\nstat -c %a \"$0\"\necho \"[$(cat)]\"\necho \"$0\""},
                               "hosts": hosts(&fleet)}))
    .await;
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(lines.len(), 4, "{script}");
    assert_eq!(lines[0], login.trim(), "the script's umask");
    assert_eq!(lines[1], "600", "the script file's mode");
    assert_eq!(lines[2], "[]", "the script's stdin");
    let left = fleet.ssh(
        0,
        &format!("test -e {} && echo left || echo gone", lines[3]),
    );
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_parameter_values_stay_literal_and_template_errors_name_the_param() {
    let fleet = Fleet::start(1);
    let api = Api::start().await;
    let canary = format!("/tmp/dcp-canary-{}", std::process::id());

    // An unknown placeholder is refused when saved.
    let (status, err) = api
        .post(
            "/api/v1/commands",
            &json!({"name": "bad", "mode": "shell", "script": "echo {{who}}"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("script")),
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("{{who}}")
    );
    // With a bad name too, one answer names both.
    let (status, err) = api
        .post(
            "/api/v1/commands",
            &json!({"name": "Bad Name", "mode": "shell", "script": "echo {{who}}"}),
        )
        .await;
    assert_eq!(
        (
            status,
            err["error"]["field"].as_str(),
            err["error"]["also"][0]["field"].as_str()
        ),
        (422, Some("name"), Some("script")),
        "{err}"
    );

    let (status, command) = api
        .post(
            "/api/v1/commands",
            &json!({"name": "echo-value", "mode": "shell",
            "script": "printf '%s|%s' {{value}} {{count}}",
            "params": [
                {"name": "value", "type": "string", "required": true},
                {"name": "count", "type": "integer", "default": 1}
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{command}");
    let command_id = command["id"].as_i64().unwrap();
    let run = |params: Value| {
        json!({"command_id": command_id, "params": params,
               "hosts": [host(fleet.hosts[0].ip(), &fleet.private_key)]})
    };

    // Missing, unknown and mistyped values are 422s naming the parameter.
    for (params, field) in [
        (json!({}), "params.value"),
        (json!({"value": "x", "bogus": 1}), "params.bogus"),
        (json!({"value": "x", "count": "many"}), "params.count"),
    ] {
        let (status, err) = api.post("/api/v1/executions", &run(params.clone())).await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (422, Some(field)),
            "{params}: {err}"
        );
    }

    for hostile in [
        format!("'; touch {canary}; echo '"),
        format!("$(touch {canary})"),
        format!("`touch {canary}`"),
        format!("a b \"c\" ; touch {canary} && echo \\n"),
        format!("line1\nline2; touch {canary}"),
        "{{value}} $HOME *".to_owned(),
    ] {
        let id = start(&api, &run(json!({"value": hostile, "count": "7"}))).await;
        let execution = finished(&api, id, Duration::from_secs(30)).await;
        let host = &execution["hosts"][0];
        assert_eq!(host["state"], "ok", "{hostile:?}: {host}");
        assert_eq!(host["stdout"], format!("{hostile}|7"), "{hostile:?}");
        assert!(
            !std::path::Path::new(&canary).exists(),
            "{hostile:?} ran on the host"
        );
    }
}

/// Every quoting context a placeholder may sit in, as one `shell` line and
/// one `longscript`; each context prints `<name>=<value>` and a record
/// separator (0x1e), so the expected output is built from the values.
const SHELL_CONTEXTS: &str = concat!(
    r#"printf 'u=%s\036' {{v}}; printf 's=%s\036' '{{v}}'; printf 'd=%s\036' "{{v}}"; "#,
    r#"printf 'mix=%s\036' pre'{{v}}'mid"{{v}}"{{v}}post; printf 'two=%s|%s\036' "{{v}}" '{{w}}'; "#,
    r#"printf 'sub=%s\036' "$(printf %s '{{v}}')"; printf 'pipe=%s\036' "$(printf %s "{{w}}" | cat)""#,
);
const SCRIPT_CONTEXTS: &str = r#"x={{v}}
printf 'assign=%s\036' "$x"
y="{{v}}{{w}}"'{{v}}'
printf 'concat=%s\036' "$y"
for a in {{v}}; do printf 'for=%s\036' "$a"; done
case {{w}} in *) printf 'case=%s\036' '{{w}}' ;; esac
f() { printf 'fn=%s\036' "$1"; }
f {{v}} # {{w}} in a comment
printf 'end\036'
"#;

/// What [`SHELL_CONTEXTS`] and [`SCRIPT_CONTEXTS`] print for `v` and `w`.
fn expected_contexts(v: &str, w: &str) -> (String, String) {
    // Command substitution drops trailing newlines: the shell's rule, not DCP's.
    let sub = |s: &str| s.trim_end_matches('\n').to_owned();
    let shell = format!(
        "u={v}\x1es={v}\x1ed={v}\x1emix=pre{v}mid{v}{v}post\x1etwo={v}|{w}\x1esub={}\x1epipe={}\x1e",
        sub(v),
        sub(w)
    );
    let script =
        format!("assign={v}\x1econcat={v}{w}{v}\x1efor={v}\x1ecase={w}\x1efn={v}\x1eend\x1e");
    (shell, script)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_values_reach_the_command_byte_for_byte_in_every_quoting_context() {
    let fleet = Fleet::start(1);
    let api = Api::start().await;
    let canary = format!("/tmp/dcp-canary-quoting-{}", std::process::id());
    let touch = format!("touch {canary}");
    let params = json!([{"name": "v", "type": "string", "required": true},
                        {"name": "w", "type": "string", "required": true}]);
    let mut commands = Vec::new();
    for (name, mode, script) in [
        ("contexts-line", "shell", SHELL_CONTEXTS),
        ("contexts-script", "longscript", SCRIPT_CONTEXTS),
    ] {
        let (status, command) = api
            .post(
                "/api/v1/commands",
                &json!({"name": name, "mode": mode, "script": script, "params": params}),
            )
            .await;
        assert_eq!(status, 201, "{command}");
        commands.push(command["id"].as_i64().unwrap());
    }
    let hostile: Vec<String> = vec![
        "'".into(),
        "\"".into(),
        "\\".into(),
        "\\'".into(),
        "'\"'\"'".into(),
        format!("a; {touch}; #"),
        format!("'; {touch}; echo '"),
        format!("\"; {touch}; echo \""),
        format!("'\"$({touch})\"'"),
        format!("$({touch})"),
        format!("`{touch}`"),
        format!("\\`{touch}\\`"),
        format!("${{IFS}}{touch}"),
        format!("$'\\x27; {touch}; #'"),
        format!("x\n{touch}\n"),
        format!("&& {touch} ||"),
        format!("> {canary}"),
        format!(") ; {touch} ; ("),
        "*".into(),
        "/*".into(),
        "--".into(),
        "-n".into(),
        "-e \\x41 %s %d".into(),
        "$HOME ${HOME} $1 $@ $$".into(),
        "{{v}} {{w}}".into(),
        "  spaced  out  ".into(),
        "\n\n".into(),
        String::new(),
        "ünïcødé ✓ 日本語 🦀 \u{202e}rtl".into(),
        "-".repeat(3) + &"'\"$`\\".repeat(2000),
    ];
    for (i, v) in hostile.iter().enumerate() {
        let w = &hostile[(i + 1) % hostile.len()];
        let (shell, script) = expected_contexts(v, w);
        for (command, expected) in commands.iter().zip([shell, script]) {
            let id = start(
                &api,
                &json!({"command_id": command, "params": {"v": v, "w": w},
                        "hosts": [host(fleet.hosts[0].ip(), &fleet.private_key)]}),
            )
            .await;
            let execution = finished(&api, id, Duration::from_secs(30)).await;
            let host = &execution["hosts"][0];
            assert_eq!(host["state"], "ok", "v={v:?} w={w:?}: {host}");
            assert_eq!(
                host["stdout"].as_str().unwrap(),
                expected,
                "v={v:?} w={w:?}: {host}"
            );
            assert!(
                !std::path::Path::new(&canary).exists(),
                "v={v:?} w={w:?} ran on the host"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholders_where_quoting_cannot_be_followed_are_refused_when_saved() {
    let api = Api::start().await;
    let params = json!([{"name": "v", "type": "string"}]);
    for (mode, script, reason) in [
        ("shell", "echo `echo {{v}}`", "backquoted"),
        ("shell", "echo \"`echo '{{v}}'`\"", "backquoted"),
        ("shell", "echo $'{{v}}'", "$'"),
        ("shell", "echo $((1 + {{v}}))", "arithmetic"),
        ("shell", "echo ${HOME:-{{v}}}", "${"),
        ("shell", "echo \"{{v}}", "unterminated"),
        ("longscript", "cat <<EOF\n{{v}}\nEOF", "here-document"),
        ("longscript", "cat <<'EOF'\n'{{v}}'\nEOF", "here-document"),
        (
            "longscript",
            "echo $(case a in a) echo ;; esac) {{v}}",
            "case",
        ),
    ] {
        let (status, err) = api
            .post(
                "/api/v1/commands",
                &json!({"name": "unsafe", "mode": mode, "script": script, "params": params}),
            )
            .await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (422, Some("script")),
            "{script:?}: {err}"
        );
        let message = err["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("{{v}}") && message.contains(reason),
            "{script:?}: {message}"
        );
    }
    // The same placeholders are fine where the quoting is known, and a
    // script with a here-document or backquotes but no placeholder in
    // them is kept as written.
    let (status, saved) = api
        .post(
            "/api/v1/commands",
            &json!({"name": "safe", "mode": "longscript", "params": params,
                    "script": "cat <<EOF\n$HOME `date`\nEOF\necho '{{v}}' \"{{v}}\" {{v}}"}),
        )
        .await;
    assert_eq!(status, 201, "{saved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_run_in_order_and_expert_commands_run_uploaded_modules() {
    let fleet = Fleet::start(2);
    let api = Api::start().await;
    let path = format!("/tmp/dcp-module-{}", std::process::id());

    // Naming a module nobody provides is refused.
    let expert = |module: &str| {
        json!({"name": "write-motd", "mode": "expert",
               "script": json!({"module": module, "args": {"path": path, "content": "{{motd}}"}}).to_string(),
               "params": [{"name": "motd", "type": "string", "required": true}]})
    };
    let (status, err) = api.post("/api/v1/commands", &expert("write-file")).await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("script")),
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("write-file")
    );

    // Upload the module, approve and activate it: no restart.
    let (status, upload) = api
        .upload(
            &fixture_plugin("file-module"),
            include_str!("../fixtures/file-module/plugin.toml"),
        )
        .await;
    assert_eq!(status, 201, "{upload}");
    let plugin = upload["plugin"]["id"].as_i64().unwrap();
    for step in ["approve", "activate"] {
        let (status, body) = api
            .post(&format!("/api/v1/plugins/{plugin}/{step}"), &json!({}))
            .await;
        assert_eq!(status, 200, "{step}: {body}");
    }
    let modules = api.get("/api/v1/modules").await;
    assert!(
        modules["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["module"] == "write-file"),
        "{modules}"
    );

    let (status, write) = api.post("/api/v1/commands", &expert("write-file")).await;
    assert_eq!(status, 201, "{write}");
    let (_, check) = api
        .post(
            "/api/v1/commands",
            &json!({"name": "check-motd", "mode": "longscript",
                    "script": format!("set -e\ntest \"$(cat {path})\" = {{{{motd}}}}\nstat -c %a {path}\nrm -f {path}"),
                    "params": [{"name": "motd", "type": "string", "required": true}]}),
        )
        .await;
    let (status, group) = api
        .post(
            "/api/v1/command-groups",
            &json!({"name": "motd", "command_ids": [write["id"], check["id"]]}),
        )
        .await;
    assert_eq!(status, 201, "{group}");
    assert_eq!(group["params"].as_array().unwrap().len(), 1, "{group}");

    // A command used by a group cannot be deleted.
    let (status, err) = api
        .delete(&format!("/api/v1/commands/{}", write["id"]))
        .await;
    assert_eq!(status, 409, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("motd"));

    let id = start(
        &api,
        &json!({"group_id": group["id"], "params": {"motd": "it's a \"test\""}, "hosts": [
            host(fleet.hosts[0].ip(), &fleet.private_key)
        ]}),
    )
    .await;
    let execution = finished(&api, id, Duration::from_secs(30)).await;
    assert_eq!(execution["state"], "succeeded", "{execution}");
    let steps: Vec<_> = execution["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["module"].clone())
        .collect();
    assert_eq!(steps, [json!("write-file"), json!("longscript")]);
    assert_eq!(execution["hosts"][0]["stdout"], "it's a \"test\"644\n");

    // A failing step stops the host there and says which step failed.
    let id = start(
        &api,
        &json!({"group_id": group["id"], "params": {"motd": "x"}, "hosts": [
            json!({"address": fleet.hosts[1].ip().to_string(), "private_key": fleet.private_key, "user": "nobody-here"})
        ]}),
    )
    .await;
    let execution = finished(&api, id, Duration::from_secs(30)).await;
    assert_eq!(execution["state"], "failed", "{execution}");
    assert!(
        execution["hosts"][0]["message"]
            .as_str()
            .unwrap()
            .contains("step 1 (write-motd)"),
        "{execution}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forks_limit_parallelism_output_is_capped_and_the_default_key_logs_in() {
    let fleet = Fleet::start(6);
    let api = Api::start_with(&dcp_tests::ServerOptions {
        env: vec![(
            "DCP_SSH_KEY_FILE".into(),
            fleet.key_path().display().to_string(),
        )],
        ..Default::default()
    })
    .await;
    // No private_key: DCP's configured key is used.
    let targets: Vec<Value> = fleet
        .hosts
        .iter()
        .map(|h| json!({"address": h.ip().to_string()}))
        .collect();
    let id = start(
        &api,
        &json!({"command": {"mode": "shell", "script": "sleep 1; head -c 3000000 /dev/zero | tr '\\0' x"},
                "hosts": targets, "forks": 2}),
    )
    .await;

    // The live stream starts with a snapshot and ends with the final state.
    let events = api
        .http
        .get(api.server.url(&format!("/api/v1/executions/{id}/events")))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let stream = tokio::time::timeout(Duration::from_secs(60), events.text())
        .await
        .expect("the event stream ends with the execution")
        .unwrap();
    let names: Vec<&str> = stream
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"snapshot"), "{names:?}");
    assert!(
        names.iter().filter(|n| **n == "host").count() >= 6,
        "{names:?}"
    );
    let last = stream
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(last).unwrap()["state"],
        "succeeded"
    );

    let execution = api.execution_with_output(id).await;
    let hosts = execution["hosts"].as_array().unwrap();
    for h in hosts {
        assert_eq!(h["state"], "ok", "{h}");
        assert_eq!(h["truncated"], true);
        assert_eq!(h["stdout"].as_str().unwrap().len(), 1 << 20);
    }
    // Never more than two hosts at once: at every host's start, fewer than
    // two others had started and not yet finished.
    let span = |h: &Value, k: &str| {
        time::OffsetDateTime::parse(
            h[k].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    for h in hosts {
        let at = span(h, "started_at");
        let overlapping = hosts
            .iter()
            .filter(|o| span(o, "started_at") <= at && at < span(o, "finished_at"))
            .count();
        assert!(overlapping <= 2, "{overlapping} hosts ran at once");
    }
    // Out of range forks are refused.
    let (status, err) = api
        .post(
            "/api/v1/executions",
            &json!({"command": {"script": "true"}, "hosts": [{"address": "127.20.0.1"}], "forks": 0}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("forks"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_connections_are_replaced_and_a_changed_host_key_is_refused_until_forgotten() {
    let mut fleet = Fleet::start(1);
    let api = Api::start().await;
    let run = json!({"command": {"script": "echo hi"}, "hosts": hosts(&fleet)});
    let first = finished(&api, start(&api, &run).await, Duration::from_secs(30)).await;
    assert_eq!(first["state"], "succeeded", "{first}");
    let keys = api.get("/api/v1/ssh/host-keys").await;
    let trusted = keys["items"][0].clone();
    assert_eq!(trusted["host"], format!("{}:22", fleet.hosts[0].ip()));
    assert!(
        trusted["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );

    // A second run logs in no more: the connection is pooled. The
    // metrics say so (a login costs the host a key exchange and a process).
    const LOGINS: &str = "dcp_ssh_connections_total{outcome=\"ok\"}";
    let sessions = api.metric("dcp_ssh_sessions_total").await;
    assert!(sessions >= 1.0, "{sessions}");
    let pooled = finished(&api, start(&api, &run).await, Duration::from_secs(30)).await;
    assert_eq!(pooled["state"], "succeeded", "{pooled}");
    assert_eq!(api.metric(LOGINS).await, 1.0);
    assert_eq!(api.metric("dcp_ssh_connections_open").await, 1.0);
    assert!(api.metric("dcp_ssh_sessions_total").await > sessions);

    // A pooled connection the host dropped is replaced, not reported.
    fleet.drop_connections(0);
    let again = finished(&api, start(&api, &run).await, Duration::from_secs(30)).await;
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(api.metric(LOGINS).await, 2.0);
    assert_eq!(api.metric("dcp_ssh_connections_open").await, 1.0);

    fleet.rekey(0);
    let second = finished(&api, start(&api, &run).await, Duration::from_secs(30)).await;
    assert_eq!(second["state"], "failed", "{second}");
    let message = second["hosts"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("host key") && message.contains(&fleet.hosts[0].ip().to_string()),
        "{message}"
    );
    assert_eq!(
        api.metric("dcp_ssh_connections_total{outcome=\"failed\"}")
            .await,
        1.0
    );

    let (status, _) = api
        .delete(&format!(
            "/api/v1/ssh/host-keys/{}",
            trusted["host"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 204);
    let third = finished(&api, start(&api, &run).await, Duration::from_secs(30)).await;
    assert_eq!(third["state"], "succeeded", "{third}");
}

/// What a task does between a node's steps: it holds the node's address,
/// and that host's connection stays open however long it sits idle, while
/// an unheld host's idle connection is closed. In a large expand a node's
/// init and its `start_service` are minutes apart (dockerd's queue); with
/// the hold they share one login, which costs the node a key exchange and
/// a process. A host left without a connection is forgotten by the pool, so
/// a fleet whose addresses come and go does not grow it without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_hosts_connection_outlives_the_idle_time_and_goes_once_released() {
    use dcp::remote::ssh::{Credential, Endpoint, Settings, Target, Transport};
    use dcp_tests::metric;

    let fleet = Fleet::start(2);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("dcp.db").display());
    let store = dcp::Store::open(&url).await.unwrap();
    let metrics = dcp::telemetry::Metrics::new();
    let transport = Transport::new(
        store,
        Settings {
            idle: Duration::from_secs(1),
            ..Settings::default()
        },
        None,
        metrics.ssh(),
    );
    let targets: Vec<Target> = fleet
        .hosts
        .iter()
        .map(|h| Target {
            endpoint: Endpoint {
                address: h.ip().to_string(),
                port: 22,
                user: "root".to_owned(),
            },
            credential: Credential::parse_key(&fleet.private_key).unwrap(),
        })
        .collect();
    let run_on_both = || async {
        for target in &targets {
            let cancel = tokio_util::sync::CancellationToken::new();
            let out = transport
                .exec(target, "true", None, Duration::from_secs(30), 1024, &cancel)
                .await
                .unwrap();
            assert_eq!(out.exit_code, Some(0));
        }
    };
    let open = || metric(&metrics.render(), "dcp_ssh_connections_open");
    let pooled = || metric(&metrics.render(), "dcp_ssh_hosts_pooled");
    let logins = || {
        metric(
            &metrics.render(),
            "dcp_ssh_connections_total{outcome=\"ok\"}",
        )
    };
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "{what} did not happen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let hold = transport.hold(&fleet.hosts[0].ip().to_string());
    run_on_both().await;
    assert_eq!((logins(), open(), pooled()), (2.0, 2.0, 2.0));
    // Both sat idle alike; only the unheld host's connection is closed,
    // and the pool forgets that host.
    until("closing the unheld host's idle connection", || {
        open() == 1.0 && pooled() == 1.0
    })
    .await;
    run_on_both().await;
    assert_eq!(logins(), 3.0, "the held host logged in again");
    assert_eq!(open(), 2.0);

    // Released, the held host's connection goes like any idle one.
    drop(hold);
    until("closing every idle connection", || {
        open() == 0.0 && pooled() == 0.0
    })
    .await;
    run_on_both().await;
    assert_eq!((logins(), pooled()), (5.0, 2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_groups_are_checked_when_saved_and_run() {
    let api = Api::start().await;
    let make = |name: &str, kind: &str| {
        json!({"name": name, "mode": "shell", "script": "echo {{v}}",
               "params": [{"name": "v", "type": kind, "required": true}]})
    };
    let (_, text) = api
        .post("/api/v1/commands", &make("as-text", "string"))
        .await;
    let (_, number) = api
        .post("/api/v1/commands", &make("as-number", "integer"))
        .await;

    // Saving checks every field and names it.
    for (body, field) in [
        (json!({"name": "Bad Name", "script": "true"}), "name"),
        (json!({"name": "x", "script": " "}), "script"),
        (json!({"name": "x", "script": "echo a\necho b"}), "script"),
        (
            json!({"name": "x", "script": "true", "params": [{"name": "9x"}]}),
            "params[0].name",
        ),
        (
            json!({"name": "x", "script": "true", "params": [{"name": "a"}, {"name": "a"}]}),
            "params[1].name",
        ),
        (
            json!({"name": "x", "script": "true", "params": [{"name": "e", "type": "enum"}]}),
            "params[0].choices",
        ),
        (
            json!({"name": "x", "script": "true", "params": [{"name": "n", "type": "integer", "default": "ten"}]}),
            "params[0].default",
        ),
        (
            json!({"name": "x", "mode": "expert", "script": "echo"}),
            "script",
        ),
    ] {
        let (status, err) = api.post("/api/v1/commands", &body).await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (422, Some(field)),
            "{body}: {err}"
        );
    }
    let (status, _) = api
        .post("/api/v1/commands", &make("as-text", "string"))
        .await;
    assert_eq!(status, 409, "names are unique");

    // Renaming and listing.
    let (status, renamed) = api
        .put(
            &format!("/api/v1/commands/{}", text["id"]),
            &make("as-string", "string"),
        )
        .await;
    assert_eq!((status, renamed["name"].as_str()), (200, Some("as-string")));
    let listed = api.get("/api/v1/commands?name=AS-&per_page=1").await;
    assert_eq!(
        (
            listed["total"].as_u64(),
            listed["items"][0]["name"].as_str()
        ),
        (Some(2), Some("as-number"))
    );

    // A group's commands must agree on shared parameters, and exist.
    let (status, err) = api
        .post(
            "/api/v1/command-groups",
            &json!({"name": "clash", "command_ids": [text["id"], number["id"]]}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("command_ids")),
        "{err}"
    );
    assert!(
        err["error"]["message"].as_str().unwrap().contains("\"v\""),
        "{err}"
    );
    let (status, err) = api
        .post(
            "/api/v1/command-groups",
            &json!({"name": "ghost", "command_ids": [number["id"], 424_242]}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("command_ids[1]")),
        "{err}"
    );

    // What to run and where are each one of three.
    for (body, field) in [
        (json!({"hosts": [{"address": "127.20.0.1"}]}), "command_id"),
        (
            json!({"command_id": number["id"], "command": {"script": "true"}, "hosts": [{"address": "127.20.0.1"}]}),
            "command_id",
        ),
        (json!({"command": {"script": "true"}}), "hosts"),
        (
            json!({"command": {"script": "true"}, "machine_ids": [7]}),
            "machine_ids[0]",
        ),
        (
            json!({"command": {"script": "true"}, "pool_id": 3}),
            "pool_id",
        ),
        (json!({"command": {"script": "true"}, "hosts": []}), "hosts"),
        (
            json!({"command": {"script": "true"}, "hosts": [{"address": "a b"}]}),
            "hosts[0].address",
        ),
        (
            json!({"command": {"script": "true"}, "hosts": [{"address": "127.20.0.1", "private_key": "nope"}]}),
            "hosts[0].private_key",
        ),
        (
            json!({"command": {"script": "true"}, "hosts": [{"address": "127.20.0.1"}], "timeout_secs": 0}),
            "timeout_secs",
        ),
        (
            json!({"command": {"mode": "expert", "script": "{}"}, "hosts": [{"address": "127.20.0.1"}]}),
            "command.mode",
        ),
        (
            json!({"command_id": 999_999, "hosts": [{"address": "127.20.0.1"}]}),
            "command_id",
        ),
    ] {
        let (status, err) = api.post("/api/v1/executions", &body).await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (422, Some(field)),
            "{body}: {err}"
        );
    }
    // Nothing was recorded for refused runs.
    assert_eq!(api.get("/api/v1/executions").await["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_speaks_ssh_is_unreachable_after_the_connect_timeout() {
    // Accepts TCP and says nothing: a hung sshd, or a firewall that lets SYNs in.
    let silent = std::net::TcpListener::bind(("127.20.252.9", 22)).unwrap();
    let held = std::thread::spawn(move || {
        let (socket, _) = silent.accept().unwrap();
        std::thread::sleep(Duration::from_secs(4));
        drop(socket);
    });
    let api = Api::start_with(&dcp_tests::ServerOptions {
        env: vec![("DCP_SSH_CONNECT_TIMEOUT_SECS".into(), "2".into())],
        ..Default::default()
    })
    .await;
    let began = Instant::now();
    let id = start(
        &api,
        &json!({"command": {"script": "true"}, "hosts": [{"address": "127.20.252.9"}], "timeout_secs": 60}),
    )
    .await;
    let execution = finished(&api, id, Duration::from_secs(30)).await;
    let host = &execution["hosts"][0];
    assert_eq!(host["state"], "unreachable", "{host}");
    assert!(
        host["message"]
            .as_str()
            .unwrap()
            .contains("no SSH login within"),
        "{host}"
    );
    // The connect timeout, not the execution's 60 s.
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    held.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_dcp_kills_what_its_executions_run_and_then_exits() {
    let fleet = Fleet::start(2);
    let mut api = Api::start().await;
    start(
        &api,
        &json!({"command": {"script": "sleep 3023"}, "hosts": hosts(&fleet), "timeout_secs": 120}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(0..2).all(|i| running(&fleet, i, "sleep 3023")) {
        assert!(Instant::now() < deadline, "the command did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An open event stream must not hold the shutdown up.
    let events = api
        .http
        .get(api.server.url("/api/v1/executions/1/events"))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let status = api.server.terminate(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    for i in 0..2 {
        assert!(!running(&fleet, i, "sleep 3023"), "host {i} still runs it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_without_dcps_key_are_adopted_with_a_password_never_stored() {
    let mut fleet = Fleet::start(1);
    let (user, password) = fleet.password_login();
    let api = Api::start().await;
    let ip = fleet.hosts[0].ip().to_string();
    let run = |password: &str| {
        json!({"command": {"script": "id -un"},
               "hosts": [{"address": ip, "user": user, "password": password}]})
    };
    let ok = finished(
        &api,
        start(&api, &run(&password)).await,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(ok["state"], "succeeded", "{ok}");
    assert_eq!(ok["hosts"][0]["stdout"], format!("{user}\n"));
    // Nothing about the credentials is kept or shown.
    assert!(!ok.to_string().contains(&password));

    let wrong = finished(
        &api,
        start(&api, &run("not-it")).await,
        Duration::from_secs(30),
    )
    .await;
    let host = &wrong["hosts"][0];
    assert_eq!(host["state"], "failed", "{host}");
    assert!(
        host["message"]
            .as_str()
            .unwrap()
            .contains("refused the password"),
        "{host}"
    );
    // A key and a password together are ambiguous.
    let (status, err) = api
        .post(
            "/api/v1/executions",
            &json!({"command": {"script": "true"},
                    "hosts": [{"address": ip, "password": "x", "private_key": fleet.private_key}]}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("hosts[0].password"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_leaves_a_job_in_the_background_ends_when_it_exits() {
    let fleet = Fleet::start(1);
    let api = Api::start().await;
    let began = Instant::now();
    let id = start(
        &api,
        &json!({"command": {"script": "sleep 3031 & echo started"}, "hosts": hosts(&fleet), "timeout_secs": 60}),
    )
    .await;
    let execution = finished(&api, id, Duration::from_secs(30)).await;
    assert_eq!(execution["state"], "succeeded", "{execution}");
    assert_eq!(execution["hosts"][0]["stdout"], "started\n");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    // What it started deliberately keeps running.
    assert!(running(&fleet, 0, "sleep 3031"));
    let _ = fleet.ssh(0, "pkill -f '^sleep 3031$'");
}

/// Waits until machine `id` is released; panics after ten seconds.
async fn released(api: &Api, id: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let detail = api.get(&format!("/api/v1/machines/{id}")).await;
        if detail["machine"]["state"] == "deleted" {
            return;
        }
        assert!(Instant::now() < deadline, "not released: {detail}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_machines_host_key_is_forgotten_so_a_new_server_on_its_address_is_adopted() {
    let mut fleet = Fleet::start(1);
    let api = Api::start().await;
    let adopt = |name: &str| {
        json!({"name": name, "address": fleet.hosts[0].ip().to_string(), "user": "root",
               "private_key": fleet.private_key})
    };
    let (status, machine) = api.post("/api/v1/machines/adopt", &adopt("old-vm")).await;
    assert_eq!(status, 201, "{machine}");
    let id = machine["id"].as_i64().unwrap();
    let adopt_again = adopt("new-vm");

    // The machine goes; a new server (new host key) gets its address.
    let (status, _) = api.delete(&format!("/api/v1/machines/{id}")).await;
    assert_eq!(status, 202);
    released(&api, id).await;
    fleet.rekey(0);
    let (status, machine) = api.post("/api/v1/machines/adopt", &adopt_again).await;
    assert_eq!(status, 201, "the new server was refused: {machine}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_is_one_machine_however_its_address_is_written() {
    let fleet = Fleet::start(1);
    let api = Api::start().await;
    let ip = fleet.hosts[0].ip();
    let adopt = |name: &str, address: String| {
        json!({"name": name, "address": address, "user": "root",
               "private_key": fleet.private_key})
    };
    // Two adoptions at once: the store lets one win.
    let (first, second) = (adopt("a", ip.to_string()), adopt("b", ip.to_string()));
    let (a, b) = tokio::join!(
        api.post("/api/v1/machines/adopt", &first),
        api.post("/api/v1/machines/adopt", &second),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{} / {}", a.1, b.1);
    let (won, lost) = if a.0 == 201 { (a.1, b.1) } else { (b.1, a.1) };
    let id = won["id"].as_i64().unwrap();
    assert_eq!(lost["error"]["field"], "address", "{lost}");
    assert!(
        lost["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("machine {id}")),
        "{lost}"
    );
    // The same server written another way (IPv4-mapped IPv6), later.
    let (status, body) = api
        .post(
            "/api/v1/machines/adopt",
            &adopt("c", format!("::ffff:{ip}")),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (409, Some("address")),
        "{body}"
    );
    // Once released, the server may be adopted again.
    let (status, _) = api.delete(&format!("/api/v1/machines/{id}")).await;
    assert_eq!(status, 202);
    released(&api, id).await;
    let (status, body) = api
        .post("/api/v1/machines/adopt", &adopt("d", ip.to_string()))
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_hosts_printing_lots_keep_the_detail_small_page_their_hosts_and_cap_the_total() {
    let fleet = Fleet::start(60);
    let cap: u64 = 5 << 20;
    let api = Api::start_with(&dcp_tests::ServerOptions {
        env: vec![("DCP_MAX_EXECUTION_OUTPUT_BYTES".into(), cap.to_string())],
        ..Default::default()
    })
    .await;
    // Each host prints ~230 KB: 60 of them are ~14 MB, well past the cap.
    let id = start(
        &api,
        &json!({"command": {"mode": "shell", "script": "seq 1 40000; echo done >&2"},
                "hosts": hosts(&fleet), "forks": 60}),
    )
    .await;
    let _ = finished(&api, id, Duration::from_secs(120)).await;

    // The detail carries no output: it stays small.
    let detail = api.get(&format!("/api/v1/executions/{id}")).await;
    let size = detail.to_string().len();
    assert!(size < 64 << 10, "the detail is {size} bytes");
    assert_eq!(detail["counts"]["total"], 60);

    // Hosts page in order.
    let second = api
        .get(&format!("/api/v1/executions/{id}/hosts?page=2&per_page=25"))
        .await;
    assert_eq!(second["total"], 60);
    let items = second["items"].as_array().unwrap();
    assert_eq!(items.len(), 25);
    assert_eq!(items[0]["index"], 25);
    assert_eq!(items[24]["index"], 49);
    assert!(second.to_string().len() < 64 << 10);

    // Output read by offset reassembles what a host printed; the total
    // kept stays under the cap, and the hosts cut say so.
    let expected: String = (1..=40000).map(|n| format!("{n}\n")).collect();
    let all = api.execution_with_output(id).await;
    let hosts = all["hosts"].as_array().unwrap();
    let kept: usize = hosts
        .iter()
        .map(|h| h["stdout"].as_str().unwrap().len() + h["stderr"].as_str().unwrap().len())
        .sum();
    assert!(kept as u64 <= cap, "{kept} bytes kept");
    let whole = hosts
        .iter()
        .filter(|h| h["truncated"] == false)
        .collect::<Vec<_>>();
    assert!(!whole.is_empty());
    for h in &whole {
        assert_eq!(h["stdout"].as_str().unwrap(), expected);
        assert_eq!(h["stdout_bytes"].as_u64().unwrap(), expected.len() as u64);
    }
    let cut = hosts.iter().filter(|h| h["truncated"] == true).count();
    assert!(cut > 0, "no host marked truncated");
    // An offset past the end is refused, naming the field.
    let (status, body) = api
        .get_status(&format!(
            "/api/v1/executions/{id}/hosts/0/output?offset=99999999"
        ))
        .await;
    assert_eq!(status, 422, "{body}");
}
