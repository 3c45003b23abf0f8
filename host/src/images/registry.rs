//! A client of the Docker Registry HTTP API v2 (distribution, Harbor):
//! the catalog, tags, manifests, image configs, and deleting one tag.
//!
//! Every call has a timeout and every answer a size cap: the registry is
//! another server, and a slow or hostile one must not hold DCP.

use std::{sync::Arc, time::Duration};

use reqwest::{Method, StatusCode, header};
use serde::Deserialize;

/// The manifest types DCP reads. Without them in `Accept`, distribution
/// converts an image to the old schema 1 (another digest) and resolves a
/// manifest list to one platform's manifest.
const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json";
/// The schema 2 manifest type, used for the placeholder that deletes one
/// tag.
const SCHEMA2: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// distribution's own limit on a manifest.
const MANIFEST_MAX: usize = 4 << 20;
/// An image config is small; a larger blob under that name is refused.
const CONFIG_MAX: usize = 8 << 20;
/// A catalog page or a tag list.
const LIST_MAX: usize = 16 << 20;
/// Catalog entries asked for per request (distribution's default cap).
const CATALOG_PAGE: usize = 1000;
/// Requests to the registry under way at once, all callers together: a
/// page of tags fans out, and many pages at once must not flood it.
const CALLS_MAX: usize = 32;

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry did not answer (connection, timeout, cut answer).
    #[error("the registry at {url} does not answer: {message}")]
    Unreachable {
        /// Its base URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// It answered 404: no such repository, tag or manifest.
    #[error("{0}")]
    NotFound(String),
    /// It refused or failed otherwise, in its own words.
    #[error("the registry answered {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its error codes and messages.
        message: String,
    },
    /// Its answer is not what the API describes.
    #[error("the registry's answer to {what} is not understood: {message}")]
    Malformed {
        /// Which call.
        what: String,
        /// What is wrong.
        message: String,
    },
}

/// A registry and the account DCP uses on it.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    username: String,
    password: String,
    http: reqwest::Client,
    calls: Arc<tokio::sync::Semaphore>,
}

/// A manifest as stored, with its digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `sha256:…` of the stored bytes.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its parsed content.
    pub body: ManifestBody,
}

/// The parts of a manifest (image or list) DCP shows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestBody {
    /// Present on lists (OCI index).
    #[serde(default)]
    pub media_type: Option<String>,
    /// An image's config blob.
    #[serde(default)]
    pub config: Option<Descriptor>,
    /// An image's layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// A list's images, one per platform.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// A reference to a blob or manifest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Its media type.
    #[serde(default)]
    pub media_type: String,
    /// Bytes.
    #[serde(default)]
    pub size: u64,
    /// `sha256:…`.
    pub digest: String,
    /// A list entry's platform.
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// The platform of a list's entry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Platform {
    /// e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// e.g. `v8`.
    #[serde(default)]
    pub variant: Option<String>,
}

/// An image config: what an image runs and how it was made.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    /// When it was built (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
    /// e.g. `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// The container settings.
    #[serde(default)]
    pub config: Option<RunConfig>,
    /// One entry per build step, base image first.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

/// The container settings in an image config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// `ENTRYPOINT`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `ENV`, as `NAME=value`.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// `EXPOSE`, as `80/tcp` keys.
    #[serde(default)]
    pub exposed_ports: Option<serde_json::Map<String, serde_json::Value>>,
    /// `LABEL`s.
    #[serde(default)]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// `WORKDIR`.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `USER`.
    #[serde(default)]
    pub user: Option<String>,
}

/// One build step of an image.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HistoryEntry {
    /// When the step ran.
    #[serde(default)]
    pub created: Option<String>,
    /// The instruction, as the builder recorded it.
    #[serde(default)]
    pub created_by: Option<String>,
    /// True when the step made no layer (ENV, CMD, …).
    #[serde(default)]
    pub empty_layer: bool,
    /// The builder's comment.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Deserialize)]
struct Catalog {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Errors {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl Client {
    /// A client of the registry at `base` (`http://host:port`), as
    /// `username`.
    ///
    /// # Errors
    /// When `base` is not an http(s) URL.
    pub fn new(base: &str, username: &str, password: &str) -> Result<Self, String> {
        let base = base.trim_end_matches('/');
        let url = reqwest::Url::parse(base).map_err(|e| format!("{base:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("{base:?} is not an http:// or https:// URL"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            base: base.to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
            http,
            calls: Arc::new(tokio::sync::Semaphore::new(CALLS_MAX)),
        })
    }

    /// The base URL.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `host:port` as Docker names the registry in image references.
    #[must_use]
    pub fn host(&self) -> String {
        let url = reqwest::Url::parse(&self.base).ok();
        url.and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .unwrap_or_default()
    }

    /// The account's name.
    #[must_use]
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The account's password.
    #[must_use]
    pub fn password(&self) -> &str {
        &self.password
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.username, Some(&self.password))
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        Error::Unreachable {
            url: self.base.clone(),
            message: e.without_url().to_string(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        // Held until the answer's head: bodies are small and capped.
        let turn = self.calls.acquire().await;
        let response = request.send().await.map_err(|e| self.unreachable(e));
        drop(turn);
        let response = response?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = self.read(response, 64 << 10).await.unwrap_or_default();
        let message = serde_json::from_slice::<Errors>(&body)
            .ok()
            .filter(|e| !e.errors.is_empty())
            .map_or_else(
                || {
                    String::from_utf8_lossy(&body)
                        .trim()
                        .chars()
                        .take(300)
                        .collect()
                },
                |e| {
                    e.errors
                        .iter()
                        .map(|e| format!("{} {}", e.code, e.message).trim().to_owned())
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            );
        if status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound(message));
        }
        Err(Error::Refused {
            status: status.as_u16(),
            message,
        })
    }

    /// The body, refused past `cap` bytes.
    async fn read(&self, mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, Error> {
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(e))? {
            if body.len() + chunk.len() > cap {
                return Err(Error::Malformed {
                    what: response.url().path().to_owned(),
                    message: format!("larger than {cap} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        response: reqwest::Response,
        cap: usize,
    ) -> Result<T, Error> {
        let what = response.url().path().to_owned();
        let body = self.read(response, cap).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Malformed {
            what,
            message: e.to_string(),
        })
    }

    /// Whether the registry answers and accepts the account.
    ///
    /// # Errors
    /// When it does not.
    pub async fn check(&self) -> Result<(), Error> {
        self.send(self.request(Method::GET, "/v2/")).await?;
        Ok(())
    }

    /// Every repository, sorted, up to `max` (the catalog in pages).
    ///
    /// # Errors
    /// When the registry fails.
    pub async fn repositories(&self, max: usize) -> Result<Vec<String>, Error> {
        let mut all: Vec<String> = Vec::new();
        loop {
            let mut query = vec![("n", CATALOG_PAGE.to_string())];
            if let Some(last) = all.last() {
                query.push(("last", last.clone()));
            }
            let response = self
                .send(self.request(Method::GET, "/v2/_catalog").query(&query))
                .await?;
            let more = response.headers().contains_key(header::LINK);
            let page: Catalog = self.json(response, LIST_MAX).await?;
            let page = page.repositories.unwrap_or_default();
            let got = page.len();
            all.extend(page);
            if !more || got == 0 || all.len() >= max {
                break;
            }
        }
        all.truncate(max);
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// The tags of `repository`, sorted (the registry lists them in no
    /// order); none when it has none left.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown repository.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, Error> {
        let response = self
            .send(self.request(Method::GET, &format!("/v2/{repository}/tags/list")))
            .await?;
        let list: TagList = self.json(response, LIST_MAX).await?;
        let mut tags = list.tags.unwrap_or_default();
        tags.sort();
        Ok(tags)
    }

    /// The manifest `reference` (a tag or a digest) of `repository`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is none.
    pub async fn manifest(&self, repository: &str, reference: &str) -> Result<Manifest, Error> {
        let response = self
            .send(
                self.request(
                    Method::GET,
                    &format!("/v2/{repository}/manifests/{reference}"),
                )
                .header(header::ACCEPT, ACCEPT),
            )
            .await?;
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let header_digest = digest_header(&response);
        let bytes = self.read(response, MANIFEST_MAX).await?;
        // The digest is of the bytes; the header only saves hashing them.
        let digest =
            header_digest.unwrap_or_else(|| format!("sha256:{}", crate::sha256_hex(&bytes)));
        let body: ManifestBody = serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
            what: format!("manifest {repository}:{reference}"),
            message: e.to_string(),
        })?;
        Ok(Manifest {
            digest,
            media_type: body.media_type.clone().unwrap_or(media_type),
            body,
        })
    }

    /// The digest the tag points at.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such tag.
    pub async fn digest(&self, repository: &str, tag: &str) -> Result<String, Error> {
        let response = self
            .send(
                self.request(Method::HEAD, &format!("/v2/{repository}/manifests/{tag}"))
                    .header(header::ACCEPT, ACCEPT),
            )
            .await?;
        digest_header(&response).ok_or_else(|| Error::Malformed {
            what: format!("manifest {repository}:{tag}"),
            message: "no Docker-Content-Digest header".into(),
        })
    }

    /// The image config blob `digest` of `repository`.
    ///
    /// # Errors
    /// When the registry fails or the blob is not an image config.
    pub async fn config(&self, repository: &str, digest: &str) -> Result<ImageConfig, Error> {
        let response = self
            .send(self.request(Method::GET, &format!("/v2/{repository}/blobs/{digest}")))
            .await?;
        self.json(response, CONFIG_MAX).await
    }

    /// Deletes the manifest `digest` of `repository`: every tag that
    /// points at it goes with it (the API has no delete by tag).
    ///
    /// # Errors
    /// [`Error::NotFound`] when it is gone already.
    pub async fn delete_manifest(&self, repository: &str, digest: &str) -> Result<(), Error> {
        self.send(self.request(
            Method::DELETE,
            &format!("/v2/{repository}/manifests/{digest}"),
        ))
        .await?;
        Ok(())
    }

    /// Points `tag` at a placeholder image of its own (an empty image
    /// whose config carries `nonce`) and answers its digest: deleting that
    /// digest then removes this tag alone, when others share its image.
    ///
    /// # Errors
    /// When the registry refuses the upload.
    pub async fn retag_to_placeholder(
        &self,
        repository: &str,
        tag: &str,
        nonce: &str,
    ) -> Result<String, Error> {
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"dcp.placeholder": nonce}},
            "rootfs": {"type": "layers", "diff_ids": []},
        })
        .to_string();
        let config_digest = format!("sha256:{}", crate::sha256_hex(config.as_bytes()));
        let started = self
            .send(self.request(Method::POST, &format!("/v2/{repository}/blobs/uploads/")))
            .await?;
        let location = started
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Malformed {
                what: "blob upload".into(),
                message: "no Location header".into(),
            })?
            .to_owned();
        // The location is absolute or relative to the registry.
        let mut url = reqwest::Url::parse(&self.base)
            .and_then(|base| base.join(&location))
            .map_err(|e| Error::Malformed {
                what: "blob upload".into(),
                message: format!("Location {location:?}: {e}"),
            })?;
        url.query_pairs_mut().append_pair("digest", &config_digest);
        self.send(
            self.http
                .put(url)
                .basic_auth(&self.username, Some(&self.password))
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(config.clone()),
        )
        .await?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": SCHEMA2,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.len(),
                "digest": config_digest,
            },
            "layers": [],
        })
        .to_string();
        let manifest_digest = format!("sha256:{}", crate::sha256_hex(manifest.as_bytes()));
        self.send(
            self.request(Method::PUT, &format!("/v2/{repository}/manifests/{tag}"))
                .header(header::CONTENT_TYPE, SCHEMA2)
                .body(manifest),
        )
        .await?;
        Ok(manifest_digest)
    }
}

fn digest_header(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_registries() {
        assert!(Client::new("http://127.0.0.1:5000/", "u", "p").is_ok());
        assert_eq!(
            Client::new("https://registry.example:443", "u", "p")
                .unwrap()
                .base(),
            "https://registry.example:443"
        );
        assert!(Client::new("ftp://x", "u", "p").is_err());
        assert!(Client::new("127.0.0.1:5000", "u", "p").is_err());
    }

    #[test]
    fn the_host_is_as_docker_names_it() {
        let c = Client::new("http://127.24.0.1:5000", "u", "p").unwrap();
        assert_eq!(c.host(), "127.24.0.1:5000");
        let c = Client::new("https://reg.example", "u", "p").unwrap();
        assert_eq!(c.host(), "reg.example");
    }
}
