//! The image market (OpenDCP's imagebuild): the registry DCP's images live
//! in — DCP's own (`registry_addr`, [`managed`]) or an external one
//! (`registry_url`) — browsed through the Registry HTTP API v2
//! ([`registry`]): repositories, tags, manifests with their layers and
//! build history, and deleting one tag (Images service); image projects
//! ([`projects`]) and their builds through the Docker Engine API
//! ([`builds`]).

pub mod builds;
pub mod dockerfile;
pub mod managed;
pub mod projects;
pub mod registry;
pub mod retention;
pub mod sources;

use std::{sync::Arc, time::Duration};

use futures_util::{StreamExt as _, stream};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    store::{self, Store, Window},
    validate::{self, Invalid},
};

use self::{
    managed::{Health, Managed},
    registry::{Client, ImageConfig, Manifest},
};

/// Registry calls made at once for one request (a page of tags).
const FAN_OUT: usize = 8;
/// The most repositories the catalog is read up to.
const REPOSITORIES_MAX: usize = 10_000;
/// The most tags of one repository DCP lists or compares.
const TAGS_MAX: usize = 10_000;
/// How long a call waits for DCP's own registry while it starts.
const START_WAIT: Duration = Duration::from_secs(10);

/// Why an image-market request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field or parameter breaks a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No registry is configured (503).
    #[error(
        "no image registry is configured: set registry_addr (DCP runs Debian's docker-registry) \
         or registry_url"
    )]
    NotConfigured,
    /// DCP's own registry is not serving (503).
    #[error("the image registry is not serving: {0}")]
    Down(String),
    /// No such repository or tag (404).
    #[error("{0}")]
    NotFound(String),
    /// The registry failed or refused (502).
    #[error(transparent)]
    Registry(registry::Error),
    /// Work of its kind is under way, or it already ended (409).
    #[error("{0}")]
    Busy(String),
    /// Too much work waits; try again later (503).
    #[error("{0}")]
    Queue(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl From<registry::Error> for Error {
    fn from(e: registry::Error) -> Self {
        match e {
            registry::Error::NotFound(message) => Self::NotFound(message),
            other => Self::Registry(other),
        }
    }
}

/// The registry and how DCP reaches it.
#[derive(Debug)]
pub struct Status {
    /// Its base URL.
    pub url: String,
    /// As image references name it (`host:port`).
    pub host: String,
    /// Whether DCP runs it.
    pub managed: bool,
    /// The account DCP uses.
    pub username: String,
    /// `None` when it answers; else why not.
    pub problem: Option<String>,
    /// Bytes of its storage (DCP's own registry only).
    pub storage_bytes: Option<u64>,
}

/// One repository.
#[derive(Debug)]
pub struct RepositorySummary {
    /// e.g. `shop/web`.
    pub name: String,
    /// How many tags it has (0: all were deleted; the registry keeps the
    /// name).
    pub tags: u64,
}

/// One tag of a repository.
#[derive(Debug)]
pub struct TagSummary {
    /// The tag.
    pub tag: String,
    /// The manifest it points at.
    pub digest: String,
    /// The manifest's type.
    pub media_type: String,
    /// Compressed bytes: the config and the layers (images only).
    pub size: Option<u64>,
    /// When the image was built (images only).
    pub created: Option<String>,
    /// `os/architecture` of each image of a list.
    pub platforms: Vec<String>,
}

/// One layer of an image.
#[derive(Debug)]
pub struct Layer {
    /// Its digest.
    pub digest: String,
    /// Compressed bytes.
    pub size: u64,
    /// Its type.
    pub media_type: String,
    /// The build step that made it, when the history says.
    pub created_by: Option<String>,
}

/// A tag in full: its manifest, its image's config and history.
#[derive(Debug)]
pub struct TagDetail {
    /// The repository.
    pub repository: String,
    /// What lists it (and the layers, platforms).
    pub summary: TagSummary,
    /// `host:port/repository:tag`, as `docker pull` takes it.
    pub pull: String,
    /// Other tags of the repository pointing at the same manifest.
    pub also_tagged: Vec<String>,
    /// The layers, base first (images).
    pub layers: Vec<Layer>,
    /// The images of a list: digest, platform, size.
    pub manifests: Vec<(String, String, u64)>,
    /// The image's config (images).
    pub config: Option<ImageConfig>,
}

/// What deleting a tag did.
#[derive(Debug)]
pub struct TagDeleted {
    /// The repository.
    pub repository: String,
    /// The deleted tag.
    pub tag: String,
    /// The manifest it pointed at.
    pub digest: String,
    /// Tags still pointing at that manifest.
    pub kept: Vec<String>,
}

/// A login good for one pull: a user of its own on DCP's registry, ended
/// when this is dropped; an external registry's account as configured.
#[derive(Debug)]
pub struct PullPass {
    /// The registry (`host:port`).
    pub server: String,
    /// The user.
    pub username: String,
    /// The password.
    pub password: String,
    revoke: Option<Arc<Managed>>,
}

impl PullPass {
    /// Docker's client configuration (`config.json`) holding this login
    /// alone.
    #[must_use]
    pub fn docker_config(&self) -> String {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password));
        serde_json::json!({"auths": {self.server.as_str(): {"auth": auth}}}).to_string()
    }
}

impl Drop for PullPass {
    fn drop(&mut self) {
        if let Some(managed) = &self.revoke
            && let Err(e) = managed.revoke(&self.username)
        {
            tracing::warn!(error = %e, "ending a registry pull pass failed");
        }
    }
}

/// The image market.
#[derive(Debug)]
pub struct Images {
    store: Store,
    client: Option<Client>,
    managed: Option<Arc<Managed>>,
    /// One clean-up at a time.
    cleaning: tokio::sync::Mutex<()>,
}

impl Images {
    /// The image market of `config`; starts DCP's own registry when
    /// `registry_addr` is set (it runs until `stop`).
    ///
    /// # Errors
    /// When the registry settings are wrong or its files cannot be written.
    pub fn start(
        config: &Config,
        store: Store,
        stop: &CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        use anyhow::Context as _;
        if let Some(addr) = config.registry_addr {
            let managed = Arc::new(
                Managed::prepare(&config.data_dir, addr, config.registry_command.clone())
                    .context("preparing the image registry's directory")?,
            );
            let url = config
                .registry_url
                .clone()
                .unwrap_or_else(|| format!("http://{addr}"));
            let client = Client::new(&url, managed::USERNAME, managed.password())
                .map_err(|e| anyhow::anyhow!("registry_url: {e}"))?;
            Arc::clone(&managed).supervise(stop.clone());
            return Ok(Arc::new(Self {
                store,
                client: Some(client),
                managed: Some(managed),
                cleaning: tokio::sync::Mutex::new(()),
            }));
        }
        let client = match &config.registry_url {
            Some(url) => Some(
                Client::new(
                    url,
                    config.registry_username.as_deref().unwrap_or_default(),
                    config.registry_password.as_deref().unwrap_or_default(),
                )
                .map_err(|e| anyhow::anyhow!("registry_url: {e}"))?,
            ),
            None => None,
        };
        Ok(Arc::new(Self {
            store,
            client,
            managed: None,
            cleaning: tokio::sync::Mutex::new(()),
        }))
    }

    /// The registry, once it serves (a call while DCP's own registry
    /// starts waits for it).
    async fn registry(&self) -> Result<&Client, Error> {
        let client = self.client.as_ref().ok_or(Error::NotConfigured)?;
        if let Some(managed) = &self.managed {
            match managed.ready(START_WAIT).await {
                Health::Serving => {}
                Health::Starting => {
                    return Err(Error::Down(
                        "it is still starting; try again shortly".into(),
                    ));
                }
                Health::Down(why) => return Err(Error::Down(why)),
            }
        }
        Ok(client)
    }

    /// The registry's settings and whether it answers.
    ///
    /// # Errors
    /// [`Error::NotConfigured`].
    pub async fn status(&self) -> Result<Status, Error> {
        let client = self.client.as_ref().ok_or(Error::NotConfigured)?;
        let problem = match self.registry().await {
            Ok(client) => client.check().await.err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        let storage_bytes = match &self.managed {
            Some(managed) => Some(managed.storage_bytes().await),
            None => None,
        };
        Ok(Status {
            url: client.base().to_owned(),
            host: client.host(),
            managed: self.managed.is_some(),
            username: client.username().to_owned(),
            problem,
            storage_bytes,
        })
    }

    /// What `docker login` takes: the registry's host, user and password.
    ///
    /// # Errors
    /// [`Error::NotConfigured`].
    pub fn login(&self) -> Result<(String, String, String), Error> {
        let client = self.client.as_ref().ok_or(Error::NotConfigured)?;
        Ok((
            client.host(),
            client.username().to_owned(),
            client.password().to_owned(),
        ))
    }

    /// Whether `image` lives in the registry (its name starts with the
    /// registry's `host:port/`).
    #[must_use]
    pub fn holds(&self, image: &str) -> bool {
        self.client
            .as_ref()
            .is_some_and(|c| validate::image_name(image).starts_with(&format!("{}/", c.host())))
    }

    /// A login for one pull: on DCP's own registry a user made for it,
    /// gone when the pass is dropped.
    ///
    /// # Errors
    /// No registry, or the pass could not be written.
    pub fn pull_pass(&self) -> Result<PullPass, Error> {
        let client = self.client.as_ref().ok_or(Error::NotConfigured)?;
        let server = client.host();
        match &self.managed {
            Some(managed) => {
                let (username, password) = managed
                    .grant()
                    .map_err(|e| Error::Down(format!("writing a pull pass: {e}")))?;
                Ok(PullPass {
                    server,
                    username,
                    password,
                    revoke: Some(Arc::clone(managed)),
                })
            }
            None => Ok(PullPass {
                server,
                username: client.username().to_owned(),
                password: client.password().to_owned(),
                revoke: None,
            }),
        }
    }

    /// A window of the repositories, by name, and how many there are.
    ///
    /// # Errors
    /// When the registry fails.
    pub async fn repositories(
        &self,
        window: Window,
        prefix: Option<&str>,
    ) -> Result<(Vec<RepositorySummary>, u64), Error> {
        let client = self.registry().await?;
        let mut all = client.repositories(REPOSITORIES_MAX).await?;
        if let Some(prefix) = prefix {
            all.retain(|name| name.starts_with(prefix));
        }
        let total = all.len() as u64;
        let names = window.cut(all);
        let counted: Vec<Result<RepositorySummary, Error>> = stream::iter(names)
            .map(|name| async move {
                let tags = match client.tags(&name).await {
                    Ok(tags) => tags.len() as u64,
                    // Listed by the catalog, yet gone: no tags.
                    Err(registry::Error::NotFound(_)) => 0,
                    Err(e) => return Err(Error::from(e)),
                };
                Ok(RepositorySummary { name, tags })
            })
            .buffered(FAN_OUT)
            .collect()
            .await;
        Ok((counted.into_iter().collect::<Result<_, _>>()?, total))
    }

    /// A window of the tags of `repository`, by name, and how many there
    /// are.
    ///
    /// # Errors
    /// A bad name, an unknown repository, or the registry failing.
    pub async fn tags(
        &self,
        repository: &str,
        window: Window,
    ) -> Result<(Vec<TagSummary>, u64), Error> {
        validate::repository("repository", repository)?;
        let client = self.registry().await?;
        let all = client.tags(repository).await?;
        let total = all.len() as u64;
        let tags = window.cut(all);
        let summaries: Vec<Result<TagSummary, Error>> = stream::iter(tags)
            .map(|tag| async move {
                let manifest = client.manifest(repository, &tag).await?;
                let config = image_config(client, repository, &manifest).await?;
                Ok(summary(tag, &manifest, config.as_ref()))
            })
            .buffered(FAN_OUT)
            .collect()
            .await;
        Ok((summaries.into_iter().collect::<Result<_, _>>()?, total))
    }

    /// The digest and size of what `repository:tag` points at now (a
    /// build's push, as the registry has it).
    ///
    /// # Errors
    /// An unknown tag, or the registry failing.
    pub async fn pushed(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<(String, Option<u64>), Error> {
        let client = self.registry().await?;
        let manifest = client.manifest(repository, tag).await?;
        let size = summary(tag.to_owned(), &manifest, None).size;
        Ok((manifest.digest, size))
    }

    /// One tag in full.
    ///
    /// # Errors
    /// A bad name, an unknown tag, or the registry failing.
    pub async fn tag(&self, repository: &str, tag: &str) -> Result<TagDetail, Error> {
        validate::repository("repository", repository)?;
        validate::image_tag("tag", tag)?;
        let client = self.registry().await?;
        let manifest = client.manifest(repository, tag).await?;
        let config = image_config(client, repository, &manifest).await?;
        let also_tagged = self
            .sharing(client, repository, &manifest.digest)
            .await?
            .into_iter()
            .filter(|t| t != tag)
            .collect();
        let history: Vec<_> = config
            .as_ref()
            .map(|c| c.history.iter().filter(|h| !h.empty_layer).collect())
            .unwrap_or_default();
        let layers = manifest
            .body
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| Layer {
                digest: layer.digest.clone(),
                size: layer.size,
                media_type: layer.media_type.clone(),
                // History entries that made a layer map onto the layers in
                // order, when the image has as many.
                created_by: (history.len() == manifest.body.layers.len())
                    .then(|| history[i].created_by.clone())
                    .flatten(),
            })
            .collect();
        let manifests = manifest
            .body
            .manifests
            .iter()
            .map(|m| (m.digest.clone(), platform(m.platform.as_ref()), m.size))
            .collect();
        Ok(TagDetail {
            repository: repository.to_owned(),
            pull: format!("{}/{repository}:{tag}", client.host()),
            summary: summary(tag.to_owned(), &manifest, config.as_ref()),
            also_tagged,
            layers,
            manifests,
            config,
        })
    }

    /// Deletes `tag` alone. The registry deletes by manifest, which takes
    /// every tag pointing at it; when other tags share the manifest, the
    /// tag is first pointed at an empty placeholder of its own, and that is
    /// deleted instead. Layers stay until the registry's clean-up.
    ///
    /// # Errors
    /// A bad name, an unknown tag, or the registry failing.
    pub async fn delete_tag(&self, repository: &str, tag: &str) -> Result<TagDeleted, Error> {
        validate::repository("repository", repository)?;
        validate::image_tag("tag", tag)?;
        let client = self.registry().await?;
        let digest = client.digest(repository, tag).await?;
        let kept: Vec<String> = self
            .sharing(client, repository, &digest)
            .await?
            .into_iter()
            .filter(|t| t != tag)
            .collect();
        remove_tag(client, repository, tag, &digest, !kept.is_empty()).await?;
        Ok(TagDeleted {
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            digest,
            kept,
        })
    }

    /// The tags of `repository` pointing at `digest`.
    async fn sharing(
        &self,
        client: &Client,
        repository: &str,
        digest: &str,
    ) -> Result<Vec<String>, Error> {
        let mut tags = client.tags(repository).await?;
        tags.truncate(TAGS_MAX);
        let digests: Vec<(String, Result<String, registry::Error>)> = stream::iter(tags)
            .map(|tag| async move {
                let found = client.digest(repository, &tag).await;
                (tag, found)
            })
            .buffered(FAN_OUT)
            .collect()
            .await;
        let mut sharing = Vec::new();
        for (tag, found) in digests {
            match found {
                Ok(d) if d == digest => sharing.push(tag),
                // Deleted since the list was read.
                Ok(_) | Err(registry::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(sharing)
    }
}

/// Removes `tag`, which points at `digest`: the manifest itself when no
/// other tag shares it, else a placeholder the tag is first pointed at.
async fn remove_tag(
    client: &Client,
    repository: &str,
    tag: &str,
    digest: &str,
    shared: bool,
) -> Result<(), Error> {
    if shared {
        let nonce = uuid::Uuid::now_v7().to_string();
        let placeholder = client.retag_to_placeholder(repository, tag, &nonce).await?;
        client.delete_manifest(repository, &placeholder).await?;
    } else {
        client.delete_manifest(repository, digest).await?;
    }
    Ok(())
}

/// The config of an image manifest (none for a list).
async fn image_config(
    client: &Client,
    repository: &str,
    manifest: &Manifest,
) -> Result<Option<ImageConfig>, Error> {
    match &manifest.body.config {
        Some(config) => Ok(Some(client.config(repository, &config.digest).await?)),
        None => Ok(None),
    }
}

fn summary(tag: String, manifest: &Manifest, config: Option<&ImageConfig>) -> TagSummary {
    let body = &manifest.body;
    TagSummary {
        tag,
        digest: manifest.digest.clone(),
        media_type: manifest.media_type.clone(),
        size: body
            .config
            .as_ref()
            .map(|c| c.size + body.layers.iter().map(|l| l.size).sum::<u64>()),
        created: config.and_then(|c| c.created.clone()),
        platforms: body
            .manifests
            .iter()
            .map(|m| platform(m.platform.as_ref()))
            .collect(),
    }
}

fn platform(platform: Option<&registry::Platform>) -> String {
    platform.map_or_else(
        || "unknown".to_owned(),
        |p| match &p.variant {
            Some(variant) => format!("{}/{}/{variant}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        },
    )
}

/// Bytes of the files under `dir` (file sizes, not blocks).
fn bytes_under(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
