//! The image market: the registry DCP's images live in, its repositories,
//! tags and manifests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// The registry and whether it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RegistryStatus {
    /// Its base URL.
    pub url: String,
    /// The registry as image references name it (`host:port`), e.g. in
    /// `127.0.0.1:5000/shop/web:1.4`.
    pub host: String,
    /// Whether DCP runs it (`registry_addr`), or it is external
    /// (`registry_url`).
    pub managed: bool,
    /// The account DCP uses on it.
    pub username: String,
    /// Whether it answers now with that account.
    pub serving: bool,
    /// Why not, when it does not.
    pub problem: Option<String>,
    /// Bytes its storage holds (DCP's own registry only).
    pub storage_bytes: Option<u64>,
}

/// What `docker login` takes to push to the registry (a base image into
/// `base/`, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RegistryLogin {
    /// `host:port`.
    pub server: String,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

/// A repository of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Repository {
    /// e.g. `shop/web`.
    pub name: String,
    /// How many tags it has; 0 once all were deleted (the registry keeps
    /// the name).
    pub tags: u64,
}

/// One tag of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImageTag {
    /// The tag.
    pub tag: String,
    /// The digest of the manifest it points at.
    pub digest: String,
    /// The manifest's media type (a Docker or OCI image, or a list of
    /// images per platform).
    pub media_type: String,
    /// Compressed bytes of an image: its config and layers (none for a
    /// list).
    pub size: Option<u64>,
    /// When the image was built (RFC 3339; none for a list).
    pub created: Option<String>,
    /// A list's platforms, `os/architecture[/variant]`.
    pub platforms: Vec<String>,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImageLayer {
    /// Its digest.
    pub digest: String,
    /// Compressed bytes.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// The build step that made it, from the image's history.
    pub created_by: Option<String>,
}

/// One step of an image's build history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImageHistory {
    /// When it ran (RFC 3339).
    pub created: Option<String>,
    /// The instruction.
    pub created_by: Option<String>,
    /// True when it made no layer (ENV, CMD, …).
    pub empty_layer: bool,
    /// The builder's comment.
    pub comment: Option<String>,
}

/// One image of a manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImagePlatform {
    /// The image manifest's digest.
    pub digest: String,
    /// `os/architecture[/variant]`.
    pub platform: String,
    /// Bytes of its manifest.
    pub size: u64,
}

/// What an image runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImageRuns {
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `linux`.
    pub os: String,
    /// `ENTRYPOINT`.
    pub entrypoint: Vec<String>,
    /// `CMD`.
    pub cmd: Vec<String>,
    /// `ENV`, as `NAME=value`.
    pub env: Vec<String>,
    /// `EXPOSE`, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// `WORKDIR`.
    pub working_dir: Option<String>,
    /// `USER`.
    pub user: Option<String>,
    /// `LABEL`s.
    pub labels: BTreeMap<String, String>,
}

/// A tag in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImageTagDetail {
    /// The repository.
    pub repository: String,
    /// The tag, its digest, size and date.
    #[serde(flatten)]
    pub tag: ImageTag,
    /// What `docker pull` takes: `host:port/repository:tag`.
    pub pull: String,
    /// Other tags of the repository on the same manifest.
    pub also_tagged: Vec<String>,
    /// An image's layers, base first.
    pub layers: Vec<ImageLayer>,
    /// A list's images.
    pub manifests: Vec<ImagePlatform>,
    /// What an image runs (none for a list).
    pub runs: Option<ImageRuns>,
    /// An image's build history, first step first.
    pub history: Vec<ImageHistory>,
}

/// A deleted tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImageTagDeleted {
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The manifest it pointed at.
    pub digest: String,
    /// Tags that still point at that manifest (they were kept).
    pub kept: Vec<String>,
}

/// A repository in a path: its name, `/` and all (percent-encode the `/`
/// as `%2F`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Path))]
pub struct RepositoryPath {
    /// e.g. `shop%2Fweb` for `shop/web`.
    #[cfg_attr(
        feature = "openapi",
        param(
            min_length = 1,
            max_length = 255,
            pattern = "^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
        )
    )]
    pub repository: String,
}

/// A tag of a repository in a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Path))]
pub struct TagPath {
    /// e.g. `shop%2Fweb` for `shop/web`.
    #[cfg_attr(
        feature = "openapi",
        param(
            min_length = 1,
            max_length = 255,
            pattern = "^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
        )
    )]
    pub repository: String,
    /// The tag.
    #[cfg_attr(
        feature = "openapi",
        param(
            min_length = 1,
            max_length = 128,
            pattern = "^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
        )
    )]
    pub tag: String,
}

/// A repository's retention rule: a clean-up deletes the tags it does not
/// keep. Newest first by build time, a tag is kept when it is among the
/// first `keep_last` or was built within `keep_days` days; a list of
/// platforms (no build time) is always kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RetentionRule {
    /// The repository.
    pub repository: String,
    /// Keep this many newest tags.
    pub keep_last: Option<u32>,
    /// Keep the tags built in the last this many days.
    pub keep_days: Option<u32>,
    /// When it was set (RFC 3339).
    pub updated_at: String,
    /// Who set it.
    pub updated_by: String,
}

/// A retention rule to set: at least one of the two.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetentionInput {
    /// Keep this many newest tags.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub keep_last: Option<u32>,
    /// Keep the tags built in the last this many days.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 36500))]
    pub keep_days: Option<u32>,
}

/// A tag a clean-up deletes (or deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DoomedTag {
    /// Its repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The manifest it pointed at.
    pub digest: String,
    /// When its image was built (RFC 3339).
    pub created: Option<String>,
}

/// One clean-up of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Cleanup {
    /// Its id.
    pub id: i64,
    /// Who ran it.
    pub actor: String,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    /// The tags it deleted.
    pub deleted: Vec<DoomedTag>,
    /// Blobs (layers, configs, manifests) the garbage collection deleted.
    pub blobs_deleted: u64,
    /// Bytes of storage that freed (DCP's own registry).
    pub freed_bytes: u64,
    /// Why it failed, or a note.
    pub message: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
}
