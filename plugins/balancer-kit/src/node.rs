//! A balancer node reached over SSH: the component's is the host's `ssh`
//! import (`guest`), the tests' a local shell (`testing`).

use crate::{Failure, script};

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

/// Output as text (lossy).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Milliseconds as a command's timeout.
pub fn timeout(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX)
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
