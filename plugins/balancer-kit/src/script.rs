//! What the plugins' shell scripts have in common: the command that runs
//! them, quoting, the apply scripts' clock and lock, and reading their
//! answers.
//!
//! A plugin's scripts are POSIX `sh` that also runs under busybox (Linux:
//! time is read from `/proc/uptime`). An apply script says what it did on
//! stdout, one step a line, ending with `dcp-result …`, and why it failed
//! on stderr, with an exit code that says what failed; the codes every
//! plugin gives the same meaning are read by [`other_exit`].

use crate::{Failure, Kind};

/// The command run for every script: POSIX `sh`, whatever the login shell,
/// with the script on stdin (no argument-length limit). The script is read
/// whole before it runs, so nothing it starts can read the rest of it.
pub const EXEC: &str = r#"sh -c 'eval "$(cat)"'"#;

/// `text` single-quoted for `sh`.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A call-unique suffix for uploaded files, from the call id.
pub fn token(call_id: &str) -> String {
    let token: String = call_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect();
    if token.is_empty() {
        "call".to_owned()
    } else {
        token
    }
}

/// Shell assignments, one a line: `NAME=value` (values quoted already).
pub fn assignments(settings: &[(&str, String)]) -> String {
    settings
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The helpers an apply script starts with, once `BUDGET_MS` (how long it
/// may run in all) is set: `dcp_now` (ms), `dcp_left` (ms of the budget
/// left), `dcp_say` (a step), `dcp_fail <code> <lines>`, `dcp_nap`.
pub const HELPERS: &str = r#"dcp_now() {
  read -r up _ < /proc/uptime
  c=${up#*.}; c=${c#0}
  echo $(( ${up%%.*} * 1000 + ${c:-0} * 10 ))
}
T0=$(dcp_now)
dcp_left() { echo $(( T0 + BUDGET_MS - $(dcp_now) )); }
dcp_say() { printf '%s\n' "$*"; }
dcp_fail() { code=$1; shift; printf '%s\n' "$@" >&2; exit "$code"; }
dcp_nap() { sleep 0.05 2>/dev/null || sleep 1; }"#;

/// The apply script's traps and lock, once `dcp_exit` (run at exit: it
/// removes the lock when `locked` is 1), `LOCK` and `RESERVE_MS` are set:
/// one change at a time per `balancer` (`nginx`, `HAProxy`), a lock whose
/// process is gone is stale, a lock held past `wait_ms` (shell arithmetic)
/// or too close to the budget's end fails with exit code 13.
pub fn take_lock(balancer: &str, wait_ms: &str) -> String {
    format!(
        r#"trap dcp_exit EXIT
trap 'exit 143' TERM INT HUP
# One change at a time per {balancer}; a lock whose process is gone is stale.
lock_until=$(( $(dcp_now) + {wait_ms} ))
while ! mkdir "$LOCK" 2>/dev/null; do
  [ -d "$LOCK" ] || dcp_fail 14 "cannot create the lock $LOCK"
  holder=$(cat "$LOCK/pid" 2>/dev/null) || holder=''
  if [ -n "$holder" ] && [ ! -d "/proc/$holder" ]; then
    rm -rf "$LOCK"
    dcp_say "removed a stale lock of process $holder"
    continue
  fi
  if [ "$(dcp_now)" -ge "$lock_until" ] || [ "$(dcp_left)" -le "$RESERVE_MS" ]; then
    dcp_fail 13 "another change to this {balancer} is in progress (lock $LOCK, process ${{holder:-unknown}})"
  fi
  dcp_nap
done
locked=1
echo $$ > "$LOCK/pid"
waited=$(( $(dcp_now) - T0 ))
[ "$waited" -ge 100 ] && dcp_say "waited $waited ms for another change to this {balancer}""#
    )
}

/// A script's stdout lines, without the host channel's marks (lines that
/// start with `\x1e`, such as `\x1edcp-pid <pid>`).
pub fn lines(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| !l.starts_with('\x1e')).collect()
}

/// What a read script said the node lacks (`dcp-check <what>`), if it did.
pub fn lacking<'a>(lines: &[&'a str]) -> Option<&'a str> {
    lines.iter().find_map(|l| l.strip_prefix("dcp-check "))
}

/// Checks a read script finished (exit 0, `dcp-read-done`); else reading
/// `what` failed, `said` being its stderr worth reading.
pub fn read_done(
    lines: &[&str],
    exit_code: Option<i32>,
    what: &str,
    said: &str,
) -> Result<(), Failure> {
    if exit_code == Some(0) && lines.contains(&"dcp-read-done") {
        return Ok(());
    }
    Err(Failure::new(
        Kind::Internal,
        format!(
            "reading {what} failed (exit {}): {said}",
            exit_code.map_or_else(|| "by signal".to_owned(), |c| c.to_string()),
        ),
        false,
    ))
}

/// The last `n` of `lines`, each run of equal lines once, joined by
/// newlines.
pub fn last<S: AsRef<str> + PartialEq>(mut lines: Vec<S>, n: usize) -> String {
    lines.dedup();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join("\n")
}

/// An apply script's steps (its non-empty stdout lines) and its
/// `dcp-result …` line, if it got that far.
pub fn steps(stdout: &str) -> (Vec<String>, Option<String>) {
    let mut log: Vec<String> = stdout
        .lines()
        .filter(|l| !l.starts_with('\x1e') && !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let result = log
        .iter()
        .position(|l| l.starts_with("dcp-result "))
        .map(|i| log.remove(i));
    (log, result)
}

/// The steps for a failure's message: ` (<label>: a; b)`, or nothing.
pub fn steps_note(log: &[String], label: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" ({label}: {})", log.join("; "))
    }
}

/// An apply script that exited 0 without saying what it did.
pub fn no_result(steps: &str) -> Failure {
    Failure::new(
        Kind::Internal,
        format!("the change script ended without a result{steps}"),
        false,
    )
}

/// The failure for the exit codes every apply script gives the same
/// meaning — 13 another change holds the lock, 143 (or a signal) the
/// script was stopped — and for a code the plugin does not know; `said`
/// is its stderr worth reading, `steps` from [`steps_note`].
pub fn other_exit(exit_code: Option<i32>, said: String, steps: &str) -> Failure {
    match exit_code {
        Some(13) => Failure::new(Kind::Conflict, said, true),
        Some(143) | None => Failure::new(
            Kind::Timeout,
            format!("the change script was stopped before it finished{steps}"),
            true,
        ),
        Some(code) => Failure::new(
            Kind::Internal,
            format!("the change script failed (exit {code}): {said}{steps}"),
            false,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_any_text() {
        assert_eq!(quote("/etc/nginx"), "'/etc/nginx'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote("a'b $(x) `y` \"z\"")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a'b $(x) `y` \"z\"");
        assert_eq!(token("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").len(), 32);
        assert_eq!(token("--"), "call");
        assert_eq!(token("a/b c'd"), "abcd");
    }

    #[test]
    fn the_shared_shell_is_valid_sh() {
        let script = format!(
            "{}\nBUDGET_MS=1000 RESERVE_MS=10 LOCK=/x locked=0\ndcp_exit() {{ :; }}\n{}\n",
            HELPERS,
            take_lock("nginx", "TIMEOUT_MS")
        );
        assert!(script.contains("another change to this nginx is in progress"));
        assert!(script.contains("${holder:-unknown}"));
        crate::testing::assert_valid_sh(&script);
    }

    #[test]
    fn answers_are_read() {
        let stdout = "\x1edcp-pid 1\ndcp-check conf\ndcp-read-done\n";
        let lines = lines(stdout);
        assert_eq!(lacking(&lines), Some("conf"));
        read_done(&lines, Some(0), "x", "").unwrap();
        assert_eq!(
            read_done(&lines, None, "the node", "boom")
                .unwrap_err()
                .message,
            "reading the node failed (exit by signal): boom"
        );
        assert_eq!(last(vec!["a", "b", "b", "c"], 2), "b\nc");
        let (log, result) = steps("\x1ex\nwrote /a\n\ndcp-result changed\n");
        assert_eq!(log, ["wrote /a"]);
        assert_eq!(result.as_deref(), Some("dcp-result changed"));
        assert_eq!(steps_note(&log, "steps"), " (steps: wrote /a)");
        assert_eq!(steps_note(&[], "steps"), "");
    }

    #[test]
    fn shared_exit_codes_have_one_meaning() {
        crate::testing::assert_exit_codes(
            |code, stdout, stderr| match (code, steps(stdout)) {
                (Some(0), (_, Some(_))) => Ok(()),
                (Some(0), (log, None)) => Err(no_result(&steps_note(&log, "steps"))),
                _ => Err(other_exit(code, stderr.to_owned(), "")),
            },
            &[],
        );
    }
}
