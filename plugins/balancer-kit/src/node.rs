//! A balancer node reached over SSH: the component's is the host's `ssh`
//! import (`guest`), the tests' a local shell (`testing`).

use crate::{Failure, Kind, script, upstream::Upstream};

/// What a command on the node produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The exit code; `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Whether output was cut at the cap.
    pub truncated: bool,
}

/// One balancer node, reached over SSH.
pub trait Node {
    /// Runs `command` with `stdin`.
    fn exec(&self, command: &str, stdin: &[u8], timeout_ms: u32) -> Result<Output, Failure>;
    /// Writes a file with `mode`.
    fn put_file(&self, path: &str, content: &[u8], mode: u32) -> Result<(), Failure>;
    /// Milliseconds left before the call's deadline.
    fn time_left_ms(&self) -> u64;
}

/// A change to make on a node: with a plugin's settings `config`, make it
/// serve `upstreams`; `token` names the call's uploads.
pub struct Change<'a, C> {
    /// The plugin's settings.
    pub config: &'a C,
    /// What the node must serve.
    pub upstreams: &'a [Upstream],
    /// The node.
    pub node: &'a dyn Node,
    /// A call-unique suffix for uploaded files.
    pub token: &'a str,
}

impl<C> Clone for Change<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for Change<'_, C> {}

/// The longest a read script may take.
pub const READ_TIMEOUT_MS: u64 = 15_000;
/// Time kept for the plugin to answer after an apply script.
pub const ANSWER_MS: u64 = 1_500;

/// Output as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Milliseconds as a command's timeout.
pub fn timeout(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX)
}

/// What a script answered, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The exit code; `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Answer {
    /// An answer: `exit_code`, `stdout`, `stderr`.
    pub fn new(exit_code: Option<i32>, stdout: &str, stderr: &str) -> Self {
        Self {
            exit_code,
            stdout: stdout.to_owned(),
            stderr: stderr.to_owned(),
        }
    }
}

/// Runs `script` (with [`script::EXEC`]) for `timeout_ms` at most.
pub fn run(node: &dyn Node, script: &str, timeout_ms: u64) -> Result<Answer, Failure> {
    let out = node.exec(script::EXEC, script.as_bytes(), timeout(timeout_ms))?;
    Ok(Answer {
        exit_code: out.exit_code,
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
    })
}

/// Runs a read script about the node's `what` (`files`), for
/// [`READ_TIMEOUT_MS`] at most: its answer (refused when cut at the output
/// cap), and the log line saying how long it took.
pub fn read(node: &dyn Node, script: &str, what: &str) -> Result<(Answer, String), Failure> {
    let started = node.time_left_ms();
    let out = node.exec(
        script::EXEC,
        script.as_bytes(),
        timeout(READ_TIMEOUT_MS.min(started)),
    )?;
    if out.truncated {
        return Err(Failure::new(
            Kind::Internal,
            format!("the node's answer about its {what} was cut at the output cap"),
            false,
        ));
    }
    let took = started.saturating_sub(node.time_left_ms());
    let answer = Answer {
        exit_code: out.exit_code,
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
    };
    Ok((answer, format!("read the node's {what} in {took} ms")))
}

/// Removes uploaded files after a failure before the apply script (which
/// otherwise removes them itself); best effort.
pub fn remove(node: &dyn Node, paths: &[String]) {
    let quoted: Vec<String> = paths.iter().map(|p| script::quote(p)).collect();
    let _ = node.exec(
        script::EXEC,
        format!("rm -f {}", quoted.join(" ")).as_bytes(),
        5_000,
    );
}
