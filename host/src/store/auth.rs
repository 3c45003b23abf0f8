//! Users, browser sessions and personal API tokens.
//!
//! Secrets are never stored: sessions and tokens are kept as SHA-256 hashes
//! of their random values, passwords as argon2 hashes (made by `auth`).

use sqlx::FromRow;
use time::OffsetDateTime;

use super::{Error, Result, Store, Window, conflict_on, datetime, millis, now_millis};

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct UserRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// Unique login name.
    pub username: String,
    /// The user's role.
    pub role: String,
}

/// A live browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Whose session it is.
    pub user: UserRecord,
    /// The token cookie-authenticated writes must echo.
    pub csrf_token: String,
}

/// A stored API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Id assigned by the database.
    pub id: i64,
    /// The label given at creation.
    pub name: String,
    /// The first characters of the secret.
    pub prefix: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last authenticated use, if any.
    pub last_used_at: Option<OffsetDateTime>,
}

#[derive(FromRow)]
struct TokenRow {
    id: i64,
    name: String,
    prefix: String,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl From<TokenRow> for TokenRecord {
    fn from(row: TokenRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            created_at: datetime(row.created_at),
            last_used_at: row.last_used_at.map(datetime),
        }
    }
}

/// How stale `last_used_at` may get before a use rewrites it; saves a write
/// per request for busy automation.
const LAST_USED_GRANULARITY_MS: i64 = 60_000;

impl Store {
    /// How many users exist.
    pub async fn count_users(&self) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as("select count(*) from users")
            .fetch_one(&self.reads)
            .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// Creates a user; [`Error::Conflict`] on `username` if it is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: &str,
    ) -> Result<UserRecord> {
        let now = now_millis();
        sqlx::query_as(
            "insert into users (username, password_hash, role, created_at, updated_at) \
             values ($1, $2, $3, $4, $4) returning id, username, role",
        )
        .bind(username)
        .bind(password_hash)
        .bind(role)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("username", username))
    }

    /// One window of the users, by id, and how many there are.
    pub async fn list_users(&self, window: Window) -> Result<(Vec<UserRecord>, u64)> {
        let (total,): (i64,) = sqlx::query_as("select count(*) from users")
            .fetch_one(&self.reads)
            .await?;
        let users =
            sqlx::query_as("select id, username, role from users order by id limit $1 offset $2")
                .bind(window.limit())
                .bind(window.offset())
                .fetch_all(&self.reads)
                .await?;
        Ok((users, u64::try_from(total).unwrap_or_default()))
    }

    /// The user with this id.
    pub async fn user(&self, id: i64) -> Result<Option<UserRecord>> {
        Ok(
            sqlx::query_as("select id, username, role from users where id = $1")
                .bind(id)
                .fetch_optional(&self.reads)
                .await?,
        )
    }

    /// The user with this name and their password hash.
    pub async fn user_credentials(&self, username: &str) -> Result<Option<(UserRecord, String)>> {
        let row: Option<(i64, String, String, String)> = sqlx::query_as(
            "select id, username, role, password_hash from users where username = $1",
        )
        .bind(username)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|(id, username, role, hash)| (UserRecord { id, username, role }, hash)))
    }

    /// Records a session whose secret hashes to `id_hash`.
    pub async fn create_session(
        &self,
        id_hash: &str,
        user_id: i64,
        csrf_token: &str,
        expires_at: OffsetDateTime,
    ) -> Result<()> {
        // Logging in is a good moment to forget sessions nobody can use any more.
        let now = now_millis();
        sqlx::query("delete from sessions where expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "insert into sessions (id_hash, user_id, csrf_token, created_at, expires_at) \
             values ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(now)
        .bind(millis(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The unexpired session whose secret hashes to `id_hash`.
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>> {
        let row: Option<(i64, String, String, String)> = sqlx::query_as(
            "select u.id, u.username, u.role, s.csrf_token from sessions s \
             join users u on u.id = s.user_id where s.id_hash = $1 and s.expires_at > $2",
        )
        .bind(id_hash)
        .bind(now_millis())
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|(id, username, role, csrf_token)| SessionRecord {
            user: UserRecord { id, username, role },
            csrf_token,
        }))
    }

    /// Ends the session whose secret hashes to `id_hash`; ending an unknown one is not an error.
    pub async fn delete_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("delete from sessions where id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records an API token for `user_id` whose secret hashes to `token_hash`.
    pub async fn create_token(
        &self,
        user_id: i64,
        name: &str,
        prefix: &str,
        token_hash: &str,
    ) -> Result<TokenRecord> {
        let row: TokenRow = sqlx::query_as(
            "insert into api_tokens (user_id, name, prefix, token_hash, created_at) \
             values ($1, $2, $3, $4, $5) returning id, name, prefix, created_at, last_used_at",
        )
        .bind(user_id)
        .bind(name)
        .bind(prefix)
        .bind(token_hash)
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }

    /// One window of a user's tokens, newest first, and how many they have.
    pub async fn list_tokens(
        &self,
        user_id: i64,
        window: Window,
    ) -> Result<(Vec<TokenRecord>, u64)> {
        let (total,): (i64,) = sqlx::query_as("select count(*) from api_tokens where user_id = $1")
            .bind(user_id)
            .fetch_one(&self.reads)
            .await?;
        let rows: Vec<TokenRow> = sqlx::query_as(
            "select id, name, prefix, created_at, last_used_at from api_tokens \
             where user_id = $1 order by id desc limit $2 offset $3",
        )
        .bind(user_id)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((
            rows.into_iter().map(TokenRecord::from).collect(),
            u64::try_from(total).unwrap_or_default(),
        ))
    }

    /// Revokes one of a user's tokens.
    pub async fn delete_token(&self, user_id: i64, id: i64) -> Result<()> {
        let done = sqlx::query("delete from api_tokens where id = $1 and user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "token" });
        }
        Ok(())
    }

    /// The owner of the token whose secret hashes to `token_hash`, noting the use.
    pub async fn token_user(&self, token_hash: &str) -> Result<Option<UserRecord>> {
        let row: Option<(i64, i64, String, String)> = sqlx::query_as(
            "select t.id, u.id, u.username, u.role from api_tokens t \
             join users u on u.id = t.user_id where t.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some((token_id, id, username, role)) = row else {
            return Ok(None);
        };
        let now = now_millis();
        sqlx::query(
            "update api_tokens set last_used_at = $1 \
             where id = $2 and (last_used_at is null or last_used_at < $3)",
        )
        .bind(now)
        .bind(token_id)
        .bind(now - LAST_USED_GRANULARITY_MS)
        .execute(&self.pool)
        .await?;
        Ok(Some(UserRecord { id, username, role }))
    }
}
