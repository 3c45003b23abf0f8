//! App keys: how other systems (a deploy pipeline, a CMDB, another
//! scheduler) register and unregister backends without a user's login
//! (hubble's appkey / interface / privilege). A key is shown once, stored
//! as its SHA-256, revocable, and may call only the interfaces it was
//! granted.

use dcp_api_types::{AlterationBackend, AlterationInput, AppKeyInput, BackendSpec};

use super::{Discovery, Error, MemberChange, Op, check_backends};
use crate::{
    auth::random_secret,
    sha256_hex,
    store::{AppKeyRecord, BindingRecord, ChangeRecord},
    validate::{self, Checks, Invalid},
};

/// The interfaces a key may be granted.
pub const PRIVILEGES: [&str; 3] = [
    "alterations.register",
    "alterations.unregister",
    "alterations.read",
];
/// What every app key starts with, so a leaked one is recognisable.
const KEY_PREFIX: &str = "dcpak_";

/// The stored form of a key.
#[must_use]
pub fn hash_key(secret: &str) -> String {
    sha256_hex(secret.as_bytes())
}

/// Why an app key may not make a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No key, or one DCP does not know (401).
    #[error("send a valid app key in the X-App-Key header")]
    Unknown,
    /// A revoked key (401).
    #[error("app key {0} was revoked")]
    Revoked(String),
    /// A key without the interface's privilege (403).
    #[error("app key {key} lacks the privilege {privilege}")]
    Lacks {
        /// The key's name.
        key: String,
        /// The privilege needed.
        privilege: &'static str,
    },
}

fn privileges(field: &str, given: &[String]) -> Result<String, Invalid> {
    let mut checks = Checks::default();
    for (i, p) in given.iter().enumerate() {
        if !PRIVILEGES.contains(&p.as_str()) {
            checks.check(Err(Invalid::new(
                format!("{field}[{i}]"),
                format!("must be one of {}", PRIVILEGES.join(", ")),
            )));
        }
    }
    checks.finish()?;
    let mut kept: Vec<&String> = given.iter().collect();
    kept.sort();
    kept.dedup();
    Ok(serde_json::to_string(&kept).unwrap_or_default())
}

impl Discovery {
    /// Makes an app key; answers it and its secret, shown this once.
    pub async fn create_app_key(
        &self,
        input: AppKeyInput,
        by: &str,
    ) -> Result<(AppKeyRecord, String), Error> {
        let mut checks = Checks::default();
        checks.check(validate::identifier("name", &input.name, super::NAME_MAX));
        let granted = privileges("privileges", &input.privileges);
        checks.check(granted.as_ref().map(|_| ()).map_err(Clone::clone));
        checks.finish()?;
        let secret = format!("{KEY_PREFIX}{}", random_secret(40));
        let prefix: String = secret.chars().take(KEY_PREFIX.len() + 6).collect();
        let record = self
            .store
            .create_app_key(&input.name, &hash_key(&secret), &prefix, &granted?, by)
            .await?;
        Ok((record, secret))
    }

    /// Replaces a key's privileges.
    pub async fn set_app_key_privileges(
        &self,
        id: i64,
        given: &[String],
    ) -> Result<AppKeyRecord, Error> {
        let granted = privileges("privileges", given)?;
        Ok(self.store.set_app_key_privileges(id, &granted).await?)
    }

    /// The live key `secret` is, marked used.
    pub async fn identify(&self, secret: Option<&str>) -> Result<AppKeyRecord, Refusal> {
        let secret = secret.filter(|s| s.starts_with(KEY_PREFIX) && s.len() <= 128);
        let Some(secret) = secret else {
            return Err(Refusal::Unknown);
        };
        let key = self
            .store
            .app_key_by_hash(&hash_key(secret))
            .await
            .ok()
            .flatten()
            .ok_or(Refusal::Unknown)?;
        if key.revoked_at.is_some() {
            return Err(Refusal::Revoked(key.name));
        }
        Ok(key)
    }

    /// Whether `key` may call the interface `privilege`.
    pub fn permit(key: &AppKeyRecord, privilege: &'static str) -> Result<(), Refusal> {
        let granted: Vec<String> = serde_json::from_str(&key.privileges).unwrap_or_default();
        if granted.iter().any(|p| p == privilege) {
            Ok(())
        } else {
            Err(Refusal::Lacks {
                key: key.name.clone(),
                privilege,
            })
        }
    }

    /// Starts an alteration for `key`: recorded now, applied and pushed in
    /// the background; answers the pending change (poll it by id). The
    /// same idempotency key answers the change made the first time.
    pub async fn alter(
        self: &std::sync::Arc<Self>,
        key: &AppKeyRecord,
        op: Op,
        input: &AlterationInput,
        correlation_id: &str,
        idempotency_key: Option<String>,
    ) -> Result<ChangeRecord, Error> {
        let binding = input.binding.as_str();
        let binding = self
            .store
            .bindings()
            .await?
            .into_iter()
            .find(|b| b.name == binding)
            .ok_or_else(|| Invalid::new("binding", format!("no binding named {binding:?}")))?;
        let backends = backends_of(&binding, &input.backends)?;
        let change = MemberChange {
            actor: format!("app-key:{}", key.name),
            upstream_id: binding.upstream_id,
            op,
            backends,
            force: input.force,
            correlation_id: correlation_id.to_owned(),
            idempotency_key: idempotency_key.map(|k| format!("app-key:{}:{k}", key.id)),
        };
        let turn = self.alterations.clone().try_acquire_owned().map_err(|_| {
            Error::Busy(format!(
                "{} alterations are waiting to be applied; try again shortly",
                super::ALTERATIONS_PENDING_MAX
            ))
        })?;
        let (record, fresh) = self.open(&change).await?;
        if fresh || record.state == "pending" {
            let this = self.clone();
            let pending = record.clone();
            tokio::spawn(async move {
                let _turn = turn;
                if let Err(e) = this.complete(pending, fresh, &change).await {
                    tracing::info!("alteration refused: {e}");
                }
            });
        }
        Ok(record)
    }
}

/// The backends of an alteration, the binding's port and weight filled in.
fn backends_of(
    binding: &BindingRecord,
    given: &[AlterationBackend],
) -> Result<Vec<BackendSpec>, Invalid> {
    let mut out = Vec::with_capacity(given.len());
    for (i, b) in given.iter().enumerate() {
        let port = b
            .port
            .or_else(|| binding.port.and_then(|p| u16::try_from(p).ok()))
            .ok_or_else(|| {
                Invalid::new(
                    format!("backends[{i}].port"),
                    format!(
                        "binding {} names no port, so each backend must",
                        binding.name
                    ),
                )
            })?;
        out.push(BackendSpec {
            address: b.address.clone(),
            port,
            weight: b.weight.or_else(|| u32::try_from(binding.weight).ok()),
        });
    }
    check_backends("backends", &out, super::CHANGE_MAX)?;
    Ok(out)
}
