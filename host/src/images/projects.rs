//! Image projects: a repository of the registry and how its image is made
//! — a Dockerfile as text, from git, or from the instruction form — with
//! the deploy media its context gets. Passwords are sealed by the vault
//! and never leave this module but to the program that fetches.

use std::collections::BTreeMap;

use dcp_api_types::{
    DockerfileInput, GitSourceInput, ImageProjectInput, Instruction, MediaInput, MediaKind,
};
use serde::{Deserialize, Serialize};

use super::{
    Error, dockerfile,
    sources::{self, Credentials},
};
use crate::{
    store::{ProjectChange, ProjectRecord},
    validate::{self, Checks, Invalid},
    vault::Vault,
};

/// The vault purpose of a project's repository passwords.
const SOURCE_SECRET: &str = "image-source-secret";
/// The most build arguments.
const BUILD_ARGS_MAX: usize = 64;
/// The most characters of a text Dockerfile.
const DOCKERFILE_MAX: usize = 65_536;
/// The namespace of base images users push themselves.
pub const BASE_NAMESPACE: &str = "base/";

/// How a project's Dockerfile is made, as stored (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Written as text.
    Text {
        /// The Dockerfile.
        dockerfile: String,
    },
    /// From git: the context is the directory holding `path`.
    Git {
        /// The repository.
        url: String,
        /// The ref.
        git_ref: String,
        /// The Dockerfile's path in it.
        path: String,
        /// The user, if any.
        username: Option<String>,
    },
    /// From the instruction form.
    Form {
        /// The instructions.
        instructions: Vec<Instruction>,
    },
}

/// The deploy media, as stored (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaSpec {
    /// git or svn.
    pub kind: MediaKind,
    /// Where from.
    pub url: String,
    /// git: a ref; svn: a revision or HEAD.
    pub revision: String,
    /// git: the directory taken.
    pub subdirectory: String,
    /// Where in the context they land.
    pub target: String,
    /// The user, if any.
    pub username: Option<String>,
}

/// A project, its parts read.
#[derive(Debug, Clone)]
pub struct Project {
    /// As stored.
    pub record: ProjectRecord,
    /// How its Dockerfile is made.
    pub source: Source,
    /// Its media.
    pub media: Option<MediaSpec>,
    /// Its build arguments.
    pub build_args: BTreeMap<String, String>,
}

impl Project {
    /// Reads a stored project.
    ///
    /// # Errors
    /// A stored part DCP cannot read.
    pub fn read(record: ProjectRecord) -> Result<Self, Error> {
        let corrupt = |column: &'static str, value: &str| {
            Error::Store(crate::store::Error::Corrupt {
                column,
                value: value.chars().take(80).collect(),
            })
        };
        let source = serde_json::from_str(&record.dockerfile)
            .map_err(|_| corrupt("image_projects.dockerfile", &record.dockerfile))?;
        let media = match &record.media {
            Some(json) => Some(
                serde_json::from_str(json).map_err(|_| corrupt("image_projects.media", json))?,
            ),
            None => None,
        };
        let build_args = serde_json::from_str(&record.build_args)
            .map_err(|_| corrupt("image_projects.build_args", &record.build_args))?;
        Ok(Self {
            record,
            source,
            media,
            build_args,
        })
    }

    /// The Dockerfile, when it is known before a build (text and form).
    #[must_use]
    pub fn rendered(&self) -> Option<String> {
        match &self.source {
            Source::Text { dockerfile } => Some(dockerfile.clone()),
            Source::Form { instructions } => dockerfile::render(instructions).ok(),
            Source::Git { .. } => None,
        }
    }

    /// The Dockerfile repository's credentials, opened.
    pub(super) fn source_credentials(&self, vault: &Vault) -> Result<Option<Credentials>, String> {
        let username = match &self.source {
            Source::Git { username, .. } => username.as_deref(),
            _ => None,
        };
        open(vault, username, self.record.source_secret_sealed.as_deref())
    }

    /// The media repository's credentials, opened.
    pub(super) fn media_credentials(&self, vault: &Vault) -> Result<Option<Credentials>, String> {
        let username = self.media.as_ref().and_then(|m| m.username.as_deref());
        open(vault, username, self.record.media_secret_sealed.as_deref())
    }
}

fn open(
    vault: &Vault,
    username: Option<&str>,
    sealed: Option<&str>,
) -> Result<Option<Credentials>, String> {
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let password = vault
        .open_text(SOURCE_SECRET, sealed)
        .map_err(|e| format!("the stored repository password does not open: {e}"))?;
    Ok(Some(Credentials {
        username: username.unwrap_or_default().to_owned(),
        password,
    }))
}

/// Checks a project as set and makes its stored form, sealing passwords;
/// `stored` is the project it changes (an omitted password keeps its).
///
/// # Errors
/// Every field that breaks a rule.
pub fn change(
    input: &ImageProjectInput,
    stored: Option<&ProjectRecord>,
    vault: &Vault,
) -> Result<ProjectChange, Error> {
    let mut checks = Checks::default();
    checks.check(repository(&input.repository));
    checks.check(validate::max_chars("description", &input.description, 1024));
    let (source, source_password) = match &input.dockerfile {
        DockerfileInput::Text { dockerfile } => {
            checks.check(validate::required(
                "dockerfile.dockerfile",
                dockerfile,
                DOCKERFILE_MAX,
            ));
            (
                Source::Text {
                    dockerfile: dockerfile.clone(),
                },
                None,
            )
        }
        DockerfileInput::Git { repository, path } => {
            checks.check(git_source("dockerfile", repository));
            checks.check(sources::check_relative("dockerfile.path", path, false));
            (
                Source::Git {
                    url: repository.url.clone(),
                    git_ref: repository.git_ref.clone(),
                    path: path.clone(),
                    username: nonempty(repository.username.as_ref()),
                },
                repository.password.as_deref(),
            )
        }
        DockerfileInput::Form { instructions } => {
            checks.check(
                dockerfile::render(instructions)
                    .map(drop)
                    .map_err(|e| under("dockerfile.", e)),
            );
            (
                Source::Form {
                    instructions: instructions.clone(),
                },
                None,
            )
        }
    };
    let media = input.media.as_ref().map(|m| {
        checks.check(media(m));
        MediaSpec {
            kind: m.kind,
            url: m.url.clone(),
            revision: m.revision.clone(),
            subdirectory: m.subdirectory.clone(),
            target: m.target.clone(),
            username: nonempty(m.username.as_ref()),
        }
    });
    checks.check(build_args("build_args", &input.build_args));
    checks.finish()?;
    let is_git = matches!(source, Source::Git { .. });
    let source_secret_sealed = sealed(
        vault,
        source_password,
        stored.and_then(|s| s.source_secret_sealed.clone()),
    )
    .filter(|_| is_git);
    let media_secret_sealed = sealed(
        vault,
        input.media.as_ref().and_then(|m| m.password.as_deref()),
        stored.and_then(|s| s.media_secret_sealed.clone()),
    )
    .filter(|_| media.is_some());
    Ok(ProjectChange {
        repository: input.repository.clone(),
        description: input.description.clone(),
        dockerfile: serde_json::to_string(&source).unwrap_or_default(),
        media: media.map(|m| serde_json::to_string(&m).unwrap_or_default()),
        source_secret_sealed,
        media_secret_sealed,
        build_args: serde_json::to_string(&input.build_args).unwrap_or_default(),
    })
}

/// `invalid` (and those checked with it) named under `prefix`.
fn under(prefix: &str, mut invalid: Invalid) -> Invalid {
    invalid.field = format!("{prefix}{}", invalid.field).into();
    invalid.also = invalid.also.into_iter().map(|i| under(prefix, i)).collect();
    invalid
}

/// A password as set: omitted keeps `stored`, `""` removes it.
fn sealed(vault: &Vault, given: Option<&str>, stored: Option<String>) -> Option<String> {
    match given {
        None => stored,
        Some("") => None,
        Some(password) => Some(vault.seal(SOURCE_SECRET, password.as_bytes())),
    }
}

fn nonempty(value: Option<&String>) -> Option<String> {
    value.filter(|v| !v.is_empty()).cloned()
}

fn repository(value: &str) -> Result<(), Invalid> {
    validate::repository("repository", value)?;
    if value.starts_with(BASE_NAMESPACE) {
        return Err(Invalid::new(
            "repository",
            "must not be under base/: that namespace holds the base images users push",
        ));
    }
    Ok(())
}

fn credentials(
    prefix: &str,
    username: Option<&String>,
    password: Option<&String>,
) -> Result<(), Invalid> {
    if let Some(user) = username.filter(|u| !u.is_empty()) {
        validate::name(format!("{prefix}.username"), user, 255)?;
    }
    if let Some(password) = password {
        if password.chars().any(char::is_control) {
            return Err(Invalid::new(
                format!("{prefix}.password"),
                "must not contain control characters",
            ));
        }
        if password.len() > 4096 {
            return Err(Invalid::new(
                format!("{prefix}.password"),
                "must be at most 4096 bytes",
            ));
        }
    }
    Ok(())
}

fn git_source(prefix: &str, git: &GitSourceInput) -> Result<(), Invalid> {
    let mut checks = Checks::default();
    checks.check(sources::check_url(
        &format!("{prefix}.url"),
        &git.url,
        &["http", "https", "git", "ssh"],
    ));
    checks.check(sources::check_git_ref(
        &format!("{prefix}.ref"),
        &git.git_ref,
    ));
    checks.check(credentials(
        prefix,
        git.username.as_ref(),
        git.password.as_ref(),
    ));
    checks.finish()
}

fn media(m: &MediaInput) -> Result<(), Invalid> {
    let mut checks = Checks::default();
    match m.kind {
        MediaKind::Git => {
            checks.check(sources::check_url(
                "media.url",
                &m.url,
                &["http", "https", "git", "ssh"],
            ));
            checks.check(sources::check_git_ref("media.revision", &m.revision));
            checks.check(sources::check_relative(
                "media.subdirectory",
                &m.subdirectory,
                true,
            ));
        }
        MediaKind::Svn => {
            checks.check(sources::check_url(
                "media.url",
                &m.url,
                &["svn", "http", "https"],
            ));
            checks.check(sources::check_svn_revision("media.revision", &m.revision));
            if !m.subdirectory.is_empty() {
                checks.check(Err(Invalid::new(
                    "media.subdirectory",
                    "is for git; name the directory in the svn URL",
                )));
            }
        }
    }
    checks.check(sources::check_relative("media.target", &m.target, false));
    checks.check(credentials(
        "media",
        m.username.as_ref(),
        m.password.as_ref(),
    ));
    checks.finish()
}

/// Build arguments: at most 64, each a variable name with a one-line value.
///
/// # Errors
/// Names the argument.
pub fn build_args(field: &str, args: &BTreeMap<String, String>) -> Result<(), Invalid> {
    if args.len() > BUILD_ARGS_MAX {
        return Err(Invalid::new(
            field.to_owned(),
            format!("must be at most {BUILD_ARGS_MAX}"),
        ));
    }
    for (name, value) in args {
        let ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.len() <= 255
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(Invalid::new(
                format!("{field}.{name}"),
                "must be named with letters, digits and '_', not starting with a digit",
            ));
        }
        if value.contains(['\n', '\r']) {
            return Err(Invalid::new(format!("{field}.{name}"), "must be one line"));
        }
        validate::max_chars(format!("{field}.{name}"), value, 8192)?;
    }
    Ok(())
}
