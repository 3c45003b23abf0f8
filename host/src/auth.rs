//! Who is calling: passwords, browser sessions, API tokens and CSRF.
//!
//! Two ways in, both checked by [`Auth::authenticate`]:
//! - `Authorization: Bearer <token>` — personal API tokens for automation;
//! - the `dcp_session` cookie — for the web UI. Because browsers send cookies
//!   on their own, a cookie-authenticated write must also carry the session's
//!   CSRF token in `X-CSRF-Token` (the double-submit pattern: the token is
//!   also in the readable `dcp_csrf` cookie, which other origins cannot read).
//!
//! Logins are throttled (see [`throttle`]): growing lock-outs per user name
//! and per client address, and a bound on the argon2 hashes running or
//! waiting, so a flood of guesses costs bounded memory and CPU.

pub mod throttle;

use std::{net::IpAddr, sync::Arc, time::Duration};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, Salt, SaltString, rand_core::OsRng},
};
use rand::{Rng, distributions::Alphanumeric};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use self::throttle::{HashingSlot, LockState, Policy, Refusal, Throttle};
use crate::{
    sha256_hex,
    store::{self, SessionRecord, Store, TokenRecord, UserRecord, Window},
};

/// The session cookie (HTTP-only).
pub const SESSION_COOKIE: &str = "dcp_session";
/// The CSRF cookie (readable by the UI's script).
pub const CSRF_COOKIE: &str = "dcp_csrf";
/// The header cookie-authenticated writes echo the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Every API token starts with this, so leaked tokens are easy to scan for.
pub const TOKEN_PREFIX: &str = "dcp_";

/// Why a caller was turned away.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credentials at all.
    #[error(
        "authentication required: log in or send an API token as 'Authorization: Bearer <token>'"
    )]
    Missing,
    /// The bearer token is unknown or revoked.
    #[error("the API token is invalid or has been revoked")]
    InvalidToken,
    /// The session cookie is unknown, expired or logged out.
    #[error("the session has expired; log in again")]
    SessionExpired,
    /// A cookie-authenticated write came without the matching CSRF token.
    #[error(
        "missing or wrong X-CSRF-Token header: cookie-authenticated writes must echo the dcp_csrf cookie"
    )]
    CsrfMismatch,
    /// Wrong user name or password (deliberately not saying which).
    #[error("wrong user name or password")]
    BadLogin,
    /// Too many failed logins for this user name or from this address.
    #[error("too many failed logins; try again in {} s", .retry_after.as_secs().max(1))]
    LockedOut {
        /// How long the lock-out lasts.
        retry_after: Duration,
    },
    /// Every password-hashing slot and queue place is taken.
    #[error("too many logins in progress; try again shortly")]
    Busy,
    /// The caller may not do this (not an administrator).
    #[error("only administrators may {0}")]
    Forbidden(&'static str),
    /// No such user.
    #[error("no such user")]
    NoSuchUser,
    /// Hashing failed or the store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Password hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// The credentials a request presented.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// An `Authorization: Bearer` token.
    Bearer(&'a str),
    /// A session cookie, with the CSRF header if any, and whether the method writes.
    Session {
        /// The cookie's value.
        secret: &'a str,
        /// The `X-CSRF-Token` header, if sent.
        csrf_header: Option<&'a str>,
        /// Whether the request may change state (anything but GET/HEAD/OPTIONS).
        writes: bool,
    },
    /// Nothing.
    None,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who is calling.
    pub user: UserRecord,
    /// The session's CSRF token, when authenticated by cookie.
    pub csrf_token: Option<String>,
}

/// A new browser session: the secrets go into cookies, never into the store.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The session cookie's value.
    pub secret: String,
    /// The CSRF cookie's value.
    pub csrf_token: String,
    /// The user logged in.
    pub user: UserRecord,
    /// How long the session lasts.
    pub ttl: Duration,
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Locked(retry_after) => Self::LockedOut { retry_after },
            Refusal::Busy => Self::Busy,
        }
    }
}

/// The role that may manage users.
pub const ADMIN_ROLE: &str = "admin";

/// Password, session and token logic over the store.
#[derive(Clone)]
pub struct Auth {
    store: Store,
    session_ttl: Duration,
    throttle: Arc<Throttle>,
    /// Verified against when the user name is unknown, so a failed login takes
    /// as long whether or not the user exists.
    decoy_hash: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Auth over `store`, with sessions lasting `session_ttl` and logins
    /// throttled by `policy`.
    pub async fn new(store: Store, session_ttl: Duration, policy: Policy) -> Result<Self, Error> {
        let throttle = Arc::new(Throttle::new(policy));
        let decoy_hash = hash_password(&throttle, random_secret(24)).await?;
        Ok(Self {
            store,
            session_ttl,
            throttle,
            decoy_hash,
        })
    }

    /// Creates the `admin` user if there are no users yet. Returns the
    /// password when it was generated, so the caller can show it once.
    pub async fn bootstrap_admin(&self, password: Option<&str>) -> Result<Option<String>, Error> {
        if self.store.count_users().await? > 0 {
            return Ok(None);
        }
        let generated = password.is_none().then(|| random_secret(20));
        let password =
            password.map_or_else(|| generated.clone().unwrap_or_default(), str::to_owned);
        let hash = hash_password(&self.throttle, password).await?;
        match self.store.create_user("admin", &hash, "admin").await {
            // Another replica won the race to create it; theirs stands.
            Err(store::Error::Conflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(generated),
        }
    }

    /// Checks a user name and password from client address `addr` (when
    /// known) and opens a session. Locked-out names and addresses, and
    /// logins beyond the hashing queue, are refused before any hashing.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        addr: Option<IpAddr>,
    ) -> Result<NewSession, Error> {
        let _admission = match self.throttle.admit(username, addr) {
            Ok(admission) => admission,
            // Refused slowly: a flood from a locked-out client then holds a
            // sleeping request per connection rather than a share of the CPU
            // every signed-in user needs.
            Err(Refusal::Locked(left)) => {
                let hold = self.throttle.tarpit(left);
                tokio::time::sleep(hold).await;
                return Err(Error::LockedOut {
                    retry_after: left.saturating_sub(hold),
                });
            }
            Err(refusal) => return Err(refusal.into()),
        };
        // The row is read (and its connection returned to the pool) before
        // hashing: a queue of slow hashes must not hold the database.
        let found = self.store.user_credentials(username).await?;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, self.decoy_hash.clone()),
        };
        let ok = verify_password(&self.throttle, password.to_owned(), hash).await?;
        let user = match user {
            Some(user) if ok => user,
            _ => {
                // Unknown names count too, so a lock-out does not tell
                // which names exist.
                self.throttle.failed(username, addr);
                return Err(Error::BadLogin);
            }
        };
        self.throttle.succeeded(username, addr)?;
        let secret = random_secret(32);
        let csrf_token = random_secret(32);
        let expires_at = OffsetDateTime::now_utc() + self.session_ttl;
        self.store
            .create_session(
                &sha256_hex(secret.as_bytes()),
                user.id,
                &csrf_token,
                expires_at,
            )
            .await?;
        Ok(NewSession {
            secret,
            csrf_token,
            user,
            ttl: self.session_ttl,
        })
    }

    /// Ends the session with this cookie value.
    pub async fn logout(&self, secret: &str) -> Result<(), Error> {
        Ok(self
            .store
            .delete_session(&sha256_hex(secret.as_bytes()))
            .await?)
    }

    /// Identifies the caller, enforcing CSRF protection on cookie-authenticated writes.
    pub async fn authenticate(&self, credentials: Credentials<'_>) -> Result<Principal, Error> {
        match credentials {
            Credentials::None => Err(Error::Missing),
            Credentials::Bearer(token) => {
                let user = self
                    .store
                    .token_user(&sha256_hex(token.as_bytes()))
                    .await?
                    .ok_or(Error::InvalidToken)?;
                Ok(Principal {
                    user,
                    csrf_token: None,
                })
            }
            Credentials::Session {
                secret,
                csrf_header,
                writes,
            } => {
                let SessionRecord { user, csrf_token } = self
                    .store
                    .session(&sha256_hex(secret.as_bytes()))
                    .await?
                    .ok_or(Error::SessionExpired)?;
                if writes {
                    let sent = csrf_header.unwrap_or_default();
                    if !bool::from(sent.as_bytes().ct_eq(csrf_token.as_bytes())) {
                        return Err(Error::CsrfMismatch);
                    }
                }
                Ok(Principal {
                    user,
                    csrf_token: Some(csrf_token),
                })
            }
        }
    }

    /// Creates a personal API token; the returned secret is not stored and
    /// cannot be shown again.
    pub async fn create_token(
        &self,
        user_id: i64,
        name: &str,
    ) -> Result<(TokenRecord, String), Error> {
        let secret = format!("{TOKEN_PREFIX}{}", random_secret(40));
        let prefix: String = secret.chars().take(TOKEN_PREFIX.len() + 6).collect();
        let record = self
            .store
            .create_token(user_id, name, &prefix, &sha256_hex(secret.as_bytes()))
            .await?;
        Ok((record, secret))
    }
}

/// A user and their lock-out state, as administrators see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStatus {
    /// The user.
    pub user: UserRecord,
    /// Their failed logins and lock-out.
    pub lock: LockState,
}

impl Auth {
    fn require_admin(caller: &UserRecord, what: &'static str) -> Result<(), Error> {
        if caller.role == ADMIN_ROLE {
            Ok(())
        } else {
            Err(Error::Forbidden(what))
        }
    }

    /// One window of the users, with their lock-out state (administrators only).
    pub async fn users(
        &self,
        caller: &UserRecord,
        window: Window,
    ) -> Result<(Vec<UserStatus>, u64), Error> {
        Self::require_admin(caller, "list users")?;
        let (users, total) = self.store.list_users(window).await?;
        let users = users
            .into_iter()
            .map(|user| UserStatus {
                lock: self.throttle.state(&user.username),
                user,
            })
            .collect();
        Ok((users, total))
    }

    /// Forgets a user's failed logins and ends their lock-out (administrators only).
    pub async fn unlock(&self, caller: &UserRecord, user_id: i64) -> Result<UserStatus, Error> {
        Self::require_admin(caller, "unlock users")?;
        let user = self.store.user(user_id).await?.ok_or(Error::NoSuchUser)?;
        self.throttle.unlock(&user.username);
        tracing::info!(user = %user.username, by = %caller.username, "login lock-out lifted");
        Ok(UserStatus {
            lock: self.throttle.state(&user.username),
            user,
        })
    }
}

/// A random alphanumeric string: `len` characters of 62 symbols each
/// (32 characters ≈ 190 bits).
pub(crate) fn random_secret(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Argon2id with the crate's defaults (19 MiB, 2 passes), off the async
/// threads and within the throttle's hashing slots: memory in use for
/// hashing stays under 19 MiB × `login_concurrency`.
async fn hash_password(throttle: &Throttle, password: String) -> Result<String, Error> {
    let mut slot = throttle
        .hashing_slot()
        .await
        .ok_or_else(|| Error::Hash("no hashing slots".into()))?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        let argon = Argon2::default();
        let params = argon.params().clone();
        let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let output = argon2_output(&argon, &mut slot, password.as_bytes(), salt.as_salt(), len)?;
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(hash_error)?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(hash.to_string())
    })
    .await
    .map_err(hash_error)?
}

async fn verify_password(
    throttle: &Throttle,
    password: String,
    hash: String,
) -> Result<bool, Error> {
    let mut slot = throttle
        .hashing_slot()
        .await
        .ok_or_else(|| Error::Hash("no hashing slots".into()))?;
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(hash_error)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Err(Error::Hash("a stored hash without salt or output".into()));
        };
        let algorithm = Algorithm::try_from(parsed.algorithm).map_err(hash_error)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(hash_error)?
            .unwrap_or_default();
        let params = Params::try_from(&parsed).map_err(hash_error)?;
        let argon = Argon2::new(algorithm, version, params);
        let output = argon2_output(&argon, &mut slot, password.as_bytes(), salt, expected.len())?;
        // `Output`'s equality is constant-time.
        Ok(output == expected)
    })
    .await
    .map_err(hash_error)?
}

/// `len` bytes of `argon`'s hash of `password` with `salt`, worked out in
/// the slot's own memory: the 19 MiB working area is allocated once per
/// slot and reused, where a fresh one per login left every blocking
/// thread's allocator arena holding its own (hundreds of MiB under a flood).
fn argon2_output(
    argon: &Argon2<'_>,
    slot: &mut HashingSlot,
    password: &[u8],
    salt: Salt<'_>,
    len: usize,
) -> Result<Output, Error> {
    let mut salt_bytes = [0_u8; Salt::MAX_LENGTH];
    let salt = salt.decode_b64(&mut salt_bytes).map_err(hash_error)?;
    let memory = slot.memory(argon.params().block_count());
    Output::init_with(len, |out| {
        Ok(argon.hash_password_into_with_memory(password, salt, out, &mut *memory)?)
    })
    .map_err(hash_error)
}

fn hash_error(e: impl std::fmt::Display) -> Error {
    Error::Hash(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_only_against_their_hash() {
        let throttle = Throttle::new(Policy::default());
        let hash = hash_password(&throttle, "correct horse".into())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify_password(&throttle, "correct horse".into(), hash.clone())
                .await
                .unwrap()
        );
        assert!(
            !verify_password(&throttle, "Correct horse".into(), hash)
                .await
                .unwrap()
        );
    }

    #[test]
    fn token_hashes_are_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn secrets_are_long_and_distinct() {
        let (a, b) = (random_secret(32), random_secret(32));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
