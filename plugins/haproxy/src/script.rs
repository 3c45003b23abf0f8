//! The shell the plugin runs on a node, and reading its answers.
//!
//! Two scripts, both POSIX `sh` (Linux: time is read from `/proc/uptime`),
//! talking to HAProxy's Runtime API with `socat`:
//!
//! - the read script checks the node has what the plugin needs and answers
//!   the configuration file, each backend's `show servers state`, and a
//!   checksum of both;
//! - the apply script, under a lock, checks the node has not changed since
//!   (the same checksum), checks the new file with `haproxy -c`, runs the
//!   plan's Runtime API commands, waits for removed servers' sessions to
//!   end (cutting them at the drain timeout), deletes those servers, and
//!   swaps the new file in (one rename). Its exit code says what failed.
//!
//! Every value placed in shell text is a checked path (`[A-Za-z0-9._/-]`),
//! a checked name, address or number, and is single-quoted all the same.

use balancer_kit::{
    node::Answer,
    script::{self as kit, assignments, quote},
};

use crate::{Failure, Kind, config::Config, plan::Plan};

/// Milliseconds the apply script keeps, after a drain, for deleting the
/// drained servers and writing the file.
const RESERVE_MS: u64 = 2000;

/// Where the new configuration file is uploaded.
pub(crate) fn candidate(config: &Config, token: &str) -> String {
    config.beside_config(&format!("dcp-new.{token}"))
}

/// The lock directory that serialises changes to one HAProxy.
pub(crate) fn lock(config: &Config) -> String {
    config.beside_config("dcp-lock")
}

/// Where the new file is made with the live one's owner and mode.
fn stage(config: &Config) -> String {
    config.beside_config("dcp-stage")
}

/// Both scripts' settings and helpers.
fn prelude(config: &Config, backends: &[&str]) -> String {
    let settings = assignments(&[
        ("SOCAT", quote(&config.socat)),
        ("SOCKET", quote(&config.socket)),
        ("CFG", quote(&config.config_file)),
        ("HAPROXY", quote(&config.haproxy)),
        ("BACKENDS", quote(&backends.join(" "))),
    ]);
    format!(
        r#"{settings}
# One Runtime API command; its answer on stdout.
dcp_cli() {{ printf '%s\n' "$1" | "$SOCAT" -t 30 - "UNIX-CONNECT:$SOCKET"; }}
# A backend's servers: name, admin state, user weight.
dcp_servers() {{ dcp_cli "show servers state $1" | awk 'NF >= 19 && $1 ~ /^[0-9]+$/ {{ print $4, $7, $8 }}'; }}
# What a change is planned on: the file and the backends' servers.
dcp_sum() {{ {{ cat "$CFG"; for b in $BACKENDS; do echo "== $b"; dcp_servers "$b"; done; }} | cksum; }}
"#
    )
}

/// The read script: `dcp-check <what>` when the node lacks something,
/// `dcp-unreachable <why>` when the socket does not answer; else the file
/// (`f <line>`), each backend's state (`s <backend> <line>`), `dcp-sum`
/// and `dcp-read-done`.
pub(crate) fn read_script(config: &Config, backends: &[&str]) -> String {
    let mut script = prelude(config, backends);
    script.push_str(
        r#"[ -f "$SOCAT" ] && [ -x "$SOCAT" ] || { echo 'dcp-check socat'; exit 0; }
[ -f "$HAPROXY" ] && [ -x "$HAPROXY" ] || { echo 'dcp-check haproxy'; exit 0; }
[ -f "$CFG" ] || { echo 'dcp-check config'; exit 0; }
[ -r "$CFG" ] || { echo 'dcp-check config-read'; exit 0; }
[ -S "$SOCKET" ] || { echo 'dcp-check socket'; exit 0; }
for b in $BACKENDS; do
  out=$(dcp_cli "show servers state $b" 2>&1) || { printf 'dcp-unreachable %s\n' "$out" | head -n 3; exit 0; }
  printf '%s\n' "$out" | sed "s/^/s $b /"
done
sed 's/^/f /' "$CFG"
echo "dcp-sum $(dcp_sum)"
echo dcp-read-done
"#,
    );
    script
}

/// What the read script found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Read {
    /// The configuration file.
    pub(crate) file: String,
    /// Per backend, in order: its `show servers state` lines.
    pub(crate) state: Vec<Vec<String>>,
    /// The checksum the apply script checks again.
    pub(crate) sum: String,
}

/// Reads the read script's answer about `backends`.
pub(crate) fn parse_read(
    config: &Config,
    backends: &[&str],
    out: &Answer,
) -> Result<Read, Failure> {
    let (exit_code, stderr) = (out.exit_code, out.stderr.as_str());
    let lines = kit::lines(&out.stdout);
    if let Some(check) = kit::lacking(&lines) {
        let message = match check {
            "socat" => format!(
                "socat: {} is not an executable on the node (install socat)",
                config.socat
            ),
            "haproxy" => format!(
                "haproxy: {} is not an executable on the node",
                config.haproxy
            ),
            "config" => format!(
                "config_file: {} is not a file on the node",
                config.config_file
            ),
            "config-read" => format!(
                "config_file: {} is not readable by the SSH user",
                config.config_file
            ),
            _ => format!(
                "socket: {} is not a socket on the node (is HAProxy running with \
                 `stats socket {} level admin`?)",
                config.socket, config.socket
            ),
        };
        return Err(Failure::invalid(message));
    }
    if let Some(why) = lines
        .iter()
        .find_map(|l| l.strip_prefix("dcp-unreachable "))
    {
        let rest: Vec<&str> = lines
            .iter()
            .skip_while(|l| !l.starts_with("dcp-unreachable "))
            .skip(1)
            .copied()
            .collect();
        return Err(Failure::new(
            Kind::Unavailable,
            format!(
                "HAProxy's admin socket {} does not answer: {}",
                config.socket,
                [why]
                    .into_iter()
                    .chain(rest)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .trim()
            ),
            true,
        ));
    }
    kit::read_done(&lines, exit_code, "the node", &tail(stderr, 5))?;
    let mut file = String::new();
    let mut state = vec![Vec::new(); backends.len()];
    let mut sum = None;
    for line in &lines {
        if let Some(text) = line.strip_prefix("f ") {
            file.push_str(text);
            file.push('\n');
        } else if *line == "f" {
            file.push('\n');
        } else if let Some(rest) = line.strip_prefix("s ") {
            let (backend, text) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some(i) = backends.iter().position(|b| *b == backend) {
                state[i].push(text.to_owned());
            }
        } else if let Some(s) = line.strip_prefix("dcp-sum ") {
            sum = Some(s.trim().to_owned());
        }
    }
    let sum = sum.ok_or_else(|| {
        Failure::new(
            Kind::Internal,
            "the node gave no checksum of its state",
            false,
        )
    })?;
    Ok(Read { file, state, sum })
}

/// The apply script's fixed part; `@PRELUDE@`, `@SETTINGS@`, `@HELPERS@`,
/// `@LOCK@` and `@STEPS@` are filled in.
const APPLY: &str = r##"set -u
umask 022
@PRELUDE@
@SETTINGS@
@HELPERS@
locked=0
dcp_exit() {
  rc=$?
  [ -n "$CANDIDATE" ] && rm -f "$CANDIDATE" "$STAGE"
  [ "$locked" = 1 ] && rm -rf "$LOCK"
  exit "$rc"
}
@LOCK@
[ "$(dcp_sum)" = "$SUM" ] || dcp_fail 16 "the node's servers or file changed since they were read"
if [ -n "$CANDIDATE" ]; then
  [ -f "$CANDIDATE" ] || dcp_fail 14 "the new $CFG was not uploaded ($CANDIDATE is missing)"
  t=$(dcp_now)
  out=$("$HAPROXY" -c -f "$CANDIDATE" 2>&1)
  rc=$?
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -ge 126 ] && dcp_fail 15 "cannot run $HAPROXY (exit $rc): $out"
    dcp_fail 10 "$out"
  fi
  dcp_say "haproxy -c: ok ($(( $(dcp_now) - t )) ms)"
fi
# A Runtime API command that must answer $2; $3 goes to the log.
dcp_run() {
  out=$(dcp_cli "$1" 2>"$LOCK/err") ||
    dcp_fail 12 "HAProxy's admin socket $SOCKET did not answer \`$1\`: $(head -n 3 "$LOCK/err")"
  out=$(printf '%s\n' "$out" | sed '/^[[:space:]]*$/d')
  [ "$out" = "$2" ] || dcp_fail 11 "HAProxy refused \`$1\`: ${out:-no answer}"
  [ -n "$3" ] && dcp_say "$3"
  return 0
}
# Sessions (current and queued) of the servers $1 (backend/server ...).
dcp_sessions() {
  total=0
  for b in $(printf '%s\n' $1 | sed 's,/.*,,' | sort -u); do
    names=" $(printf '%s\n' $1 | sed -n "s,^$b/,,p" | tr '\n' ' ')"
    n=$(dcp_cli "show stat $b 4 -1" | awk -F, -v names="$names" '
      NR == 1 { for (i = 1; i <= NF; i++) { h = $i; sub(/^# */, "", h); col[h] = i }; next }
      index(names, " " $2 " ") { s += $col["scur"] + $col["qcur"] }
      END { print s + 0 }')
    total=$(( total + ${n:-0} ))
  done
  echo "$total"
}
# Waits until the servers $1 have no sessions, for the drain timeout at
# most (and what the call's time allows).
dcp_wait() {
  limit=$(( $(dcp_left) - RESERVE_MS ))
  [ "$limit" -gt "$DRAIN_MS" ] && limit=$DRAIN_MS
  [ "$limit" -lt 0 ] && limit=0
  w0=$(dcp_now)
  while :; do
    n=$(dcp_sessions "$1")
    waited=$(( $(dcp_now) - w0 ))
    if [ "$n" -eq 0 ]; then
      dcp_say "drained in $waited ms: $(echo $1)"
      return 0
    fi
    if [ "$waited" -ge "$limit" ]; then
      dcp_say "$n session(s) still open after $waited ms of drain (limit $limit ms): cut"
      return 0
    fi
    dcp_nap
  done
}
# Deletes server $1 (backend/server): maintenance, its sessions cut (none
# left after a full drain), then `del server`, which HAProxy refuses while
# a connection is still being released.
dcp_remove() {
  dcp_run "set server $1 state maint" '' ''
  dcp_run "shutdown sessions server $1" '' ''
  d0=$(dcp_now)
  while :; do
    out=$(dcp_cli "del server $1" 2>"$LOCK/err") ||
      dcp_fail 12 "HAProxy's admin socket $SOCKET did not answer \`del server $1\`: $(head -n 3 "$LOCK/err")"
    out=$(printf '%s\n' "$out" | sed '/^[[:space:]]*$/d')
    [ "$out" = 'Server deleted.' ] && break
    if [ $(( $(dcp_now) - d0 )) -ge 2000 ] || [ "$(dcp_left)" -le 500 ]; then
      dcp_fail 11 "HAProxy refused \`del server $1\`: $out"
    fi
    dcp_nap
  done
  dcp_say "${1%%/*}: removed ${1#*/}"
}
@STEPS@
if [ -n "$CANDIDATE" ]; then
  # The live file's owner and mode, the new content, one rename.
  cp -p "$CFG" "$STAGE" && cat "$CANDIDATE" > "$STAGE" || dcp_fail 14 "cannot stage the new $CFG as $STAGE"
  mv -f "$STAGE" "$CFG" || dcp_fail 14 "cannot move the new $CFG into place"
  dcp_say "wrote $CFG"
fi
echo dcp-result changed
"##;

/// The apply script for `plan` (its file, if any, uploaded with `token`),
/// checked against the read's checksum; `budget_ms` is how long it may
/// run in all.
pub(crate) fn apply_script(
    config: &Config,
    backends: &[&str],
    plan: &Plan,
    sum: &str,
    token: &str,
    budget_ms: u64,
) -> String {
    let candidate = if plan.file.is_some() {
        candidate(config, token)
    } else {
        String::new()
    };
    let settings = assignments(&[
        ("LOCK", quote(&lock(config))),
        ("STAGE", quote(&stage(config))),
        ("CANDIDATE", quote(&candidate)),
        ("SUM", quote(sum)),
        ("DRAIN_MS", config.drain_timeout_ms.to_string()),
        ("BUDGET_MS", budget_ms.to_string()),
        ("RESERVE_MS", RESERVE_MS.to_string()),
    ]);
    let mut steps = Vec::new();
    for c in plan.adds.iter().chain(&plan.changes).chain(&plan.drains) {
        steps.push(format!(
            "dcp_run {} {} {}",
            quote(&c.command),
            quote(c.expect),
            quote(&c.say)
        ));
    }
    if !plan.removals.is_empty() {
        steps.push(format!("dcp_wait {}", quote(&plan.removals.join(" "))));
        for removal in &plan.removals {
            steps.push(format!("dcp_remove {}", quote(removal)));
        }
    }
    APPLY
        .replace("@PRELUDE@", &prelude(config, backends))
        .replace("@SETTINGS@", &settings)
        .replace("@HELPERS@", kit::HELPERS)
        .replace("@LOCK@", &kit::take_lock("HAProxy", "10000"))
        .replace("@STEPS@", &steps.join("\n"))
}

/// The last `n` lines of `text` worth reading: HAProxy's `[NOTICE]` lines
/// (its version, the PID) left out, each line once.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty() && !l.starts_with("[NOTICE]"))
        .collect();
    kit::last(lines, n)
}

/// Why the apply script failed, when its exit code says it is worth
/// reading the node again and retrying at once.
pub(crate) const CHANGED_SINCE_READ: i32 = 16;

/// Reads the apply script's outcome: its log lines, or the failure its
/// exit code stands for.
pub(crate) fn outcome(
    exit_code: Option<i32>,
    stdout: &str,
    stderr: &str,
) -> Result<Vec<String>, Failure> {
    let (log, result) = kit::steps(stdout);
    let steps = kit::steps_note(&log, "done before");
    let said = tail(stderr, 10);
    let failure = |kind, retryable, message: String| Err(Failure::new(kind, message, retryable));
    match exit_code {
        Some(0) if result.as_deref() == Some("dcp-result changed") => Ok(log),
        Some(0) => Err(kit::no_result(&steps)),
        Some(10) => failure(
            Kind::InvalidInput,
            false,
            format!(
                "haproxy -c refused the new configuration file; nothing was changed: {}",
                said.replace('\n', " | ")
            ),
        ),
        Some(11) => failure(
            Kind::Conflict,
            true,
            format!("{said}; the configuration file was not written{steps}"),
        ),
        Some(12) => failure(
            Kind::Unavailable,
            true,
            format!("{said}; the configuration file was not written{steps}"),
        ),
        Some(CHANGED_SINCE_READ) => failure(Kind::Conflict, true, said),
        Some(15) => failure(Kind::InvalidInput, false, format!("haproxy: {said}")),
        Some(14) => failure(Kind::Internal, false, format!("{said}{steps}")),
        _ => Err(kit::other_exit(exit_code, said, &steps)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Command;

    fn config() -> Config {
        Config::parse(r#"{"socket": "/srv/lb/admin.sock", "config_file": "/srv/lb/h.cfg"}"#)
            .unwrap()
    }

    #[test]
    fn the_new_file_is_uploaded_beside_the_live_one() {
        assert_eq!(candidate(&config(), "abc"), "/srv/lb/.h.cfg.dcp-new.abc");
        assert_eq!(lock(&config()), "/srv/lb/.h.cfg.dcp-lock");
    }

    #[test]
    fn the_read_answer_is_parsed() {
        let stdout = "\x1edcp-pid 12\ns web 1\ns web # be_id be_name\ns web 3 web 1 dcp_a 10.0.0.1 2 0 1 1\n\
                      s api Can't find backend.\ns api \nf global\nf\nf backend web\ndcp-sum 123 45\ndcp-read-done\n";
        let read = parse_read(
            &config(),
            &["web", "api"],
            &Answer::new(Some(0), stdout, ""),
        )
        .unwrap();
        assert_eq!(read.file, "global\n\nbackend web\n");
        assert_eq!(read.sum, "123 45");
        assert_eq!(read.state[0].len(), 3);
        assert_eq!(read.state[1], ["Can't find backend.", ""]);
        for (out, field) in [
            ("dcp-check socat\n", "socat: /usr/bin/socat"),
            ("dcp-check haproxy\n", "haproxy: "),
            (
                "dcp-check config\n",
                "config_file: /srv/lb/h.cfg is not a file",
            ),
            (
                "dcp-check socket\n",
                "socket: /srv/lb/admin.sock is not a socket",
            ),
        ] {
            let failure =
                parse_read(&config(), &["web"], &Answer::new(Some(0), out, "")).unwrap_err();
            assert_eq!(failure.kind, Kind::InvalidInput);
            assert!(failure.message.starts_with(field), "{}", failure.message);
        }
        let down = parse_read(
            &config(),
            &["web"],
            &Answer::new(
                Some(0),
                "dcp-unreachable 2026/12/07 socat[1] E connect(5, AF=1 \"/srv/lb/admin.sock\", 20): Connection refused\n",
                "",
            ),
        )
        .unwrap_err();
        assert_eq!((down.kind, down.retryable), (Kind::Unavailable, true));
        assert!(
            down.message.contains("Connection refused"),
            "{}",
            down.message
        );
        let failed =
            parse_read(&config(), &["web"], &Answer::new(Some(2), "", "sh: boom\n")).unwrap_err();
        assert!(failed.message.contains("boom"));
    }

    #[test]
    fn the_apply_script_has_every_value_quoted_and_is_valid_sh() {
        let plan = Plan {
            adds: vec![Command {
                command: "add server web/dcp_a 10.0.0.1:80 weight 5".to_owned(),
                expect: "New server registered.",
                say: "web: added dcp_a (10.0.0.1:80, weight 5)".to_owned(),
            }],
            removals: vec!["web/dcp_b".to_owned()],
            file: Some(String::new()),
            ..Plan::default()
        };
        let script = apply_script(&config(), &["web"], &plan, "1 2", "tok", 20_000);
        for line in [
            "SOCKET='/srv/lb/admin.sock'",
            "CFG='/srv/lb/h.cfg'",
            "BACKENDS='web'",
            "LOCK='/srv/lb/.h.cfg.dcp-lock'",
            "CANDIDATE='/srv/lb/.h.cfg.dcp-new.tok'",
            "SUM='1 2'",
            "DRAIN_MS=20000",
            "BUDGET_MS=20000",
            "dcp_run 'add server web/dcp_a 10.0.0.1:80 weight 5' 'New server registered.' 'web: added dcp_a (10.0.0.1:80, weight 5)'",
            "dcp_wait 'web/dcp_b'",
            "dcp_remove 'web/dcp_b'",
        ] {
            assert!(script.lines().any(|l| l == line), "{line}");
        }
        for placeholder in ["@PRELUDE@", "@SETTINGS@", "@HELPERS@", "@LOCK@", "@STEPS@"] {
            assert!(!script.contains(placeholder), "{placeholder}");
        }
        balancer_kit::testing::assert_valid_sh(&script);
        balancer_kit::testing::assert_valid_sh(&read_script(&config(), &["web", "api"]));
    }

    #[test]
    fn exit_codes_map_to_kinds() {
        assert_eq!(
            outcome(Some(0), "web: added a\ndcp-result changed\n", "").unwrap(),
            ["web: added a"]
        );
        let refused = outcome(
            Some(10),
            "",
            "[NOTICE]   (1) : haproxy version is 2.6.12\n[ALERT]    (1) : config : parsing [/x:3] : unknown keyword 'sever'\n",
        )
        .unwrap_err();
        assert_eq!(
            (refused.kind, refused.retryable),
            (Kind::InvalidInput, false)
        );
        assert_eq!(
            refused.message,
            "haproxy -c refused the new configuration file; nothing was changed: \
             [ALERT]    (1) : config : parsing [/x:3] : unknown keyword 'sever'"
        );
        let runtime = outcome(
            Some(11),
            "web: added a\n",
            "HAProxy refused `add server web/b 10.0.0.2:80 weight 1`: Already exists a server with the same name in backend.\n",
        )
        .unwrap_err();
        assert_eq!(
            runtime.message,
            "HAProxy refused `add server web/b 10.0.0.2:80 weight 1`: Already exists a server \
             with the same name in backend.; the configuration file was not written (done before: web: added a)"
        );
        balancer_kit::testing::assert_exit_codes(
            outcome,
            &[
                (11, Kind::Conflict, true),
                (12, Kind::Unavailable, true),
                (14, Kind::Internal, false),
                (15, Kind::InvalidInput, false),
                (16, Kind::Conflict, true),
            ],
        );
    }
}
