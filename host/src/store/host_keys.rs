//! SSH host keys trusted on first use.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::{Error, Result, Store, Window, datetime, now_millis};

/// A trusted host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyRecord {
    /// `address:port`.
    pub host: String,
    /// The key's algorithm, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// `SHA256:…`.
    pub fingerprint: String,
    /// The public key in OpenSSH format.
    pub public_key: String,
    /// When it was first seen.
    pub first_seen_at: OffsetDateTime,
    /// When a connection last used it.
    pub last_seen_at: OffsetDateTime,
}

#[derive(FromRow)]
struct Row {
    host: String,
    algorithm: String,
    fingerprint: String,
    public_key: String,
    first_seen_at: i64,
    last_seen_at: i64,
}

impl From<Row> for HostKeyRecord {
    fn from(row: Row) -> Self {
        Self {
            host: row.host,
            algorithm: row.algorithm,
            fingerprint: row.fingerprint,
            public_key: row.public_key,
            first_seen_at: datetime(row.first_seen_at),
            last_seen_at: datetime(row.last_seen_at),
        }
    }
}

const COLUMNS: &str = "host, algorithm, fingerprint, public_key, first_seen_at, last_seen_at";

impl Store {
    /// Trusts `key` for its host unless one is trusted already, and returns
    /// the key trusted now: the caller compares it with what the host
    /// presented. Concurrent first connections agree on one key.
    pub async fn trust_host_key(&self, key: &HostKeyRecord) -> Result<HostKeyRecord> {
        let now = now_millis();
        sqlx::query(
            "insert into ssh_host_keys (host, algorithm, fingerprint, public_key, first_seen_at, \
             last_seen_at) values ($1, $2, $3, $4, $5, $5) on conflict (host) do nothing",
        )
        .bind(&key.host)
        .bind(&key.algorithm)
        .bind(&key.fingerprint)
        .bind(&key.public_key)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let row: Row = sqlx::query_as(&format!(
            "update ssh_host_keys set last_seen_at = $1 where host = $2 returning {COLUMNS}"
        ))
        .bind(now)
        .bind(&key.host)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }

    /// One window of trusted keys, ordered by host, and how many there are.
    pub async fn list_host_keys(&self, window: Window) -> Result<(Vec<HostKeyRecord>, u64)> {
        let (total,): (i64,) = sqlx::query_as("select count(*) from ssh_host_keys")
            .fetch_one(&self.reads)
            .await?;
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "select {COLUMNS} from ssh_host_keys order by host limit $1 offset $2"
        ))
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            rows.into_iter().map(HostKeyRecord::from).collect(),
            u64::try_from(total).unwrap_or_default(),
        ))
    }

    /// Forgets the key filed for `host` (`address:port`) as machine
    /// `released` goes, unless another machine not released uses that
    /// address and port — an adopted server or a newer machine may share
    /// it, and its key must still be checked. Answers whether a key was
    /// forgotten; forgetting twice is harmless, so a replayed release may.
    pub async fn forget_released_host_key(
        &self,
        host: &str,
        address: &str,
        port: u16,
        released: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "delete from ssh_host_keys where host = $1 and not exists (select 1 from machines \
             where address = $2 and port = $3 and id <> $4 and state <> $5)",
        )
        .bind(host)
        .bind(address)
        .bind(i64::from(port))
        .bind(released)
        .bind(dcp_api_types::MachineState::Deleted.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets a host's key, so the next connection trusts what it presents
    /// (after a host was rebuilt).
    pub async fn forget_host_key(&self, host: &str) -> Result<()> {
        let done = sqlx::query("delete from ssh_host_keys where host = $1")
            .bind(host)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "host key" });
        }
        Ok(())
    }
}
