//! Image projects and their builds: how an image is made (a Dockerfile as
//! text, from git, or from a form of instructions), the deploy media put in
//! its context, and each build with its live log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// One line of the instruction form. Each renders to one Dockerfile line;
/// every value is one line (no line breaks), and paths and exec-form
/// arguments are rendered as JSON arrays, so no value can start another
/// instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "op", rename_all = "UPPERCASE", deny_unknown_fields)]
pub enum Instruction {
    /// `FROM image`: a base image (a `base/…` image of the registry, or
    /// any reference the daemon can pull). The first instruction, but for
    /// ARGs.
    From {
        /// e.g. `127.0.0.1:5000/base/busybox:1` or `debian:12`.
        image: String,
    },
    /// `ARG name` or `ARG name="default"`: a build argument the steps
    /// after it see (before FROM, FROM's own).
    Arg {
        /// A variable name.
        name: String,
        /// Its value when a build gives none.
        #[serde(default)]
        default: Option<String>,
    },
    /// `RUN command` (shell form).
    Run {
        /// The command line.
        command: String,
    },
    /// `COPY ["source", "destination"]`: from the build context.
    Copy {
        /// A path in the build context.
        source: String,
        /// A path in the image.
        destination: String,
    },
    /// `ADD ["source", "destination"]`: like COPY; local tar files are
    /// unpacked.
    Add {
        /// A path in the build context.
        source: String,
        /// A path in the image.
        destination: String,
    },
    /// `WORKDIR path`.
    Workdir {
        /// An absolute path in the image.
        path: String,
    },
    /// `ENV name="value"`.
    Env {
        /// A variable name (`[A-Za-z_][A-Za-z0-9_]*`).
        name: String,
        /// Its value.
        value: String,
    },
    /// `EXPOSE port/protocol`.
    Expose {
        /// 1–65535.
        port: u16,
        /// `tcp` or `udp`.
        #[serde(default = "tcp")]
        protocol: String,
    },
    /// `LABEL "name"="value"`.
    Label {
        /// The label's key.
        name: String,
        /// Its value.
        value: String,
    },
    /// `USER user[:group]`.
    User {
        /// A user name or id, optionally `:group`.
        user: String,
    },
    /// `VOLUME ["path"]`.
    Volume {
        /// An absolute path in the image.
        path: String,
    },
    /// `ENTRYPOINT ["arg", …]` (exec form).
    Entrypoint {
        /// The program and its arguments.
        args: Vec<String>,
    },
    /// `CMD ["arg", …]` (exec form).
    Cmd {
        /// The program (or the entrypoint's arguments).
        args: Vec<String>,
    },
}

fn tcp() -> String {
    "tcp".into()
}

/// A git repository at one ref.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GitSourceInput {
    /// `http(s)://`, `git://` or `ssh://` URL.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 2048))]
    pub url: String,
    /// A branch, a tag, `refs/…`, or a full 40-hex commit.
    #[serde(rename = "ref")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub git_ref: String,
    /// For a private repository.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 255))]
    pub username: Option<String>,
    /// For a private repository: sealed at rest, never answered or logged.
    /// Omit it on update to keep the stored one; `""` removes it.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 4096))]
    pub password: Option<String>,
}

impl std::fmt::Debug for GitSourceInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSourceInput")
            .field("url", &self.url)
            .field("git_ref", &self.git_ref)
            .field("username", &self.username)
            .field("password", &crate::redacted(self.password.as_ref()))
            .finish()
    }
}

/// How a project's Dockerfile is made, as set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DockerfileInput {
    /// Written as text; the build context holds it and the deploy media.
    Text {
        /// The Dockerfile (at most 64 KiB).
        #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 65536))]
        dockerfile: String,
    },
    /// Taken from a git repository: the context is the directory holding
    /// the Dockerfile, as `docker build <dir>` has it.
    Git {
        /// The repository and ref.
        #[serde(flatten)]
        repository: GitSourceInput,
        /// The Dockerfile's path in the repository (default `Dockerfile`).
        #[serde(default = "dockerfile_name")]
        #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 1024))]
        path: String,
    },
    /// Composed from the instruction form.
    Form {
        /// The instructions, in order; the first is FROM, or ARGs then FROM
        /// (at most 200).
        #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 200))]
        instructions: Vec<Instruction>,
    },
}

fn dockerfile_name() -> String {
    "Dockerfile".into()
}

/// Where deploy media come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// A git repository at a ref.
    Git,
    /// A subversion URL at a revision.
    Svn,
}

/// The deploy media, as set: code fetched into the build context at
/// `target` before each build (the Dockerfile COPYs it from there).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MediaInput {
    /// git or svn.
    pub kind: MediaKind,
    /// git: the repository; svn: the URL of the directory to export
    /// (`svn://`, `http(s)://`).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 2048))]
    pub url: String,
    /// git: a branch, tag, `refs/…` or full commit; svn: a revision
    /// number or `HEAD`.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub revision: String,
    /// git only: the directory of the repository to take (default: all).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub subdirectory: String,
    /// Where in the build context the media land: a relative path.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 1024))]
    pub target: String,
    /// For a private repository.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 255))]
    pub username: Option<String>,
    /// Sealed at rest, never answered or logged. Omit it on update to keep
    /// the stored one; `""` removes it.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 4096))]
    pub password: Option<String>,
}

impl std::fmt::Debug for MediaInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaInput")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("revision", &self.revision)
            .field("subdirectory", &self.subdirectory)
            .field("target", &self.target)
            .field("username", &self.username)
            .field("password", &crate::redacted(self.password.as_ref()))
            .finish()
    }
}

/// What creates or changes an image project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImageProjectInput {
    /// The repository its images are pushed to in DCP's registry, e.g.
    /// `shop/web` (the registry's name grammar; not under `base/`, which
    /// holds the bases users push).
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = "^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
        )
    )]
    pub repository: String,
    /// What it is for.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: String,
    /// How its Dockerfile is made.
    pub dockerfile: DockerfileInput,
    /// Code fetched into the build context, if any.
    #[serde(default)]
    pub media: Option<MediaInput>,
    /// `ARG` values every build gets (a build may override them); at most 64.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
}

/// A git repository at one ref, as answered (the password never is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GitSource {
    /// The repository.
    pub url: String,
    /// The ref.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The user name, if any.
    pub username: Option<String>,
    /// Whether a password is stored.
    pub password_set: bool,
}

/// How a project's Dockerfile is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DockerfileSource {
    /// Written as text.
    Text {
        /// The Dockerfile.
        dockerfile: String,
    },
    /// From a git repository.
    Git {
        /// The repository and ref.
        #[serde(flatten)]
        repository: GitSource,
        /// The Dockerfile's path in it.
        path: String,
    },
    /// From the instruction form.
    Form {
        /// The instructions.
        instructions: Vec<Instruction>,
    },
}

/// The deploy media, as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Media {
    /// git or svn.
    pub kind: MediaKind,
    /// Where from.
    pub url: String,
    /// Which ref or revision.
    pub revision: String,
    /// git: the directory taken.
    pub subdirectory: String,
    /// Where in the context they land.
    pub target: String,
    /// The user name, if any.
    pub username: Option<String>,
    /// Whether a password is stored.
    pub password_set: bool,
}

/// An image project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImageProject {
    /// Its id.
    pub id: i64,
    /// The repository its images go to.
    pub repository: String,
    /// What it is for.
    pub description: String,
    /// How its Dockerfile is made.
    pub dockerfile: DockerfileSource,
    /// The Dockerfile as it renders (text and form; a git Dockerfile is
    /// known only when a build fetches it).
    pub rendered: Option<String>,
    /// Its deploy media.
    pub media: Option<Media>,
    /// Its build arguments.
    pub build_args: BTreeMap<String, String>,
    /// Who created it.
    pub created_by: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// Its newest build.
    pub last_build: Option<ImageBuild>,
}

/// The Dockerfile a form renders to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RenderedDockerfile {
    /// The text.
    pub dockerfile: String,
}

/// What a build's instructions are, for a preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenderInput {
    /// The instructions.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 200))]
    pub instructions: Vec<Instruction>,
}

/// Where a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BuildState {
    /// Waiting for a free builder.
    Queued,
    /// Fetching sources and building.
    Building,
    /// Pushing to the registry.
    Pushing,
    /// Built and pushed.
    Succeeded,
    /// The source, the builder or the push failed (see `message`).
    Failed,
    /// Cancelled by a user.
    Cancelled,
    /// The DCP running it stopped; nothing was pushed after that.
    Interrupted,
}

impl BuildState {
    /// Whether it ended.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::Interrupted
        )
    }

    /// Its name in the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Building => "building",
            Self::Pushing => "pushing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }
}

/// One build of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ImageBuild {
    /// Its id.
    pub id: i64,
    /// The project.
    pub project_id: i64,
    /// The repository.
    pub repository: String,
    /// The tag it builds.
    pub tag: String,
    /// `host:port/repository:tag`, as `docker pull` takes it.
    pub image: String,
    /// Where it is.
    pub state: BuildState,
    /// Who asked for it.
    pub requested_by: String,
    /// The commit the Dockerfile came from (git source).
    pub source_revision: Option<String>,
    /// The commit or revision of the deploy media.
    pub media_revision: Option<String>,
    /// The pushed manifest's digest.
    pub digest: Option<String>,
    /// Compressed bytes in the registry (config and layers).
    pub size: Option<u64>,
    /// Why it failed, in the builder's words, or a note.
    pub message: String,
    /// Built without the layer cache.
    pub no_cache: bool,
    /// The build arguments it used.
    pub build_args: BTreeMap<String, String>,
    /// Bytes of log so far.
    pub log_bytes: u64,
    /// When it was asked for (RFC 3339).
    pub created_at: String,
    /// When a builder took it (RFC 3339).
    pub started_at: Option<String>,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
    /// From start to end, in milliseconds.
    pub duration_ms: Option<u64>,
}

/// What starts a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ImageBuildInput {
    /// The tag to build and push (a tag that exists is replaced).
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = "^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
        )
    )]
    pub tag: String,
    /// `ARG` values over the project's (at most 64).
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// Build without the layer cache.
    #[serde(default)]
    pub no_cache: bool,
}

/// A piece of a build's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BuildLog {
    /// The byte offset of `text` in the whole log.
    pub offset: u64,
    /// The text (whole UTF-8 characters).
    pub text: String,
    /// Bytes of log so far.
    pub total: u64,
}

/// Which part of a build's log to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(default, deny_unknown_fields)]
pub struct BuildLogQuery {
    /// The byte offset to start at.
    pub offset: u64,
    /// At most this many bytes (1 to 1048576).
    #[cfg_attr(
        feature = "openapi",
        param(minimum = 1, maximum = 1_048_576, default = 65536)
    )]
    pub limit: u32,
}

impl Default for BuildLogQuery {
    fn default() -> Self {
        Self {
            offset: 0,
            limit: 65536,
        }
    }
}

/// What `GET /api/v1/image-builds/{id}/events` sends; the SSE event name
/// says which. The log arrives whole: from its start, then each new piece.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(untagged)]
pub enum BuildEvent {
    /// The build, first on every connection; after a final state the
    /// stream ends.
    Build(Box<ImageBuild>),
    /// More log.
    Log(BuildLog),
}

impl BuildEvent {
    /// The SSE event name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Build(_) => "build",
            Self::Log(_) => "log",
        }
    }
}

/// Which repositories to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(default)]
pub struct RepositoryPrefixQuery {
    /// Only repositories whose name starts with this (e.g. `base/`).
    #[cfg_attr(feature = "openapi", param(max_length = 256))]
    pub prefix: Option<String>,
}
