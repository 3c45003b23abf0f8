//! What can go wrong running the simulator itself (not the cloud errors it
//! answers to requests, which are `reply::ApiError`s).

use std::{io, net::SocketAddr};

/// A simulator failure: binding its endpoints or running fleet `sshd`s.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An endpoint address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A fleet `sshd` (or the `ssh-keygen` it needs) did not come up.
    #[error("sshd for instance {instance}: {detail}")]
    Sshd {
        /// The instance it was for.
        instance: String,
        /// What happened, with the end of its log when there is one.
        detail: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
