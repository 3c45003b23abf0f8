//! Builds: a project's sources fetched into a context, built by the Docker
//! daemon through its Engine API (bollard — no `docker` CLI), pushed to the
//! registry, with a live log.
//!
//! A build is durable work: it is recorded before it runs, runs in the
//! process that owns it (at most `max_builds` at once, the rest queued),
//! and that process renews its claim; a build whose process stopped is
//! marked interrupted by the next sweep, never left running. Cancelling
//! drops the daemon's build stream, which makes the daemon stop the build
//! and remove its container, and kills any `git` or `svn` it runs.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use bollard::{
    Docker,
    auth::DockerCredentials,
    query_parameters::{BuildImageOptions, PushImageOptions},
};
use dcp_api_types::MediaKind;
use futures_util::StreamExt as _;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::{
    Error, Images,
    projects::{self, Project, Source},
    sources,
};
use crate::{
    config::Config,
    store::{BuildEnd, BuildRecord, NewBuild, Store},
    validate::{self, Checks},
    vault::Vault,
};

/// Builds waiting beyond those running, per process.
const QUEUE_MAX: u64 = 64;
/// The most log one build keeps; beyond it the log says so and the build
/// goes on.
const LOG_MAX: usize = 4 << 20;
/// The biggest build context DCP sends.
const CONTEXT_MAX: u64 = 1 << 30;
/// How often the log reaches the store and its followers.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// How often a process renews its builds and looks for cancels.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A build whose process has not renewed it for this long is interrupted.
const STALE: Duration = Duration::from_secs(30);
/// How long the daemon may take to answer a request's headers (a build's
/// answers only once it has read the whole context).
const DOCKER_TIMEOUT_SECS: u64 = 600;

/// One build this process runs.
#[derive(Debug)]
struct Running {
    cancel: CancellationToken,
    news: watch::Sender<u64>,
}

/// The builds of the image market.
#[derive(Debug)]
pub struct Builds {
    store: Store,
    images: Arc<Images>,
    vault: Arc<Vault>,
    socket: PathBuf,
    work_dir: PathBuf,
    /// This process, as build owners name it.
    owner: String,
    max_builds: u64,
    timeout: Duration,
    permits: Arc<Semaphore>,
    running: Mutex<HashMap<i64, Running>>,
    shutdown: CancellationToken,
}

/// How a build's work ended, short of its record.
enum Outcome {
    Pushed { digest: String, size: Option<u64> },
    Failed(String),
    Cancelled(String),
    Interrupted,
}

impl Builds {
    /// Starts the builds of `config`: interrupts what a stopped DCP left
    /// running, and keeps this process's claim on its own.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn start(
        config: &Config,
        store: Store,
        images: Arc<Images>,
        vault: Arc<Vault>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, Error> {
        let owner = uuid::Uuid::now_v7().to_string();
        // On SQLite one process owns the database: whatever it finds running
        // was left by an earlier run. On PostgreSQL others may be alive.
        let stale = match store.backend() {
            crate::store::Backend::Sqlite => None,
            crate::store::Backend::Postgres => Some(crate::store::now_millis() - millis(STALE)),
        };
        let interrupted = store.interrupt_builds(&owner, stale).await?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "marked builds a stopped DCP left running as interrupted"
            );
        }
        let builds = Arc::new(Self {
            store,
            images,
            vault,
            socket: config.docker_socket.clone(),
            work_dir: config.data_dir.join("builds"),
            owner,
            max_builds: u64::from(config.max_builds.max(1)),
            timeout: Duration::from_secs(config.build_timeout_secs.max(1)),
            permits: Arc::new(Semaphore::new(config.max_builds.max(1) as usize)),
            running: Mutex::new(HashMap::new()),
            shutdown,
        });
        tokio::spawn(Arc::clone(&builds).keep_claims());
        Ok(builds)
    }

    /// Renews this process's builds, acts on cancels asked through another
    /// replica, and interrupts builds of processes that stopped.
    async fn keep_claims(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.shutdown.cancelled() => return,
            }
            match self.store.heartbeat_builds(&self.owner).await {
                Ok(cancelled) => {
                    for id in cancelled {
                        if let Some(r) = self.lock().get(&id) {
                            r.cancel.cancel();
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "renewing builds failed"),
            }
            let before = crate::store::now_millis() - millis(STALE);
            if let Err(e) = self.store.interrupt_builds(&self.owner, Some(before)).await {
                tracing::warn!(error = %e, "interrupting abandoned builds failed");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Running>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a build of `project` and starts it when a builder is free;
    /// with an idempotency key already used on the project, answers that
    /// build (`false`) instead.
    ///
    /// # Errors
    /// A bad tag or argument, a full queue ([`Error::Queue`]), no registry.
    pub async fn queue(
        self: &Arc<Self>,
        project: Project,
        tag: &str,
        build_args: &BTreeMap<String, String>,
        no_cache: bool,
        actor: &str,
        idempotency_key: Option<&str>,
    ) -> Result<(BuildRecord, bool), Error> {
        let mut checks = Checks::default();
        checks.check(validate::image_tag("tag", tag));
        checks.check(projects::build_args("build_args", build_args));
        checks.finish()?;
        // A build that could not push is refused now, not after its work.
        self.images.login()?;
        if self.store.active_builds(&self.owner).await? >= self.max_builds + QUEUE_MAX {
            return Err(Error::Queue(format!(
                "{} builds are running or waiting on this DCP; try again when some end",
                self.max_builds + QUEUE_MAX
            )));
        }
        let mut args = project.build_args.clone();
        args.extend(build_args.clone());
        let args_json = serde_json::to_string(&args).unwrap_or_default();
        let (build, created) = self
            .store
            .create_build(&NewBuild {
                project_id: project.record.id,
                repository: &project.record.repository,
                tag,
                requested_by: actor,
                idempotency_key,
                no_cache,
                build_args: &args_json,
                owner: &self.owner,
            })
            .await?;
        if created {
            let (news, _) = watch::channel(0);
            let cancel = CancellationToken::new();
            self.lock().insert(
                build.id,
                Running {
                    cancel: cancel.clone(),
                    news,
                },
            );
            tokio::spawn(Arc::clone(self).run(build.clone(), project, args, cancel));
        }
        Ok((build, created))
    }

    /// A sign that a build this process runs changed (its state or log),
    /// or `None` when it runs elsewhere or ended.
    #[must_use]
    pub fn watch(&self, id: i64) -> Option<watch::Receiver<u64>> {
        self.lock().get(&id).map(|r| r.news.subscribe())
    }

    /// Cancels a build that has not ended: at once when this process runs
    /// it, else at its process's next heartbeat.
    ///
    /// # Errors
    /// No such build; [`Error::Busy`] when it already ended.
    pub async fn cancel(&self, id: i64, actor: &str) -> Result<BuildRecord, Error> {
        let Some(build) = self.store.request_cancel(id, actor).await? else {
            let build = self.store.build(id).await?;
            return Err(Error::Busy(format!(
                "build {id} already ended ({})",
                build.state
            )));
        };
        if let Some(r) = self.lock().get(&id) {
            r.cancel.cancel();
        }
        Ok(build)
    }

    fn notify(&self, id: i64) {
        if let Some(r) = self.lock().get(&id) {
            r.news.send_modify(|n| *n += 1);
        }
    }

    async fn run(
        self: Arc<Self>,
        build: BuildRecord,
        project: Project,
        args: BTreeMap<String, String>,
        cancel: CancellationToken,
    ) {
        let id = build.id;
        let log = Log::new();
        let flusher = tokio::spawn(Arc::clone(&self).flush_log(id, log.clone()));
        let dir = self.work_dir.join(id.to_string());
        let work = self.work(&build, &project, &args, &dir, &log);
        let outcome = tokio::select! {
            outcome = work => outcome,
            () = cancel.cancelled() => {
                let by = self.store.build(id).await.ok().and_then(|b| b.cancel_requested);
                Outcome::Cancelled(format!("cancelled by {}", by.as_deref().unwrap_or("a user")))
            }
            () = self.shutdown.cancelled() => Outcome::Interrupted,
        };
        let end = match &outcome {
            Outcome::Pushed { digest, size } => {
                log.push(&format!("Pushed {digest}\n"));
                BuildEnd {
                    state: "succeeded",
                    message: "",
                    digest: Some(digest),
                    size: *size,
                }
            }
            Outcome::Failed(message) => {
                log.push(&format!("Failed: {message}\n"));
                BuildEnd {
                    state: "failed",
                    message,
                    ..BuildEnd::default()
                }
            }
            Outcome::Cancelled(message) => {
                log.push(&format!("{message}\n"));
                BuildEnd {
                    state: "cancelled",
                    message,
                    ..BuildEnd::default()
                }
            }
            Outcome::Interrupted => BuildEnd {
                state: "interrupted",
                message: "DCP stopped during this build; nothing was pushed after that",
                ..BuildEnd::default()
            },
        };
        log.close();
        let _ = flusher.await;
        if let Err(e) = self.store.end_build(id, &end).await {
            tracing::warn!(build = id, error = %e, "recording a build's end failed");
        }
        self.notify(id);
        self.lock().remove(&id);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }

    /// Moves the log to the store every [`FLUSH_EVERY`] until it closes.
    async fn flush_log(self: Arc<Self>, id: i64, log: Log) {
        loop {
            let closed = log.is_closed();
            let text = log.take();
            if !text.is_empty() {
                if let Err(e) = self.store.append_build_log(id, &text).await {
                    tracing::warn!(build = id, error = %e, "storing a build's log failed");
                }
                self.notify(id);
            }
            if closed {
                return;
            }
            tokio::time::sleep(FLUSH_EVERY).await;
        }
    }

    async fn work(
        &self,
        build: &BuildRecord,
        project: &Project,
        args: &BTreeMap<String, String>,
        dir: &Path,
        log: &Log,
    ) -> Outcome {
        let Ok(_permit) = Arc::clone(&self.permits).acquire_owned().await else {
            return Outcome::Interrupted;
        };
        match self.store.advance_build(build.id, "building").await {
            Ok(true) => {}
            Ok(false) => return Outcome::Cancelled("cancelled before it ran".into()),
            Err(e) => return Outcome::Failed(e.to_string()),
        }
        self.notify(build.id);
        // The time limit starts when a builder takes it, not in the queue.
        let work = self.build_and_push(build, project, args, dir, log);
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok((digest, size))) => Outcome::Pushed { digest, size },
            Ok(Err(message)) => Outcome::Failed(message),
            Err(_) => Outcome::Failed(format!(
                "the build took longer than build_timeout_secs ({} s) and was stopped",
                self.timeout.as_secs()
            )),
        }
    }

    async fn build_and_push(
        &self,
        build: &BuildRecord,
        project: &Project,
        args: &BTreeMap<String, String>,
        dir: &Path,
        log: &Log,
    ) -> Result<(String, Option<u64>), String> {
        let home = dir.join("home");
        let _ = tokio::fs::remove_dir_all(dir).await;
        tokio::fs::create_dir_all(&home)
            .await
            .map_err(|e| format!("creating the build directory {}: {e}", dir.display()))?;
        let (context, dockerfile) = self.dockerfile(build.id, project, dir, &home, log).await?;
        if let Some(media) = &project.media {
            let target = sources::inside(&context, &media.target)?;
            if tokio::fs::symlink_metadata(&target).await.is_ok() {
                return Err(format!(
                    "the media target {} already exists in the build context",
                    media.target
                ));
            }
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            let credentials = project.media_credentials(&self.vault)?;
            log.push(&format!(
                "Fetching media from {} at {} into {}\n",
                media.url, media.revision, media.target
            ));
            let revision = match media.kind {
                MediaKind::Git => {
                    let fetched = dir.join("media");
                    let commit = sources::git_fetch(
                        &fetched,
                        &home,
                        &media.url,
                        &media.revision,
                        credentials.as_ref(),
                    )
                    .await?;
                    let taken = sources::inside(&fetched, &media.subdirectory)?;
                    let meta = tokio::fs::symlink_metadata(&taken).await;
                    if !meta.is_ok_and(|m| m.is_dir()) {
                        return Err(format!(
                            "the media repository has no directory {:?} at {}",
                            media.subdirectory, media.revision
                        ));
                    }
                    tokio::fs::rename(&taken, &target)
                        .await
                        .map_err(|e| format!("placing the media: {e}"))?;
                    commit
                }
                MediaKind::Svn => {
                    sources::svn_export(
                        &target,
                        &home,
                        &media.url,
                        &media.revision,
                        credentials.as_ref(),
                    )
                    .await?
                }
            };
            log.push(&format!("Media at revision {revision}\n"));
            let _ = self
                .store
                .set_build_revisions(build.id, None, Some(&revision))
                .await;
            self.notify(build.id);
        }
        let tar = {
            let context = context.clone();
            tokio::task::spawn_blocking(move || sources::tar_context(&context, CONTEXT_MAX))
                .await
                .map_err(|e| format!("packing the build context: {e}"))??
        };
        log.push(&format!("Sending a build context of {} bytes\n", tar.len()));
        let (server, username, password) = self.images.login().map_err(|e| e.to_string())?;
        let credentials = DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(server.clone()),
            ..DockerCredentials::default()
        };
        let name = format!("{server}/{}", build.repository);
        let image = format!("{name}:{}", build.tag);
        let docker = self.docker()?;
        let options = BuildImageOptions {
            dockerfile,
            t: Some(image.clone()),
            nocache: build.no_cache,
            rm: true,
            forcerm: true,
            buildargs: Some(args.clone().into_iter().collect()),
            ..BuildImageOptions::default()
        };
        let mut stream = docker.build_image(
            options,
            Some(HashMap::from([(server.clone(), credentials.clone())])),
            Some(bollard::body_full(tar.into())),
        );
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| daemon_error(&self.socket, e))?;
            if let Some(text) = info.stream {
                log.push(&text);
            } else if let Some(status) = info.status
                && info.progress_detail.is_none()
            {
                log.push(&progress_line(info.id.as_deref(), &status));
            }
        }
        drop(stream);
        match self.store.advance_build(build.id, "pushing").await {
            Ok(true) => {}
            Ok(false) => return Err("the build ended while it was building".into()),
            Err(e) => return Err(e.to_string()),
        }
        self.notify(build.id);
        log.push(&format!("Pushing {image}\n"));
        let mut push = docker.push_image(
            &name,
            Some(PushImageOptions {
                tag: Some(build.tag.clone()),
                ..PushImageOptions::default()
            }),
            Some(credentials),
        );
        while let Some(item) = push.next().await {
            let info = item.map_err(|e| daemon_error(&self.socket, e))?;
            if let Some(status) = info.status
                && info
                    .progress_detail
                    .as_ref()
                    .is_none_or(|p| p.current.is_none())
            {
                log.push(&progress_line(None, &status));
            }
        }
        // The registry's own word on what was pushed.
        self.images
            .pushed(&build.repository, &build.tag)
            .await
            .map_err(|e| format!("the registry does not show the pushed tag: {e}"))
    }

    /// The context directory and the Dockerfile's name in it.
    async fn dockerfile(
        &self,
        id: i64,
        project: &Project,
        dir: &Path,
        home: &Path,
        log: &Log,
    ) -> Result<(PathBuf, String), String> {
        let write = |text: String| async move {
            let context = dir.join("context");
            tokio::fs::create_dir_all(&context)
                .await
                .map_err(|e| format!("creating the build context: {e}"))?;
            tokio::fs::write(context.join("Dockerfile"), text)
                .await
                .map_err(|e| format!("writing the Dockerfile: {e}"))?;
            Ok::<_, String>((context, "Dockerfile".to_owned()))
        };
        match &project.source {
            Source::Text { dockerfile } => write(dockerfile.clone()).await,
            Source::Form { instructions } => {
                let text = super::dockerfile::render(instructions).map_err(|e| e.to_string())?;
                log.push(&text);
                write(text).await
            }
            Source::Git {
                url, git_ref, path, ..
            } => {
                log.push(&format!(
                    "Fetching the Dockerfile from {url} at {git_ref}\n"
                ));
                let repo = dir.join("source");
                let credentials = project.source_credentials(&self.vault)?;
                let commit =
                    sources::git_fetch(&repo, home, url, git_ref, credentials.as_ref()).await?;
                log.push(&format!("Source at commit {commit}\n"));
                let _ = self
                    .store
                    .set_build_revisions(id, Some(&commit), None)
                    .await;
                self.notify(id);
                let file = sources::inside(&repo, path)?;
                let meta = tokio::fs::symlink_metadata(&file).await;
                if !meta.is_ok_and(|m| m.is_file()) {
                    return Err(format!(
                        "the repository has no Dockerfile at {path:?} (ref {git_ref})"
                    ));
                }
                let context = file.parent().unwrap_or(&repo).to_path_buf();
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Ok((context, name))
            }
        }
    }

    /// The daemon, with the registry-credential headers fixed.
    fn docker(&self) -> Result<Docker, String> {
        let docker = Docker::connect_with_unix(
            &self.socket.to_string_lossy(),
            DOCKER_TIMEOUT_SECS,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| daemon_error(&self.socket, e))?;
        // bollard encodes these with standard base64; dockerd decodes the
        // URL-safe alphabet and, failing, silently sends no credentials.
        Ok(docker.with_request_modifier(|mut req| {
            for name in ["x-registry-auth", "x-registry-config"] {
                let fixed = req
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.replace('+', "-").replace('/', "_"));
                if let Some(value) = fixed.and_then(|v| v.parse().ok()) {
                    req.headers_mut().insert(name, value);
                }
            }
            req
        }))
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The daemon's failure in its own words.
fn daemon_error(socket: &Path, e: bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    match e {
        E::DockerStreamError { error } => error,
        E::DockerResponseServerError { message, .. } => message,
        E::SocketNotFoundError(_) => format!(
            "no Docker daemon at {} (docker_socket): is dockerd running?",
            socket.display()
        ),
        other => format!("the Docker daemon at {}: {other}", socket.display()),
    }
}

fn progress_line(id: Option<&str>, status: &str) -> String {
    match id {
        Some(id) => format!("{id}: {status}\n"),
        None => format!("{status}\n"),
    }
}

/// A build's log on its way to the store: bounded, drained by the flusher.
#[derive(Debug, Clone)]
struct Log(Arc<Mutex<LogState>>);

#[derive(Debug, Default)]
struct LogState {
    pending: String,
    kept: usize,
    cut: bool,
    closed: bool,
}

impl Log {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(LogState::default())))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `text`, unless the log is full (then says so, once).
    fn push(&self, text: &str) {
        let mut s = self.state();
        if s.cut || text.is_empty() {
            return;
        }
        let room = LOG_MAX.saturating_sub(s.kept);
        if text.len() <= room {
            s.pending.push_str(text);
            s.kept += text.len();
        } else {
            let mut end = room;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            s.pending.push_str(&text[..end]);
            s.pending
                .push_str("\n[the log is cut here at 4 MiB; the build goes on]\n");
            s.kept = LOG_MAX;
            s.cut = true;
        }
    }

    fn take(&self) -> String {
        std::mem::take(&mut self.state().pending)
    }

    fn close(&self) {
        self.state().closed = true;
    }

    fn is_closed(&self) -> bool {
        self.state().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_stops_at_its_bound_on_a_character_and_says_so_once() {
        let log = Log::new();
        log.push(&"é".repeat(LOG_MAX / 2 - 1));
        log.push("ééé");
        log.push("more");
        let text = log.take();
        assert!(text.ends_with("[the log is cut here at 4 MiB; the build goes on]\n"));
        assert_eq!(text.matches("the log is cut").count(), 1);
        assert!(text.len() <= LOG_MAX + 64);
        assert!(log.take().is_empty());
    }
}
