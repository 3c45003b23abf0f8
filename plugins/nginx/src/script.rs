//! The shell the plugin runs on a node, and reading its answers.
//!
//! Two scripts, both POSIX `sh` that also runs under busybox (Linux: the
//! reload is watched through `/proc`):
//!
//! - the read script reports each file's state (missing, or its sha256 and
//!   first line) and whether an earlier change was cut off;
//! - the apply script stages uploaded candidates under a lock, runs
//!   `nginx -t`, reloads gracefully, verifies the reload, and restores the
//!   previous files on any failure (its exit code says which).
//!
//! Every value placed in shell text is a checked path (`[A-Za-z0-9._/-]`)
//! or a number, and is single-quoted all the same.
//!
//! Candidates and backups sit beside the live file under hidden names
//! (`.<name>.dcp-new.<call>`, `.<name>.dcp-prev`): the same directory makes
//! the swap an atomic rename, and nginx's `include dir/*` skips dot files,
//! so a staged or saved copy is never loaded with the live one.

use balancer_kit::{
    node::Answer,
    script::{self as kit, assignments, quote},
};

use crate::{Failure, Kind, config::Config};

/// Milliseconds the apply script keeps for restoring and reloading the
/// previous files after a failed reload.
const RESERVE_MS: u64 = 2000;

fn split(live: &str) -> (&str, &str) {
    live.rsplit_once('/').unwrap_or(("", live))
}

/// Where the candidate for `live` is uploaded (the apply script derives
/// the same name).
pub(crate) fn candidate(live: &str, token: &str) -> String {
    let (dir, name) = split(live);
    format!("{dir}/.{name}.dcp-new.{token}")
}

/// Where the previous `live` is kept while a change is checked (named by
/// the apply script; the tests look for it).
#[cfg(test)]
pub(crate) fn backup(live: &str) -> String {
    let (dir, name) = split(live);
    format!("{dir}/.{name}.dcp-prev")
}

/// The lock directory that serialises changes to one nginx.
pub(crate) fn lock(config: &Config) -> String {
    config.under_prefix(".dcp-lock")
}

/// The marker present while files are in place but their reload is not
/// verified yet: found by a later call, it means a change was cut off.
pub(crate) fn marker(config: &Config) -> String {
    config.under_prefix(".dcp-unverified")
}

/// The read script: checks the node has the prefix, the binary and the
/// main file, creates the files' directories (uploads need them), then one
/// line per file: `<i> missing`, `<i> other` or `<i> file <sha256|-> <first line>`.
pub(crate) fn read_script(config: &Config, files: &[String], dirs: &[String]) -> String {
    let mut script = format!(
        "umask 022\n\
         [ -d {prefix} ] || {{ echo 'dcp-check prefix'; exit 0; }}\n\
         [ -f {nginx} ] && [ -x {nginx} ] || {{ echo 'dcp-check nginx'; exit 0; }}\n\
         [ -f {conf} ] || {{ echo 'dcp-check conf'; exit 0; }}\n",
        prefix = quote(&config.prefix),
        nginx = quote(&config.nginx),
        conf = quote(&config.conf_path()),
    );
    for dir in dirs {
        script.push_str(&format!(
            "mkdir -p {d} || {{ echo 'dcp-check mkdir {d}'; exit 0; }}\n",
            d = quote(dir)
        ));
    }
    script.push_str(
        r#"dcp_read() {
  if [ -f "$2" ]; then
    h=$(sha256sum < "$2" 2>/dev/null) || h=''
    h=${h%% *}
    printf '%s file %s %s\n' "$1" "${h:--}" "$(head -n 1 "$2" | cut -c 1-300)"
  elif [ -e "$2" ] || [ -L "$2" ]; then
    printf '%s other\n' "$1"
  else
    printf '%s missing\n' "$1"
  fi
}
"#,
    );
    for (i, file) in files.iter().enumerate() {
        script.push_str(&format!("dcp_read {i} {}\n", quote(file)));
    }
    script.push_str(&format!(
        "[ -e {} ] && echo dcp-pending\necho dcp-read-done\n",
        quote(&marker(config))
    ));
    script
}

/// A file's state on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Live {
    /// Absent.
    Missing,
    /// A regular file (or a link to one).
    File {
        /// Its sha256 in hex; `None` when the node has no `sha256sum`.
        sha256: Option<String>,
        /// Its first line, cut at 300 characters.
        first_line: String,
    },
    /// Something else: a directory, a broken link.
    Other,
}

/// What the read script found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Read {
    /// Per file, in order.
    pub(crate) files: Vec<Live>,
    /// An earlier change was cut off after its files were in place.
    pub(crate) pending: bool,
}

/// Reads the read script's answer about `paths`.
pub(crate) fn parse_read(config: &Config, paths: &[String], out: &Answer) -> Result<Read, Failure> {
    let (exit_code, stderr) = (out.exit_code, out.stderr.as_str());
    let lines = kit::lines(&out.stdout);
    if let Some(check) = kit::lacking(&lines) {
        let message = match check {
            "prefix" => format!("conf_dir: {} is not a directory on the node", config.prefix),
            "nginx" => format!("nginx: {} is not an executable on the node", config.nginx),
            "conf" => format!("conf: {} is not a file on the node", config.conf_path()),
            other => format!(
                "cannot create {} on the node: {}",
                other.trim_start_matches("mkdir "),
                stderr.trim()
            ),
        };
        return Err(Failure::invalid(message));
    }
    kit::read_done(&lines, exit_code, "the node's files", &tail(stderr, 5))?;
    let mut files = vec![None; paths.len()];
    for line in &lines {
        let mut parts = line.splitn(4, ' ');
        let (Some(index), Some(state)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(slot) = index.parse::<usize>().ok().and_then(|i| files.get_mut(i)) else {
            continue;
        };
        *slot = Some(match state {
            "missing" => Live::Missing,
            "file" => {
                let sha256 = parts
                    .next()
                    .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(str::to_ascii_lowercase);
                Live::File {
                    sha256,
                    first_line: parts.next().unwrap_or("").to_owned(),
                }
            }
            _ => Live::Other,
        });
    }
    let files = files
        .into_iter()
        .zip(paths)
        .map(|(live, path)| {
            live.ok_or_else(|| {
                Failure::new(
                    Kind::Internal,
                    format!("the node said nothing about {path}"),
                    false,
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Read {
        files,
        pending: lines.contains(&"dcp-pending"),
    })
}

/// One file the apply script puts in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stage {
    /// The live path, absolute.
    pub(crate) live: String,
    /// For an upstream: its revision; the script keeps a live file whose
    /// revision is higher (checked again under the lock).
    pub(crate) revision: Option<u64>,
}

/// The apply script's fixed part; `@SETTINGS@`, `@HELPERS@`, `@LOCK@` and
/// `@STAGES@` are filled in.
const APPLY: &str = r##"set -u
umask 022
@SETTINGS@
@HELPERS@
dcp_prev() { printf '%s/.%s.dcp-prev' "${1%/*}" "${1##*/}"; }
dcp_list() { echo $* | tr ' ' ','; }
# Whether revision $1 > $2, both digit strings (any length).
dcp_newer() {
  if [ "${#1}" -ne "${#2}" ]; then [ "${#1}" -gt "${#2}" ]; return; fi
  [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort | tail -n 1)" = "$1" ]
}
# The children of process $1. The kernel lists them (a single-threaded
# master forks from its main thread); that costs nothing, where reading
# every process's stat costs a busy host's CPU at each look of a reload's
# wait. Without that file (kernels before 3.5, or built without it):
# /proc/<pid>/stat of every process (busybox has no pgrep -P nor ps
# --ppid); the command name may hold spaces and parentheses, so fields are
# counted after its last ") ".
dcp_children() {
  if [ -r "/proc/$1/task/$1/children" ]; then
    cat "/proc/$1/task/$1/children" 2>/dev/null
    return 0
  fi
  cat /proc/[0-9]*/stat 2>/dev/null |
    awk -v m="$1" '{ p = $1; sub(/^.*\) /, ""); if ($2 == m) printf "%s ", p }'
}
state=idle locked=0 replaced='' created='' written='' staged=0
dcp_restore() {
  bad=''
  for f in $replaced; do mv -f "$(dcp_prev "$f")" "$f" || bad="$bad $f"; done
  for f in $created; do rm -f "$f" || bad="$bad $f"; done
  replaced='' created='' state=restored
  if [ -z "$bad" ]; then
    rm -f "$MARK"
    dcp_say "restored the previous files"
  else
    printf 'could not restore:%s\n' "$bad" >&2
  fi
}
dcp_exit() {
  rc=$?
  [ "$state" = staged ] && dcp_restore
  for n in $CANDIDATES; do rm -f "$n"; done
  [ "$locked" = 1 ] && rm -rf "$LOCK"
  exit "$rc"
}
@LOCK@
dcp_stage() {
  f=$1
  n="${f%/*}/.${f##*/}.dcp-new.$TOKEN"
  [ -f "$n" ] || dcp_fail 14 "the new $f was not uploaded ($n is missing)"
  if [ -n "${2:-}" ] && [ -f "$f" ]; then
    live=$(head -n 1 "$f" | sed -n 's/^# Managed by DCP: upstream [A-Za-z0-9_-]*, revision \([0-9][0-9]*\)\..*$/\1/p')
    if [ -n "$live" ] && dcp_newer "$live" "$2"; then
      rm -f "$n"
      dcp_say "kept $f: the node serves revision $live, newer than $2"
      return 0
    fi
  fi
  if [ "$state" = idle ]; then
    : > "$MARK" || dcp_fail 14 "cannot write $MARK"
    state=staged
  fi
  if [ -e "$f" ] || [ -L "$f" ]; then
    cp -Pp "$f" "$(dcp_prev "$f")" || dcp_fail 14 "cannot back up $f"
    replaced="$replaced $f"
  else
    created="$created $f"
  fi
  mv -f "$n" "$f" || dcp_fail 14 "cannot move the new $f into place"
  staged=$(( staged + 1 ))
  written="$written $f"
  dcp_say "wrote $f"
}
@STAGES@
if [ "$staged" -eq 0 ]; then
  dcp_say "nothing to change"
  echo dcp-result unchanged
  exit 0
fi
# -T: the test, and the whole configuration as nginx loads it (stdout),
# which names every file an include reaches.
t=$(dcp_now)
dump=$("$NGINX" -T ${PREFIX:+-p "$PREFIX"} -c "$CONF_PATH" 2>"$LOCK/test")
rc=$?
out=$(cat "$LOCK/test")
if [ "$rc" -ne 0 ]; then
  [ "$rc" -ge 126 ] && dcp_fail 15 "cannot run $NGINX (exit $rc): $out"
  dcp_fail 10 "$out"
fi
dcp_say "nginx -t: ok ($(( $(dcp_now) - t )) ms)"
for f in $written; do
  printf '%s\n' "$dump" | grep -qxF "# configuration file $f:" ||
    dcp_say "warning: nginx does not load $f (no include in $CONF reaches it)"
done
master=$(cat "$PID_FILE" 2>/dev/null) || master=''
master=$(printf '%s' "$master" | tr -cd '0-9')
if [ -z "$master" ] || [ ! -d "/proc/$master" ]; then
  dcp_fail 12 "nginx is not running: no process for $PID_FILE${master:+ (pid $master)}"
fi
title=$(tr '\000' ' ' < "/proc/$master/cmdline" 2>/dev/null) || title=''
case "$title" in
  *"master process"*) ;;
  *) dcp_fail 12 "$PID_FILE names process $master ($title), not an nginx master" ;;
esac
# Where the master writes why a reload fails: the main file's error_log,
# else the usual places; only what it writes from now on is read.
errlog=$(sed -n 's/^[[:space:]]*error_log[[:space:]][[:space:]]*\([^[:space:];]*\).*$/\1/p' "$CONF_PATH" 2>/dev/null | head -n 1)
case "$errlog" in
  /*) ;;
  '') errlog=/var/log/nginx/error.log; [ -f "$errlog" ] || errlog="${PREFIX:-/usr/share/nginx}/logs/error.log" ;;
  *) errlog="${PREFIX:-/usr/share/nginx}/$errlog" ;;
esac
errlog_size=$(wc -c < "$errlog" 2>/dev/null) || errlog_size=0
errlog_size=$(( errlog_size + 0 ))
dcp_errors() {
  [ -f "$errlog" ] || return 0
  tail -c "+$(( errlog_size + 1 ))" "$errlog" 2>/dev/null | grep -E '\[(emerg|alert|crit)\]' | tail -n 3
}
# Sends HUP and waits until the master has a child that is not in $1 (the
# new generation started: nginx took the configuration) and none of $1 is
# left (the old workers exited, which they do once their requests are
# done), or $2 ms passed. Sets fresh, left, waited.
dcp_reload() {
  kill -HUP "$master" || dcp_fail 12 "cannot signal the nginx master $master"
  w0=$(dcp_now)
  while :; do
    [ -d "/proc/$master" ] || dcp_fail 12 "the nginx master $master exited during the reload"
    fresh='' left=''
    for p in $(dcp_children "$master"); do
      case " $1 " in *" $p "*) left="$left $p" ;; *) fresh="$fresh $p" ;; esac
    done
    waited=$(( $(dcp_now) - w0 ))
    if [ -n "$fresh" ] && [ -z "$left" ]; then return 0; fi
    if [ "$waited" -ge "$2" ]; then return 0; fi
    dcp_nap
  done
}
limit=$(( $(dcp_left) - RESERVE_MS ))
[ "$limit" -gt "$TIMEOUT_MS" ] && limit=$TIMEOUT_MS
[ "$limit" -lt 0 ] && limit=0
old=$(dcp_children "$master")
dcp_reload "$old" "$limit"
if [ -z "$fresh" ]; then
  why=$(dcp_errors)
  dcp_restore
  old=$(dcp_children "$master")
  back=$(( $(dcp_left) - 500 ))
  [ "$back" -gt "$TIMEOUT_MS" ] && back=$TIMEOUT_MS
  [ "$back" -lt 0 ] && back=0
  dcp_reload "$old" "$back"
  if [ -n "$fresh" ]; then
    dcp_say "reloaded the previous files: workers $(dcp_list $old) -> $(dcp_list $fresh)"
  else
    dcp_say "reloading the previous files started no new workers within $back ms"
  fi
  dcp_fail 11 "nginx did not take the new configuration: no new workers within $limit ms of the reload" "$why"
fi
state=done
for f in $replaced; do rm -f "$(dcp_prev "$f")"; done
rm -f "$MARK"
if [ -z "$left" ]; then
  dcp_say "reload: workers $(dcp_list $old) -> $(dcp_list $fresh), drained in $waited ms"
else
  dcp_say "reload: workers $(dcp_list $old) -> $(dcp_list $fresh); $(dcp_list $left) still finishing requests after $waited ms (they exit when done)"
fi
echo dcp-result changed
"##;

/// The apply script for `stages`, whose candidates were uploaded with
/// `token`; `budget_ms` is how long it may run in all.
pub(crate) fn apply_script(
    config: &Config,
    token: &str,
    stages: &[Stage],
    budget_ms: u64,
) -> String {
    let candidates: Vec<String> = stages.iter().map(|s| candidate(&s.live, token)).collect();
    let settings = assignments(&[
        ("NGINX", quote(&config.nginx)),
        (
            "PREFIX",
            quote(config.nginx_prefix.as_deref().unwrap_or("")),
        ),
        ("CONF", quote(&config.conf)),
        ("CONF_PATH", quote(&config.conf_path())),
        ("PID_FILE", quote(&config.pid_file)),
        ("LOCK", quote(&lock(config))),
        ("MARK", quote(&marker(config))),
        ("TOKEN", quote(token)),
        ("CANDIDATES", quote(&candidates.join(" "))),
        ("TIMEOUT_MS", config.reload_timeout_ms.to_string()),
        ("BUDGET_MS", budget_ms.to_string()),
        ("RESERVE_MS", RESERVE_MS.to_string()),
    ]);
    let stages = stages
        .iter()
        .map(|s| match s.revision {
            Some(revision) => format!(
                "dcp_stage {} {}",
                quote(&s.live),
                quote(&revision.to_string())
            ),
            None => format!("dcp_stage {}", quote(&s.live)),
        })
        .collect::<Vec<_>>()
        .join("\n");
    APPLY
        .replace("@SETTINGS@", &settings)
        .replace("@HELPERS@", kit::HELPERS)
        .replace("@LOCK@", &kit::take_lock("nginx", "TIMEOUT_MS"))
        .replace("@STAGES@", &stages)
}

/// The last `n` non-empty lines of `text`, in nginx's words (see
/// [`nginx_words`]) and each once (nginx logs a failed `bind()` per
/// retry), joined by newlines.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(nginx_words)
        .collect();
    kit::last(lines, n)
}

/// A line of nginx's as its console prints it: builds whose error log is
/// stderr (Debian's) print `nginx -t` errors, and the error log has them,
/// as `2024/05/01 10:00:00 [emerg] 12#12: message`; the same error is
/// `nginx: [emerg] message` everywhere else.
pub(crate) fn nginx_words(line: &str) -> String {
    let logged = || {
        let (date, rest) = line.split_once(' ')?;
        let (time, rest) = rest.split_once(' ')?;
        let stamp_ok = date.len() == 10
            && date.bytes().filter(|b| *b == b'/').count() == 2
            && time.len() == 8
            && time.bytes().filter(|b| *b == b':').count() == 2;
        let rest = rest.strip_prefix('[').filter(|_| stamp_ok)?;
        let (level, rest) = rest.split_once("] ")?;
        let (pid, message) = rest.split_once(": ")?;
        pid.bytes()
            .all(|b| b.is_ascii_digit() || b == b'#')
            .then(|| format!("nginx: [{level}] {message}"))
    };
    logged().unwrap_or_else(|| line.to_owned())
}

/// Reads the apply script's outcome: whether anything changed and its log
/// lines, or the failure its exit code stands for.
pub(crate) fn outcome(
    exit_code: Option<i32>,
    stdout: &str,
    stderr: &str,
) -> Result<(bool, Vec<String>), Failure> {
    let (log, result) = kit::steps(stdout);
    let steps = kit::steps_note(&log, "steps");
    let said = tail(stderr, 10);
    let failure = |kind, retryable, message: String| Err(Failure::new(kind, message, retryable));
    match exit_code {
        Some(0) => match result.as_deref() {
            Some("dcp-result changed") => Ok((true, log)),
            Some("dcp-result unchanged") => Ok((false, log)),
            _ => Err(kit::no_result(&steps)),
        },
        Some(10) => failure(
            Kind::InvalidInput,
            false,
            format!(
                "nginx -t refused the configuration; the node keeps its previous files: {said}"
            ),
        ),
        Some(11) => {
            let (headline, why) = said.split_once('\n').unwrap_or((&said, ""));
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(": {}", why.replace('\n', "; "))
            };
            failure(
                Kind::Conflict,
                false,
                format!("{headline}; the node keeps its previous files{why}{steps}"),
            )
        }
        Some(12) => failure(
            Kind::Unavailable,
            true,
            format!("{said}; the node keeps its previous files"),
        ),
        Some(15) => failure(Kind::InvalidInput, false, format!("nginx: {said}")),
        Some(14) => failure(
            Kind::Internal,
            false,
            format!("{said}; the node keeps its previous files{steps}"),
        ),
        _ => Err(kit::other_exit(exit_code, said, &steps)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(r#"{"prefix": "/srv/lb", "pid_file": "/srv/lb/nginx.pid"}"#).unwrap()
    }

    #[test]
    fn staged_and_saved_copies_are_hidden_beside_the_live_file() {
        assert_eq!(
            candidate("/etc/nginx/dcp-upstreams/web.conf", "abc"),
            "/etc/nginx/dcp-upstreams/.web.conf.dcp-new.abc"
        );
        assert_eq!(
            backup("/etc/nginx/sites/app"),
            "/etc/nginx/sites/.app.dcp-prev"
        );
    }

    #[test]
    fn the_read_answer_is_parsed_per_file() {
        let paths = [
            "/a".to_owned(),
            "/b".to_owned(),
            "/c".to_owned(),
            "/d".to_owned(),
        ];
        let hash = "AB".repeat(32);
        let stdout = format!(
            "\x1edcp-pid 12\n0 missing\n1 file {hash} # Managed by DCP: upstream b, revision 3. x\n\
             2 file - \n3 other\ndcp-pending\ndcp-read-done\n"
        );
        let read = parse_read(&config(), &paths, &Answer::new(Some(0), &stdout, "")).unwrap();
        assert!(read.pending);
        assert_eq!(
            read.files,
            [
                Live::Missing,
                Live::File {
                    sha256: Some("ab".repeat(32)),
                    first_line: "# Managed by DCP: upstream b, revision 3. x".to_owned()
                },
                Live::File {
                    sha256: None,
                    first_line: String::new()
                },
                Live::Other,
            ]
        );
        let cut = parse_read(
            &config(),
            &paths,
            &Answer::new(Some(0), "0 missing\ndcp-read-done\n", ""),
        );
        assert!(cut.unwrap_err().message.contains("nothing about /b"));
        let failed = parse_read(&config(), &paths, &Answer::new(Some(1), "", "sh: boom\n"));
        assert!(failed.unwrap_err().message.contains("boom"));
        let missing = parse_read(
            &config(),
            &paths,
            &Answer::new(Some(0), "dcp-check prefix\n", ""),
        );
        let missing = missing.unwrap_err();
        assert_eq!(missing.kind, Kind::InvalidInput);
        assert_eq!(
            missing.message,
            "conf_dir: /srv/lb is not a directory on the node"
        );
    }

    #[test]
    fn the_apply_script_has_every_setting_and_stage_quoted() {
        let script = apply_script(
            &config(),
            "tok",
            &[
                Stage {
                    live: "/srv/lb/dcp-upstreams/web.conf".to_owned(),
                    revision: Some(7),
                },
                Stage {
                    live: "/srv/lb/conf.d/app.conf".to_owned(),
                    revision: None,
                },
            ],
            20_000,
        );
        for line in [
            "NGINX='/usr/sbin/nginx'",
            "PREFIX='/srv/lb'",
            "CONF='nginx.conf'",
            "PID_FILE='/srv/lb/nginx.pid'",
            "LOCK='/srv/lb/.dcp-lock'",
            "CANDIDATES='/srv/lb/dcp-upstreams/.web.conf.dcp-new.tok /srv/lb/conf.d/.app.conf.dcp-new.tok'",
            "TIMEOUT_MS=10000",
            "BUDGET_MS=20000",
            "dcp_stage '/srv/lb/dcp-upstreams/web.conf' '7'",
            "dcp_stage '/srv/lb/conf.d/app.conf'",
        ] {
            assert!(script.lines().any(|l| l == line), "{line}");
        }
        for placeholder in ["@SETTINGS@", "@HELPERS@", "@LOCK@", "@STAGES@"] {
            assert!(!script.contains(placeholder), "{placeholder}");
        }
        balancer_kit::testing::assert_valid_sh(&script);
    }

    #[test]
    fn logged_lines_read_as_the_console_prints_them() {
        assert_eq!(
            nginx_words(
                "2026/12/06 05:31:55 [emerg] 10640#10640: unexpected \"}\" in /srv/lb/nginx.conf:12"
            ),
            "nginx: [emerg] unexpected \"}\" in /srv/lb/nginx.conf:12"
        );
        assert_eq!(
            nginx_words("2026/12/06 05:31:55 [emerg] 1#1: bind() to 10.0.0.1:80 failed (98: x)"),
            "nginx: [emerg] bind() to 10.0.0.1:80 failed (98: x)"
        );
        for line in [
            "nginx: [emerg] unexpected end of file",
            "nginx: configuration file /etc/nginx/nginx.conf test failed",
            "a b [c] d: e",
        ] {
            assert_eq!(nginx_words(line), line);
        }
    }

    #[test]
    fn exit_codes_map_to_kinds() {
        assert_eq!(
            outcome(Some(0), "wrote /a\nnginx -t: ok\ndcp-result changed\n", "").unwrap(),
            (true, vec!["wrote /a".to_owned(), "nginx -t: ok".to_owned()])
        );
        assert!(!outcome(Some(0), "dcp-result unchanged\n", "").unwrap().0);
        let emerg = "nginx: [emerg] unexpected \"}\" in /srv/lb/nginx.conf:12\n\
                     nginx: configuration file /srv/lb/nginx.conf test failed\n";
        let refused =
            outcome(Some(10), "wrote /a\nrestored the previous files\n", emerg).unwrap_err();
        assert_eq!(refused.kind, Kind::InvalidInput);
        assert!(!refused.retryable);
        assert!(
            refused
                .message
                .contains("nginx: [emerg] unexpected \"}\" in /srv/lb/nginx.conf:12")
        );
        let refused = outcome(
            Some(11),
            "restored the previous files\n",
            "nginx did not take the new configuration: no new workers within 900 ms of the reload\n\
             2026/12/06 05:31:55 [emerg] 1#1: bind() to 10.0.0.1:80 failed (98: in use)\n",
        )
        .unwrap_err();
        assert_eq!(
            refused.message,
            "nginx did not take the new configuration: no new workers within 900 ms of the \
             reload; the node keeps its previous files: nginx: [emerg] bind() to 10.0.0.1:80 \
             failed (98: in use) (steps: restored the previous files)"
        );
        balancer_kit::testing::assert_exit_codes(
            outcome,
            &[
                (11, Kind::Conflict, false),
                (12, Kind::Unavailable, true),
                (14, Kind::Internal, false),
                (15, Kind::InvalidInput, false),
            ],
        );
    }
}
