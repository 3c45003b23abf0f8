//! The plugin registry: uploads are checked, stored by content digest and
//! recorded as pending; an operator grants their capabilities; the active
//! version of each plugin is what calls get. Swapping the active version
//! never disturbs calls in flight: they hold the `Plugin` they started with.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use super::{
    CloudProvider, Failure, Grants, LoadBalancer, Plugin, PluginInfo, RemoteCommand, Runtime,
    WasmPlugin, World,
    manifest::{Capabilities, CapabilityDiff, Manifest},
};
use crate::{
    sha256_hex,
    store::{self, NewPluginVersion, PluginStatus, PluginVersionRecord, Store},
    validate::Invalid,
};

/// Largest component accepted.
pub const MAX_COMPONENT_BYTES: usize = 20 << 20;
/// How long compiling an upload may take.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(120);
/// Address space the isolated compile of an upload may use.
const CHECK_MEMORY: u64 = 4 << 30;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest or the component breaks a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The request conflicts with the registry's state.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Reading or writing an artifact failed.
    #[error("plugin artifact: {0}")]
    Io(#[from] std::io::Error),
}

/// The active version of a plugin.
#[derive(Debug, Clone)]
pub struct Active {
    /// Its version record id.
    pub id: i64,
    /// The compiled plugin.
    pub plugin: Arc<Plugin>,
    /// What it was granted.
    pub granted: Capabilities,
    /// The limits of its calls (defaults with the operator's overrides).
    pub limits: super::Limits,
}

/// The result of an upload.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The recorded version.
    pub record: PluginVersionRecord,
    /// What it asks for beyond the active version's grants.
    pub diff: CapabilityDiff,
    /// False when the same component was uploaded before (nothing changed).
    pub created: bool,
}

/// What trying a version showed (see [`Registry::probe`]).
#[derive(Debug, Clone)]
pub struct Probe {
    /// What the plugin says about itself.
    pub info: PluginInfo,
    /// Why it refused the configuration, if it did.
    pub config_error: Option<String>,
    /// A harmless call's answer (region ids, module names), or why it failed.
    pub sample: Result<Vec<String>, String>,
}

/// Plugin versions, their artifacts and the active set.
#[derive(Debug)]
pub struct Registry {
    runtime: Arc<Runtime>,
    store: Store,
    artifacts: PathBuf,
    checker: Option<PathBuf>,
    active: RwLock<HashMap<String, Active>>,
    compiled: RwLock<HashMap<i64, Arc<Plugin>>>,
}

impl Registry {
    /// Opens the registry over `store`, keeping artifacts in `artifacts`,
    /// and loads every active version. A version that no longer loads is
    /// noted (`last_error`) and left out rather than stopping the host.
    ///
    /// With `checker` (the `dcp` binary), an upload is first compiled by
    /// `dcp check-plugin` in a separate process under time and memory
    /// limits: wasmtime does not treat a component that makes the compiler
    /// run away as a vulnerability, so the host never compiles an upload
    /// that has not compiled within limits elsewhere.
    pub async fn open(
        runtime: Arc<Runtime>,
        store: Store,
        artifacts: PathBuf,
        checker: Option<PathBuf>,
    ) -> Result<Self, Error> {
        crate::data_dir::create_private_dir(&artifacts)?;
        let registry = Self {
            runtime,
            store,
            artifacts,
            checker,
            active: RwLock::default(),
            compiled: RwLock::default(),
        };
        for record in registry.store.active_plugin_versions().await? {
            if let Err(e) = registry.load_active(&record).await {
                tracing::error!(plugin = %record.name, version = %record.version, "not loaded: {e}");
                registry
                    .store
                    .set_plugin_error(record.id, &e.to_string())
                    .await?;
            }
        }
        Ok(registry)
    }

    /// The active version of `name`.
    #[must_use]
    pub fn active(&self, name: &str) -> Option<Active> {
        read(&self.active).get(name).cloned()
    }

    /// The active plugins of `world`, by name.
    #[must_use]
    pub fn active_in(&self, world: super::World) -> Vec<Active> {
        let mut found: Vec<Active> = read(&self.active)
            .values()
            .filter(|a| a.plugin.world == world)
            .cloned()
            .collect();
        found.sort_by(|a, b| a.plugin.name.cmp(&b.plugin.name));
        found
    }

    /// The compiled plugin of a version, if it was compiled since start.
    #[must_use]
    pub fn compiled(&self, id: i64) -> Option<Arc<Plugin>> {
        read(&self.compiled).get(&id).cloned()
    }

    /// Checks and records an upload. The same component again is a no-op;
    /// a different component under an existing version is a conflict.
    pub async fn upload(
        &self,
        manifest_text: &str,
        wasm: Vec<u8>,
        builtin: bool,
    ) -> Result<Upload, Error> {
        let (manifest, world) = Manifest::parse(manifest_text)?;
        if wasm.len() > MAX_COMPONENT_BYTES {
            return Err(Invalid::new(
                "component",
                format!("is larger than {MAX_COMPONENT_BYTES} bytes"),
            )
            .into());
        }
        let digest = sha256_hex(&wasm);
        let active_granted = self
            .active(&manifest.name)
            .map(|a| a.granted)
            .unwrap_or_default();
        let diff = manifest.capabilities.diff(&active_granted);
        if let Some(existing) = self
            .store
            .plugin_version_named(&manifest.name, &manifest.version)
            .await?
        {
            if existing.digest == digest {
                return Ok(Upload {
                    record: existing,
                    diff,
                    created: false,
                });
            }
            return Err(Error::Conflict(format!(
                "{}@{} was already uploaded with different content (digest {}); give the new build a new version",
                manifest.name, manifest.version, existing.digest
            )));
        }
        if !builtin {
            self.check_isolated(&digest, &wasm).await?;
        }
        let plugin = self
            .compile(&manifest.name, &manifest.version, wasm.clone())
            .await?;
        if plugin.world != world {
            return Err(Invalid::new(
                "component",
                format!(
                    "targets the {} world, but the manifest says {world}",
                    plugin.world
                ),
            )
            .into());
        }
        self.write_artifact(&digest, &wasm)?;
        let requested = json(&manifest.capabilities);
        let record = self
            .store
            .create_plugin_version(&NewPluginVersion {
                name: &manifest.name,
                version: &manifest.version,
                world: world.name(),
                description: &manifest.description,
                digest: &digest,
                size_bytes: i64::try_from(wasm.len()).unwrap_or(i64::MAX),
                manifest: manifest_text,
                requested: &requested,
                granted: builtin.then_some(requested.as_str()),
                builtin,
            })
            .await?;
        write(&self.compiled).insert(record.id, Arc::new(plugin));
        tracing::info!(plugin = %record.name, version = %record.version, %digest, "plugin uploaded");
        Ok(Upload {
            record,
            diff,
            created: true,
        })
    }

    /// Grants a version the capabilities its manifest asks for.
    pub async fn approve(&self, id: i64) -> Result<PluginVersionRecord, Error> {
        let record = self.store.plugin_version(id).await?;
        let record = self
            .store
            .approve_plugin_version(id, &record.requested)
            .await?;
        tracing::info!(plugin = %record.name, version = %record.version, "plugin capabilities approved");
        Ok(record)
    }

    /// Makes a granted version the one calls get.
    pub async fn activate(&self, id: i64) -> Result<PluginVersionRecord, Error> {
        let record = self.store.plugin_version(id).await?;
        if record.granted.is_none() {
            return Err(Error::Conflict(format!(
                "{}@{} has not been approved: approve its capabilities first",
                record.name, record.version
            )));
        }
        // Compile before switching, so a version that cannot load never becomes active.
        let plugin = self.plugin_of(&record).await?;
        let record = self.store.activate_plugin_version(id).await?;
        self.publish(&record, plugin);
        tracing::info!(plugin = %record.name, version = %record.version, "plugin version active");
        Ok(record)
    }

    /// Re-activates the version of the same plugin that was active before the current one.
    pub async fn rollback(&self, id: i64) -> Result<PluginVersionRecord, Error> {
        let record = self.store.plugin_version(id).await?;
        let previous = self
            .store
            .previous_plugin_version(&record.name)
            .await?
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "{} has no earlier active version to roll back to",
                    record.name
                ))
            })?;
        self.activate(previous.id).await
    }

    /// Deletes a version that is not active and not built in, and its
    /// artifact when no other version shares it.
    pub async fn delete(&self, id: i64) -> Result<(), Error> {
        let record = self.store.plugin_version(id).await?;
        self.store.delete_plugin_version(id).await?;
        write(&self.compiled).remove(&id);
        if self.store.count_plugin_digest(&record.digest).await? == 0 {
            let _ = std::fs::remove_file(self.artifact_path(&record.digest));
        }
        Ok(())
    }

    /// Installs the plugins shipped with DCP from `dir` (`<name>.wasm` with
    /// `<name>.toml`), granted from their manifests, and activates each new
    /// build — a build installed before stays as the operator left it.
    pub async fn install_builtins(&self, dir: &Path) -> Result<Vec<PluginVersionRecord>, Error> {
        let mut installed = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(installed);
        };
        let mut manifests: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        manifests.sort();
        for manifest_path in manifests {
            let wasm_path = manifest_path.with_extension("wasm");
            let (Ok(manifest), Ok(wasm)) = (
                std::fs::read_to_string(&manifest_path),
                std::fs::read(&wasm_path),
            ) else {
                continue;
            };
            let upload = self.upload(&manifest, wasm, true).await?;
            // A build seen before does not overrule the version an operator
            // activated since (an upload, a rollback); a new build does.
            let operator_chose = !upload.created
                && self
                    .active(&upload.record.name)
                    .is_some_and(|a| a.id != upload.record.id);
            let record = if upload.record.status == PluginStatus::Active || operator_chose {
                upload.record
            } else {
                self.activate(upload.record.id).await?
            };
            installed.push(record);
        }
        Ok(installed)
    }

    async fn load_active(&self, record: &PluginVersionRecord) -> Result<(), Error> {
        let plugin = self.plugin_of(record).await?;
        self.publish(record, plugin);
        Ok(())
    }

    /// Makes `record` the version calls to its plugin go to.
    fn publish(&self, record: &PluginVersionRecord, plugin: Arc<Plugin>) {
        write(&self.active).insert(
            record.name.clone(),
            Active {
                id: record.id,
                plugin,
                granted: granted(record),
                limits: limits(record),
            },
        );
    }

    /// Sets a version's per-call limit overrides (unset fields use the
    /// defaults); an active version's next calls use them.
    pub async fn set_limits(
        &self,
        id: i64,
        overrides: &dcp_api_types::PluginLimits,
    ) -> Result<PluginVersionRecord, Error> {
        super::Limits::default().with_overrides(overrides)?;
        let json = (*overrides != dcp_api_types::PluginLimits::default())
            .then(|| serde_json::to_string(overrides).unwrap_or_default());
        let record = self.store.set_plugin_limits(id, json.as_deref()).await?;
        if let Some(active) = self.active(&record.name).filter(|a| a.id == id) {
            self.publish(&record, active.plugin);
        }
        Ok(record)
    }

    /// A granted version bound to `config` for a trial (its failures are
    /// not counted against it), under its grants and limits.
    async fn trial(&self, record: &PluginVersionRecord, config: &str) -> Result<WasmPlugin, Error> {
        if record.granted.is_none() {
            return Err(Error::Conflict(format!(
                "{}@{} has not been approved: approve its capabilities first",
                record.name, record.version
            )));
        }
        let grants = Grants {
            origins: granted(record)
                .origins()
                .map_err(|e| Invalid::new("granted.http", e))?,
            limits: limits(record),
            config: config.to_owned(),
            trial: true,
            ..Grants::default()
        };
        Ok(WasmPlugin::new(self.plugin_of(record).await?, grants))
    }

    /// What a granted version says about itself: its name, version,
    /// description and configuration schema. No outside call is made.
    pub async fn describe(&self, record: &PluginVersionRecord) -> Result<PluginInfo, Error> {
        let plugin = self.trial(record, "{}").await?;
        let described = |e: super::Error| Error::from(Invalid::new("component", e.to_string()));
        match world(record) {
            Some(World::CloudProvider) => CloudProvider::describe(&plugin).await,
            Some(World::LoadBalancer) => LoadBalancer::describe(&plugin).await,
            Some(World::RemoteCommand) | None => RemoteCommand::describe(&plugin).await,
        }
        .map_err(described)
    }

    /// Tries a granted version with `config`, under its grants and limits:
    /// describe it, have it validate the configuration, and make one harmless
    /// call (list regions; list modules).
    pub async fn probe(
        &self,
        record: &PluginVersionRecord,
        config: String,
    ) -> Result<Probe, Error> {
        let info = self.describe(record).await?;
        let plugin = self.trial(record, &config).await?;
        let (config_error, sample) = match world(record) {
            Some(World::CloudProvider) => (
                CloudProvider::validate_config(&plugin, &config).await.err(),
                plugin
                    .list_regions()
                    .await
                    .map(|regions| regions.into_iter().map(|r| r.id).collect()),
            ),
            Some(World::LoadBalancer) => (
                LoadBalancer::validate_config(&plugin, &config).await.err(),
                Ok(Vec::new()),
            ),
            Some(World::RemoteCommand) | None => (
                None,
                plugin
                    .modules()
                    .await
                    .map(|modules| modules.into_iter().map(|m| m.name).collect()),
            ),
        };
        if let Err(e) = &sample {
            // A plugin's own error is an answer; the sandbox stopping it is a failure to keep.
            if !matches!(e.failure, Failure::Plugin(_)) {
                self.store
                    .set_plugin_error(record.id, &e.to_string())
                    .await?;
            }
        }
        Ok(Probe {
            info,
            config_error: config_error.map(|e| e.to_string()),
            sample: sample.map_err(|e| e.to_string()),
        })
    }

    /// The compiled plugin of a version, compiling its stored artifact if needed.
    pub async fn plugin(&self, record: &PluginVersionRecord) -> Result<Arc<Plugin>, Error> {
        self.plugin_of(record).await
    }

    async fn plugin_of(&self, record: &PluginVersionRecord) -> Result<Arc<Plugin>, Error> {
        if let Some(plugin) = self.compiled(record.id) {
            return Ok(plugin);
        }
        let wasm = std::fs::read(self.artifact_path(&record.digest))?;
        if sha256_hex(&wasm) != record.digest {
            return Err(Error::Conflict(format!(
                "the stored artifact of {}@{} does not match its digest",
                record.name, record.version
            )));
        }
        let plugin = Arc::new(self.compile(&record.name, &record.version, wasm).await?);
        write(&self.compiled).insert(record.id, Arc::clone(&plugin));
        Ok(plugin)
    }

    /// Compiles off the async threads, within a time limit.
    async fn compile(&self, name: &str, version: &str, wasm: Vec<u8>) -> Result<Plugin, Error> {
        let runtime = Arc::clone(&self.runtime);
        let (name, version) = (name.to_owned(), version.to_owned());
        let job = tokio::task::spawn_blocking(move || runtime.load(&name, &version, &wasm));
        match tokio::time::timeout(COMPILE_TIMEOUT, job).await {
            Err(_) => Err(Invalid::new("component", "took too long to compile").into()),
            Ok(Err(e)) => Err(Error::Io(std::io::Error::other(e))),
            Ok(Ok(Err(e))) => match e.failure {
                Failure::Incompatible(message) => Err(Invalid::new("component", message).into()),
                other => Err(Invalid::new("component", other.to_string()).into()),
            },
            Ok(Ok(Ok(plugin))) => Ok(plugin),
        }
    }

    /// Compiles `wasm` in a `dcp check-plugin` process limited to
    /// [`CHECK_MEMORY`] of address space and [`COMPILE_TIMEOUT`].
    async fn check_isolated(&self, digest: &str, wasm: &[u8]) -> Result<(), Error> {
        let Some(checker) = &self.checker else {
            return Ok(());
        };
        let path = self.artifacts.join(format!("{digest}.check"));
        crate::data_dir::write_private(&path, wasm)?;
        let limited = std::path::Path::new(PRLIMIT).is_file();
        let mut command = check_command(checker, &path, limited);
        let outcome = tokio::time::timeout(COMPILE_TIMEOUT, command.output()).await;
        let _ = std::fs::remove_file(&path);
        let output = match outcome {
            Err(_) => {
                return Err(Invalid::new(
                    "component",
                    format!("did not compile within {} s", COMPILE_TIMEOUT.as_secs()),
                )
                .into());
            }
            Ok(output) => output?,
        };
        if output.status.success() {
            tracing::info!(%digest, limited, "upload compiled in an isolated process");
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr
            .lines()
            .find_map(|l| l.strip_prefix("Error: "))
            .unwrap_or_default()
            .trim();
        Err(Invalid::new(
            "component",
            match output.status.code() {
                Some(_) if !reason.is_empty() => {
                    reason.trim_start_matches("incompatible: ").to_owned()
                }
                _ => format!(
                    "compiling it exceeded the limits ({} s, {} MiB)",
                    COMPILE_TIMEOUT.as_secs(),
                    CHECK_MEMORY >> 20
                ),
            },
        )
        .into())
    }

    fn artifact_path(&self, digest: &str) -> PathBuf {
        self.artifacts.join(format!("{digest}.wasm"))
    }

    fn write_artifact(&self, digest: &str, wasm: &[u8]) -> std::io::Result<()> {
        let path = self.artifact_path(digest);
        if path.exists() {
            return Ok(());
        }
        let tmp = path.with_extension("wasm.tmp");
        crate::data_dir::write_private(&tmp, wasm)?;
        std::fs::rename(tmp, path)
    }
}

const PRLIMIT: &str = "/usr/bin/prlimit";

/// `dcp check-plugin <component>`, under `prlimit` when `limited`. The
/// child gets an empty environment but for its log settings: it must not
/// see the secret key, the database URL or anything else the server was
/// given, and needs none of it (both programs are named by full path).
fn check_command(
    checker: &std::path::Path,
    component: &std::path::Path,
    limited: bool,
) -> tokio::process::Command {
    let mut command = if limited {
        let mut c = tokio::process::Command::new(PRLIMIT);
        c.arg(format!("--as={CHECK_MEMORY}"))
            .arg(format!("--cpu={}", COMPILE_TIMEOUT.as_secs()))
            .arg("--")
            .arg(checker);
        c
    } else {
        tokio::process::Command::new(checker)
    };
    command
        .arg("check-plugin")
        .arg(component)
        .env_clear()
        .env("RUST_LOG", "error")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// The capabilities a record was granted (none if not approved).
#[must_use]
pub fn granted(record: &PluginVersionRecord) -> Capabilities {
    record
        .granted
        .as_deref()
        .and_then(|g| serde_json::from_str(g).ok())
        .unwrap_or_default()
}

/// The operator's limit overrides of a record.
#[must_use]
pub fn limit_overrides(record: &PluginVersionRecord) -> dcp_api_types::PluginLimits {
    record
        .limits
        .as_deref()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default()
}

/// The per-call limits of a record: the defaults with its overrides.
#[must_use]
pub fn limits(record: &PluginVersionRecord) -> super::Limits {
    // Overrides were checked when set; a stored value out of range falls back to the defaults.
    super::Limits::default()
        .with_overrides(&limit_overrides(record))
        .unwrap_or_default()
}

/// The capabilities a record asks for.
#[must_use]
pub fn requested(record: &PluginVersionRecord) -> Capabilities {
    serde_json::from_str(&record.requested).unwrap_or_default()
}

fn json(capabilities: &Capabilities) -> String {
    serde_json::to_string(capabilities).unwrap_or_default()
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The world of a stored record.
#[must_use]
pub fn world(record: &PluginVersionRecord) -> Option<World> {
    World::from_name(&record.world)
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// The checker sees none of the server's environment (the secret key,
    /// the database URL): only its log settings.
    #[tokio::test]
    async fn the_checker_inherits_no_environment() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("env");
        let checker = dir.path().join("checker");
        std::fs::write(
            &checker,
            format!("#!/bin/sh\n/usr/bin/env > '{}'\n", seen.display()),
        )
        .unwrap();
        std::fs::set_permissions(&checker, std::fs::Permissions::from_mode(0o700)).unwrap();
        // `cargo test` runs with CARGO_*, HOME and PATH set: all must stay behind.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let limits = [false, std::path::Path::new(PRLIMIT).is_file()];
        for limited in limits
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
        {
            let status = check_command(&checker, &dir.path().join("c.check"), limited)
                .status()
                .await
                .unwrap();
            assert!(status.success());
            let env = std::fs::read_to_string(&seen).unwrap();
            let mut names: Vec<&str> = env
                .lines()
                .filter_map(|l| l.split_once('=').map(|(k, _)| k))
                // The shell running the script sets its own PWD.
                .filter(|k| *k != "PWD")
                .collect();
            names.sort_unstable();
            assert_eq!(
                names,
                ["RUST_BACKTRACE", "RUST_LIB_BACKTRACE", "RUST_LOG"],
                "limited: {limited}\n{env}"
            );
        }
    }
}
