//! Cloud accounts and machine templates with their instance-hour quota.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::{Dependent, Error, Result, Store, Window, conflict_on, datetime, now_millis};

/// Tables that reference an account.
const ACCOUNT_DEPENDENTS: &[Dependent] = &[
    Dependent {
        kind: "machine template",
        names_sql: "select name from machine_templates where account_id = $1 order by name limit 5",
    },
    Dependent {
        kind: "balancer node of unit",
        names_sql: "select u.name from lb_nodes n join lb_units u on u.id = n.unit_id \
                    where n.account_id = $1 order by n.id limit 5",
    },
];

/// Tables that reference a template. Released machines do not count: they
/// keep their history without it.
const TEMPLATE_DEPENDENTS: &[Dependent] = &[
    Dependent {
        kind: "machine",
        names_sql: "select name from machines where template_id = $1 and state <> 'deleted' \
                    order by id limit 5",
    },
    Dependent {
        kind: "pool",
        names_sql: "select name from pools where template_id = $1 order by name limit 5",
    },
];

/// A stored cloud account. The secret stays sealed here; only
/// `machines::account_secrets` opens it, to hand it to a plugin's HMAC (the
/// provider plugin's, or a cloud load balancer's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The cloud-provider plugin.
    pub provider: String,
    /// Non-secret settings as JSON.
    pub config: String,
    /// The public half of the key.
    pub key_id: String,
    /// The secret, sealed by the vault.
    pub secret_sealed: String,
    /// Templates using it.
    pub templates: u64,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    pub updated_at: OffsetDateTime,
}

/// The writable fields of an account, validated and sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountChange {
    /// Unique name.
    pub name: String,
    /// The cloud-provider plugin.
    pub provider: String,
    /// Non-secret settings as JSON.
    pub config: String,
    /// The public half of the key.
    pub key_id: String,
    /// The sealed secret; `None` keeps the stored one (updates only).
    pub secret_sealed: Option<String>,
}

/// A stored machine template with its quota usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The account machines are created with.
    pub account_id: i64,
    /// That account's name.
    pub account_name: String,
    /// That account's provider.
    pub provider: String,
    /// What machines are made of, as JSON.
    pub spec: String,
    /// The login user.
    pub login_user: String,
    /// The init command group; `None` = the server's default.
    pub init_group_id: Option<i64>,
    /// Seconds init may take.
    pub init_timeout_secs: u32,
    /// Instance-hours granted.
    pub quota_hours: i64,
    /// Instance-hours charged so far.
    pub used_hours: i64,
    /// Machines not released.
    pub live_machines: u64,
    /// Machines released.
    pub released_machines: u64,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    pub updated_at: OffsetDateTime,
}

/// The writable fields of a template, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateChange {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The account.
    pub account_id: i64,
    /// Spec as JSON.
    pub spec: String,
    /// Login user.
    pub login_user: String,
    /// Init command group.
    pub init_group_id: Option<i64>,
    /// Seconds init may take.
    pub init_timeout_secs: u32,
    /// Instance-hours granted.
    pub quota_hours: i64,
}

#[derive(FromRow)]
struct AccountRow {
    id: i64,
    name: String,
    provider: String,
    config: String,
    key_id: String,
    secret_sealed: String,
    templates: i64,
    created_at: i64,
    updated_at: i64,
}

impl From<AccountRow> for AccountRecord {
    fn from(r: AccountRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            provider: r.provider,
            config: r.config,
            key_id: r.key_id,
            secret_sealed: r.secret_sealed,
            templates: u64::try_from(r.templates).unwrap_or_default(),
            created_at: datetime(r.created_at),
            updated_at: datetime(r.updated_at),
        }
    }
}

const ACCOUNT_SELECT: &str = "select a.id, a.name, a.provider, a.config, a.key_id, a.secret_sealed, \
     (select count(*) from machine_templates t where t.account_id = a.id) as templates, \
     a.created_at, a.updated_at from cloud_accounts a";

#[derive(FromRow)]
struct TemplateRow {
    id: i64,
    name: String,
    description: String,
    account_id: i64,
    account_name: String,
    provider: String,
    spec: String,
    login_user: String,
    init_group_id: Option<i64>,
    init_timeout_secs: i64,
    quota_hours: i64,
    used_hours: i64,
    live_machines: i64,
    released_machines: i64,
    created_at: i64,
    updated_at: i64,
}

impl From<TemplateRow> for TemplateRecord {
    fn from(r: TemplateRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            description: r.description,
            account_id: r.account_id,
            account_name: r.account_name,
            provider: r.provider,
            spec: r.spec,
            login_user: r.login_user,
            init_group_id: r.init_group_id,
            init_timeout_secs: u32::try_from(r.init_timeout_secs).unwrap_or(u32::MAX),
            quota_hours: r.quota_hours,
            used_hours: r.used_hours,
            live_machines: u64::try_from(r.live_machines).unwrap_or_default(),
            released_machines: u64::try_from(r.released_machines).unwrap_or_default(),
            created_at: datetime(r.created_at),
            updated_at: datetime(r.updated_at),
        }
    }
}

// `cast(… as bigint)`: SQLite sums integers as integers, PostgreSQL as numeric.
const TEMPLATE_SELECT: &str = "select t.id, t.name, t.description, t.account_id, \
     a.name as account_name, a.provider, t.spec, t.login_user, t.init_group_id, \
     t.init_timeout_secs, t.quota_hours, \
     cast(coalesce((select sum(m.charged_hours) from machines m where m.template_id = t.id), 0) as bigint) as used_hours, \
     (select count(*) from machines m where m.template_id = t.id and m.state <> 'deleted') as live_machines, \
     (select count(*) from machines m where m.template_id = t.id and m.state = 'deleted') as released_machines, \
     t.created_at, t.updated_at \
     from machine_templates t join cloud_accounts a on a.id = t.account_id";

impl Store {
    /// Creates an account; [`Error::Conflict`] on `name` if it is taken.
    pub async fn create_account(&self, change: &AccountChange) -> Result<AccountRecord> {
        let now = now_millis();
        let (id,): (i64,) = sqlx::query_as(
            "insert into cloud_accounts (name, provider, config, key_id, secret_sealed, \
             created_at, updated_at) values ($1, $2, $3, $4, $5, $6, $6) returning id",
        )
        .bind(&change.name)
        .bind(&change.provider)
        .bind(&change.config)
        .bind(&change.key_id)
        .bind(change.secret_sealed.as_deref().unwrap_or_default())
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?;
        self.account(id).await
    }

    /// Changes an account; a `None` secret keeps the stored one.
    pub async fn update_account(&self, id: i64, change: &AccountChange) -> Result<AccountRecord> {
        let done = sqlx::query(
            "update cloud_accounts set name = $1, provider = $2, config = $3, key_id = $4, \
             secret_sealed = coalesce($5, secret_sealed), updated_at = $6 where id = $7",
        )
        .bind(&change.name)
        .bind(&change.provider)
        .bind(&change.config)
        .bind(&change.key_id)
        .bind(change.secret_sealed.as_deref())
        .bind(now_millis())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "account" });
        }
        self.account(id).await
    }

    /// One account.
    pub async fn account(&self, id: i64) -> Result<AccountRecord> {
        let row: Option<AccountRow> = sqlx::query_as(&format!("{ACCOUNT_SELECT} where a.id = $1"))
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.map(Into::into)
            .ok_or(Error::NotFound { what: "account" })
    }

    /// One account by name.
    pub async fn account_named(&self, name: &str) -> Result<Option<AccountRecord>> {
        let row: Option<AccountRow> =
            sqlx::query_as(&format!("{ACCOUNT_SELECT} where a.name = $1"))
                .bind(name)
                .fetch_optional(&self.reads)
                .await?;
        Ok(row.map(Into::into))
    }

    /// A window of the accounts, by name, and how many there are.
    pub async fn accounts(&self, window: Window) -> Result<(Vec<AccountRecord>, u64)> {
        let (rows, total) = self
            .page::<AccountRow>(ACCOUNT_SELECT, "cloud_accounts", "a.name, a.id", window)
            .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    /// Deletes an account no template uses.
    pub async fn delete_account(&self, id: i64) -> Result<()> {
        self.ensure_unreferenced("account", ACCOUNT_DEPENDENTS, id)
            .await?;
        let done = sqlx::query("delete from cloud_accounts where id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "account" });
        }
        Ok(())
    }

    /// Creates a template; [`Error::Conflict`] on `name` if it is taken.
    pub async fn create_template(&self, change: &TemplateChange) -> Result<TemplateRecord> {
        let now = now_millis();
        let (id,): (i64,) = sqlx::query_as(
            "insert into machine_templates (name, description, account_id, spec, login_user, \
             init_group_id, init_timeout_secs, quota_hours, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) returning id",
        )
        .bind(&change.name)
        .bind(&change.description)
        .bind(change.account_id)
        .bind(&change.spec)
        .bind(&change.login_user)
        .bind(change.init_group_id)
        .bind(i64::from(change.init_timeout_secs))
        .bind(change.quota_hours)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?;
        self.template(id).await
    }

    /// Changes a template. Machines already made keep what they were made of.
    pub async fn update_template(
        &self,
        id: i64,
        change: &TemplateChange,
    ) -> Result<TemplateRecord> {
        let done = sqlx::query(
            "update machine_templates set name = $1, description = $2, account_id = $3, \
             spec = $4, login_user = $5, init_group_id = $6, init_timeout_secs = $7, \
             quota_hours = $8, updated_at = $9 where id = $10",
        )
        .bind(&change.name)
        .bind(&change.description)
        .bind(change.account_id)
        .bind(&change.spec)
        .bind(&change.login_user)
        .bind(change.init_group_id)
        .bind(i64::from(change.init_timeout_secs))
        .bind(change.quota_hours)
        .bind(now_millis())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(conflict_on("name", &change.name))?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound {
                what: "machine template",
            });
        }
        self.template(id).await
    }

    /// Sets a template's granted instance-hours.
    pub async fn set_quota(&self, id: i64, quota_hours: i64) -> Result<TemplateRecord> {
        let done = sqlx::query(
            "update machine_templates set quota_hours = $1, updated_at = $2 where id = $3",
        )
        .bind(quota_hours)
        .bind(now_millis())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound {
                what: "machine template",
            });
        }
        self.template(id).await
    }

    /// One template with its usage.
    pub async fn template(&self, id: i64) -> Result<TemplateRecord> {
        let row: Option<TemplateRow> =
            sqlx::query_as(&format!("{TEMPLATE_SELECT} where t.id = $1"))
                .bind(id)
                .fetch_optional(&self.reads)
                .await?;
        row.map(Into::into).ok_or(Error::NotFound {
            what: "machine template",
        })
    }

    /// A window of the templates with their usage, by name, and how many there are.
    pub async fn templates(&self, window: Window) -> Result<(Vec<TemplateRecord>, u64)> {
        let (rows, total) = self
            .page::<TemplateRow>(TEMPLATE_SELECT, "machine_templates", "t.name, t.id", window)
            .await?;
        Ok((rows.into_iter().map(Into::into).collect(), total))
    }

    /// The `limit` templates with the least credit (quota − charged hours)
    /// left, least first.
    pub async fn templates_by_credit(&self, limit: u32) -> Result<Vec<TemplateRecord>> {
        let rows: Vec<TemplateRow> = sqlx::query_as(&format!(
            "select * from ({TEMPLATE_SELECT}) q \
             order by q.quota_hours - q.used_hours, q.name, q.id limit $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Deletes a template no live machine uses; released machines keep
    /// their history and lose the link.
    pub async fn delete_template(&self, id: i64) -> Result<()> {
        self.ensure_unreferenced("machine template", TEMPLATE_DEPENDENTS, id)
            .await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("update machines set template_id = null where template_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("delete from machine_templates where id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound {
                what: "machine template",
            });
        }
        tx.commit().await?;
        Ok(())
    }
}
