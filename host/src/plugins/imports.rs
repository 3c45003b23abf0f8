//! What a plugin may ask of the host: the `log`, `context`, `http`,
//! `secrets` and `ssh` imports, each checked against the call's grants and
//! capped by its limits.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use hmac::{Hmac, Mac};
use reqwest::Url;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView, cli::IsTerminal, cli::StdoutStream};

use super::{
    Grants, Limits,
    bindings::dcp::plugin::{context, http, log, secrets, ssh, types},
    footprint::{MAX_CORE_INSTANCES, MAX_MEMORIES, MAX_TABLES},
    network::non_public,
};
use crate::plugins::{ErrorKind, PluginError};

/// The per-call state of a store.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) meter: Meter,
    call: CallInfo,
    grants: Arc<Grants>,
    log_lines: usize,
    log_bytes: usize,
    pub(crate) logs_dropped: usize,
    pub(crate) stderr: CappedOutput,
    /// The first capability the plugin was refused, if any.
    pub(crate) denied: Option<String>,
}

/// Who is calling what, for logs and `context`.
#[derive(Debug, Clone)]
pub(crate) struct CallInfo {
    pub(crate) plugin: String,
    pub(crate) call: &'static str,
    pub(crate) call_id: String,
    pub(crate) deadline: tokio::time::Instant,
    pub(crate) deadline_unix_ms: u64,
}

impl HostState {
    pub(crate) fn new(call: CallInfo, grants: Arc<Grants>) -> Self {
        let limits = grants.limits;
        let stderr = CappedOutput::new(limits.stderr_bytes);
        // No preopened directories, no environment, no inherited stdio, no
        // sockets: WASI here is only clocks, random and captured output.
        let wasi = WasiCtx::builder()
            .stdout(CappedOutput::new(0))
            .stderr(stderr.clone())
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            meter: Meter::new(limits.memory_bytes),
            call,
            grants,
            log_lines: 0,
            log_bytes: 0,
            logs_dropped: 0,
            stderr,
            denied: None,
        }
    }

    fn limits(&self) -> Limits {
        self.grants.limits
    }

    fn deny(&mut self, message: String) -> PluginError {
        tracing::warn!(plugin = %self.call.plugin, call = self.call.call, "capability denied: {message}");
        self.denied.get_or_insert_with(|| message.clone());
        plugin_error(ErrorKind::Unauthorized, message, false)
    }

    fn remaining(&self) -> Duration {
        self.call
            .deadline
            .saturating_duration_since(tokio::time::Instant::now())
    }
}

pub(crate) fn plugin_error(
    kind: ErrorKind,
    message: impl Into<String>,
    retryable: bool,
) -> PluginError {
    PluginError {
        kind,
        message: message.into(),
        provider_code: None,
        request_id: None,
        retryable,
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps the memory of a call — all linear memories and tables of all its
/// instances together, not each alone — and the number of instances,
/// memories and tables it creates; remembers whether the cap was hit, so a
/// failed call can be reported as out-of-memory rather than as a crash.
pub(crate) struct Meter {
    limit: usize,
    /// Bytes granted so far. A growth granted here that the memory itself
    /// then refuses (past its declared maximum) still counts: wasmtime does
    /// not say which growth failed, and erring this way never lets a call
    /// past its cap.
    used: usize,
    pub(crate) hit: bool,
}

impl Meter {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            used: 0,
            hit: false,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Grants `bytes` more, or fails the call (a trap, not a failed
    /// `memory.grow`: a guest allocator would only abort less clearly).
    fn grow(&mut self, what: &str, bytes: usize) -> wasmtime::Result<bool> {
        let total = self.used.saturating_add(bytes);
        if total > self.limit {
            self.hit = true;
            return Err(wasmtime::format_err!(
                "memory limit: growing a {what} would bring the call's memories and tables to {total} bytes, the limit is {}",
                self.limit
            ));
        }
        self.used = total;
        Ok(true)
    }
}

impl wasmtime::ResourceLimiter for Meter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A new memory arrives here too, growing from 0 to its initial size.
        self.grow("linear memory", desired.saturating_sub(current))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Each table element takes a pointer's worth of host memory.
        let elements = desired.saturating_sub(current);
        self.grow(
            "table",
            elements.saturating_mul(std::mem::size_of::<usize>()),
        )
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES as usize
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES as usize
    }

    fn tables(&self) -> usize {
        MAX_TABLES as usize
    }
}

/// Keeps the first `cap` bytes written and silently drops the rest, so a
/// plugin printing without end neither fills the host's memory nor dies.
#[derive(Debug, Clone)]
pub(crate) struct CappedOutput {
    inner: Arc<Mutex<(Vec<u8>, bool)>>,
    cap: usize,
}

impl CappedOutput {
    fn new(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new((Vec::new(), false))),
            cap,
        }
    }

    /// What was kept, lossily decoded, and whether anything was dropped.
    pub(crate) fn contents(&self) -> (String, bool) {
        let guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (String::from_utf8_lossy(&guard.0).into_owned(), guard.1)
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let room = self.cap.saturating_sub(guard.0.len());
        let kept = buf.len().min(room);
        guard.0.extend_from_slice(&buf[..kept]);
        if kept < buf.len() {
            guard.1 = true;
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Text from a plugin, safe for a log line: control characters (terminal
/// escapes, newlines that would forge lines) become spaces.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl types::Host for HostState {}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) {
        let size = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let limits = self.limits();
        if self.log_lines >= limits.log_lines || self.log_bytes + size > limits.log_bytes {
            if self.logs_dropped == 0 {
                tracing::warn!(plugin = %self.call.plugin, call = self.call.call, "log limit reached; further lines of this call are dropped");
            }
            self.logs_dropped += 1;
            return;
        }
        self.log_lines += 1;
        self.log_bytes += size;
        let message = sanitize(&message);
        let fields = fields
            .iter()
            .map(|(k, v)| format!("{}={}", sanitize(k), sanitize(v)))
            .collect::<Vec<_>>()
            .join(" ");
        let plugin = &self.call.plugin;
        let call = self.call.call;
        let call_id = &self.call.call_id;
        match level {
            log::Level::Trace => tracing::trace!(%plugin, call, %call_id, %fields, "{message}"),
            log::Level::Debug => tracing::debug!(%plugin, call, %call_id, %fields, "{message}"),
            log::Level::Info => tracing::info!(%plugin, call, %call_id, %fields, "{message}"),
            log::Level::Warn => tracing::warn!(%plugin, call, %call_id, %fields, "{message}"),
            log::Level::Error => tracing::error!(%plugin, call, %call_id, %fields, "{message}"),
        }
    }
}

impl context::Host for HostState {
    async fn call_id(&mut self) -> String {
        self.call.call_id.clone()
    }

    async fn deadline_unix_ms(&mut self) -> u64 {
        self.call.deadline_unix_ms
    }

    async fn config(&mut self) -> String {
        self.grants.config.clone()
    }
}

impl http::Host for HostState {
    async fn send(&mut self, request: http::Request) -> Result<http::Response, PluginError> {
        let url = Url::parse(&request.url).map_err(|e| {
            plugin_error(
                ErrorKind::InvalidInput,
                format!("invalid URL {:?}: {e}", request.url),
                false,
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.deny(format!(
                "scheme {:?} is not allowed; only http and https",
                url.scheme()
            )));
        }
        let Some(grant) = self
            .grants
            .origins
            .iter()
            .find(|g| g.matches(&url))
            .cloned()
        else {
            let origin = url.origin().ascii_serialization();
            return Err(self.deny(format!("origin {origin} is not granted to this plugin")));
        };
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        // Check where the name really points, then connect only there, so
        // a name cannot be re-resolved to a forbidden address in between.
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| {
                plugin_error(
                    ErrorKind::Unavailable,
                    format!("cannot resolve {host}: {e}"),
                    true,
                )
            })?
            .collect();
        let forbidden = addrs
            .iter()
            .find_map(|a| non_public(a.ip()).map(|why| (a, why)))
            .filter(|_| !grant.allow_private);
        if let Some((addr, why)) = forbidden {
            return Err(self.deny(format!(
                "{host} resolves to {} ({why}); the grant for {grant} does not allow non-public addresses",
                addr.ip()
            )));
        }
        // The call's own deadline is the sandbox's to enforce (as a Timeout of
        // the call); the request only times out first when the plugin asked
        // for a shorter limit.
        let past_deadline = self.remaining() + Duration::from_millis(250);
        let timeout = request.timeout_ms.map_or(past_deadline, |ms| {
            Duration::from_millis(u64::from(ms)).min(past_deadline)
        });
        // No proxy, whatever HTTP(S)_PROXY say: a proxy would resolve the
        // name itself and reach whatever it points to there, past the check.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .resolve_to_addrs(&host, &addrs)
            .timeout(timeout)
            .build()
            .map_err(|e| plugin_error(ErrorKind::Internal, e.to_string(), false))?;
        let method = match request.method {
            http::Method::Get => reqwest::Method::GET,
            http::Method::Head => reqwest::Method::HEAD,
            http::Method::Post => reqwest::Method::POST,
            http::Method::Put => reqwest::Method::PUT,
            http::Method::Patch => reqwest::Method::PATCH,
            http::Method::Delete => reqwest::Method::DELETE,
        };
        let mut builder = client.request(method, url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let mut response = builder.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unavailable
            };
            plugin_error(kind, format!("HTTP request failed: {e}"), true)
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let cap = self.limits().http_response_bytes;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            plugin_error(
                ErrorKind::Unavailable,
                format!("reading the response failed: {e}"),
                true,
            )
        })? {
            if body.len() + chunk.len() > cap {
                return Err(plugin_error(
                    ErrorKind::Unavailable,
                    format!("the response is larger than this plugin's limit of {cap} bytes"),
                    false,
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(http::Response {
            status,
            headers,
            body,
        })
    }
}

/// A credential handle given to a plugin: only the name; the secret stays in [`Grants`].
#[derive(Debug)]
#[allow(unreachable_pub)] // re-exported by the generated bindings
pub struct Credential {
    name: String,
}

impl secrets::Host for HostState {
    async fn open(&mut self, name: String) -> Result<Resource<Credential>, PluginError> {
        if !self.grants.secrets.contains_key(&name) {
            return Err(self.deny(format!("credential {name:?} is not granted to this call")));
        }
        self.table
            .push(Credential { name })
            .map_err(|e| plugin_error(ErrorKind::Internal, e.to_string(), false))
    }
}

impl HostState {
    /// The HMAC of `data` keyed with the handle's secret and `key_suffix`;
    /// empty for a handle that is not (or no longer) granted.
    fn credential_hmac(
        &self,
        handle: &Resource<Credential>,
        alg: secrets::HmacAlg,
        key_suffix: &str,
        data: &[u8],
    ) -> Vec<u8> {
        let Some(secret) = self
            .table
            .get(handle)
            .ok()
            .and_then(|c| self.grants.secrets.get(&c.name))
        else {
            return Vec::new();
        };
        let key = [secret.secret.as_bytes(), key_suffix.as_bytes()].concat();
        match alg {
            secrets::HmacAlg::Sha1 => Hmac::<sha1::Sha1>::new_from_slice(&key)
                .map(|mac| mac.chain_update(data).finalize().into_bytes().to_vec())
                .unwrap_or_default(),
            secrets::HmacAlg::Sha256 => Hmac::<sha2::Sha256>::new_from_slice(&key)
                .map(|mac| mac.chain_update(data).finalize().into_bytes().to_vec())
                .unwrap_or_default(),
        }
    }
}

impl secrets::HostCredential for HostState {
    async fn key_id(&mut self, handle: Resource<Credential>) -> String {
        self.table
            .get(&handle)
            .ok()
            .and_then(|c| self.grants.secrets.get(&c.name))
            .map(|s| s.key_id.clone())
            .unwrap_or_default()
    }

    async fn hmac(
        &mut self,
        handle: Resource<Credential>,
        alg: secrets::HmacAlg,
        data: Vec<u8>,
    ) -> Vec<u8> {
        self.credential_hmac(&handle, alg, "", &data)
    }

    async fn hmac_with_key_suffix(
        &mut self,
        handle: Resource<Credential>,
        alg: secrets::HmacAlg,
        key_suffix: String,
        data: Vec<u8>,
    ) -> Vec<u8> {
        self.credential_hmac(&handle, alg, &key_suffix, &data)
    }

    async fn drop(&mut self, handle: Resource<Credential>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

/// A session handle given to a plugin: only the target id.
#[derive(Debug)]
#[allow(unreachable_pub)] // re-exported by the generated bindings
pub struct SshSession {
    target: String,
}

impl ssh::Host for HostState {
    async fn connect(&mut self, target: String) -> Result<Resource<SshSession>, PluginError> {
        if !self.grants.targets.contains(&target) {
            return Err(self.deny(format!("target {target:?} was not given to this call")));
        }
        if self.grants.ssh.is_none() {
            return Err(plugin_error(
                ErrorKind::Unavailable,
                "no SSH channel is available to this call",
                false,
            ));
        }
        self.table
            .push(SshSession { target })
            .map_err(|e| plugin_error(ErrorKind::Internal, e.to_string(), false))
    }
}

impl ssh::HostSession for HostState {
    async fn exec(
        &mut self,
        handle: Resource<SshSession>,
        command: String,
        stdin: Option<Vec<u8>>,
        timeout_ms: u32,
    ) -> Result<ssh::ExecOutput, PluginError> {
        let (channel, target) = self.session(&handle)?;
        let timeout = Duration::from_millis(u64::from(timeout_ms)).min(self.remaining());
        let out = channel
            .exec(
                &target,
                &command,
                stdin,
                timeout,
                self.limits().ssh_output_bytes,
            )
            .await?;
        Ok(ssh::ExecOutput {
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
            truncated: out.truncated,
        })
    }

    async fn put_file(
        &mut self,
        handle: Resource<SshSession>,
        path: String,
        content: Vec<u8>,
        mode: u32,
    ) -> Result<(), PluginError> {
        let (channel, target) = self.session(&handle)?;
        channel.put_file(&target, &path, content, mode).await
    }

    async fn drop(&mut self, handle: Resource<SshSession>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl HostState {
    fn session(
        &self,
        handle: &Resource<SshSession>,
    ) -> Result<(Arc<dyn super::SshChannel>, String), PluginError> {
        let target = self
            .table
            .get(handle)
            .map_err(|e| plugin_error(ErrorKind::Internal, e.to_string(), false))?
            .target
            .clone();
        let channel = self.grants.ssh.clone().ok_or_else(|| {
            plugin_error(
                ErrorKind::Unavailable,
                "no SSH channel is available to this call",
                false,
            )
        })?;
        Ok((channel, target))
    }
}

/// Milliseconds since the Unix epoch of a moment `after` from now.
pub(crate) fn unix_ms_after(after: Duration) -> u64 {
    (SystemTime::now() + after)
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_log_lines() {
        assert_eq!(
            sanitize("ok\n2026 INFO fake\x1b[31m"),
            "ok 2026 INFO fake [31m"
        );
    }
}
