//! Machines (OpenDCP's jupiter): cloud accounts, machine templates with
//! their instance-hour quota, and machines — created from a template by the
//! account's cloud-provider plugin, initialised over SSH, released and
//! charged — or adopted from servers that already exist.
//!
//! Each machine's work (create, wait for it to run, init, release) runs in
//! `lifecycle`, one task per machine, and resumes after a restart from the
//! state in the store: a replayed create carries the same idempotency key,
//! so the cloud answers the instance it made before.

pub mod keys;
mod lifecycle;
pub mod load_balancers;
mod rules;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use dcp_api_types::{
    Account, AccountInput, AdoptMachine, Choice, CreateMachines, FleetPoint, LookupKind,
    LookupQuery, Machine, MachineDetail, MachineEvent, MachineFilter, MachineLogLine, MachineState,
    MachineTemplate, QuotaUsage, TemplateInput, TemplateSpec,
};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::{
    plugins::{self, CloudProvider, Grants, Registry, Secret, WasmPlugin, World},
    remote::{self, Remote, ssh},
    store::{
        self, AccountChange, AccountRecord, MachineRecord, NewMachine, Store, TemplateChange,
        TemplateRecord,
    },
    validate::{self, Invalid},
    vault::{self, Vault},
};

pub use self::{keys::Keyring, rules::billable_hours};

/// The vault purpose of account secrets.
pub const ACCOUNT_SECRET: &str = "account-secret";
/// The name a plugin opens an account's key by (`secrets.open("account")`);
/// its manifest asks for it (`secrets = ["account"]`).
pub const ACCOUNT_GRANT: &str = "account";
/// The vault purpose of machine private keys.
pub(crate) const MACHINE_KEY: &str = "machine-key";
/// The provider name of adopted servers.
pub const ADOPTED: &str = "adopted";
/// Most machines one request may create.
const MAX_COUNT: u32 = 100;
/// Log lines a machine's detail shows.
const LOG_LINES: u32 = 2000;

/// Why a machine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field breaks a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The operation does not fit the current state.
    #[error("{0}")]
    Conflict(String),
    /// The cloud (through its plugin) failed.
    #[error(transparent)]
    Cloud(#[from] plugins::Error),
    /// Something needed is not there (an inactive plugin, shutdown).
    #[error("{0}")]
    Unavailable(String),
    /// A sealed secret did not open.
    #[error(transparent)]
    Vault(#[from] vault::Error),
    /// The cloud has no such thing (a load balancer, a listener).
    #[error("{0}")]
    Missing(String),
}

/// How machines are driven; from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The command group run on new machines whose template names none.
    pub default_init_group: Option<String>,
    /// How often the cloud is asked whether an instance runs (or stopped).
    pub poll: Duration,
    /// How long an instance may take to run, or to stop before deletion.
    pub start_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_init_group: None,
            poll: Duration::from_secs(2),
            start_timeout: Duration::from_secs(600),
        }
    }
}

/// The machines service. One per DCP process.
#[derive(Debug)]
pub struct Machines {
    store: Store,
    plugins: Arc<Registry>,
    remote: Arc<Remote>,
    vault: Arc<Vault>,
    settings: Settings,
    /// Machines whose work runs in this process.
    running: Mutex<HashMap<i64, CancellationToken>>,
    stop: CancellationToken,
}

impl Machines {
    /// The service; resumes the work of machines left mid-way by a previous run.
    pub async fn start(
        store: Store,
        plugins: Arc<Registry>,
        remote: Arc<Remote>,
        vault: Arc<Vault>,
        settings: Settings,
    ) -> Result<Arc<Self>, Error> {
        let machines = Arc::new(Self {
            store,
            plugins,
            remote,
            vault,
            settings,
            running: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
        });
        let unfinished = machines
            .store
            .machines_in(&[
                MachineState::Creating,
                MachineState::Starting,
                MachineState::Initializing,
                MachineState::Deleting,
            ])
            .await?;
        for machine in unfinished {
            tracing::info!(
                machine = machine.id,
                state = machine.state.as_str(),
                "resuming machine work"
            );
            machines.spawn(machine.id);
        }
        Ok(machines)
    }

    /// Stops every machine's work (at shutdown); it resumes on the next start.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Runs a machine's lifecycle in the background unless it runs already.
    fn spawn(self: &Arc<Self>, id: i64) {
        let token = self.stop.child_token();
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if running.contains_key(&id) {
                return;
            }
            running.insert(id, token.clone());
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            lifecycle::drive(&this, id, &token).await;
            this.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }

    // ---- accounts ----

    /// An account as the API shows it, with what its provider can do now.
    fn account_api(&self, a: AccountRecord) -> Account {
        let manages = self
            .plugins
            .active(&a.provider)
            .is_some_and(|active| active.plugin.manages_load_balancers());
        account_to_api(a, manages)
    }

    /// A window of the accounts, by name, and how many there are.
    pub async fn accounts(&self, window: store::Window) -> Result<(Vec<Account>, u64), Error> {
        let (accounts, total) = self.store.accounts(window).await?;
        Ok((
            accounts.into_iter().map(|a| self.account_api(a)).collect(),
            total,
        ))
    }

    /// One account.
    pub async fn account(&self, id: i64) -> Result<Account, Error> {
        Ok(self.account_api(self.store.account(id).await?))
    }

    /// Creates an account after its plugin accepted the settings and key.
    pub async fn create_account(&self, input: AccountInput) -> Result<Account, Error> {
        let secret = input
            .secret
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Invalid::new("secret", "is required"))?;
        let change = self.account_change(&input, Some(&secret)).await?;
        Ok(self.account_api(self.store.create_account(&change).await?))
    }

    /// Changes an account; without a secret the stored one is kept.
    pub async fn update_account(&self, id: i64, input: AccountInput) -> Result<Account, Error> {
        let stored = self.store.account(id).await?;
        let secret = match input.secret.clone().filter(|s| !s.is_empty()) {
            Some(secret) => secret,
            None => self
                .vault
                .open_text(ACCOUNT_SECRET, &stored.secret_sealed)?,
        };
        let mut change = self.account_change(&input, Some(&secret)).await?;
        if input.secret.as_deref().is_none_or(str::is_empty) {
            change.secret_sealed = None;
        }
        Ok(self.account_api(self.store.update_account(id, &change).await?))
    }

    /// Deletes an account no template or balancer node uses.
    pub async fn delete_account(&self, id: i64) -> Result<(), Error> {
        Ok(self.store.delete_account(id).await?)
    }

    async fn account_change(
        &self,
        input: &AccountInput,
        secret: Option<&str>,
    ) -> Result<AccountChange, Error> {
        validate::name("name", &input.name, 64)?;
        validate::required("key_id", &input.key_id, 256)?;
        if !input.config.is_object() {
            return Err(Invalid::new("config", "must be a JSON object").into());
        }
        let config = input.config.to_string();
        let secret = secret.unwrap_or_default();
        let provider = self
            .bind(
                &input.provider,
                &config,
                account_grant(&input.key_id, secret),
            )
            .map_err(|e| match e {
                Error::Unavailable(message) => Invalid::new("provider", message).into(),
                other => other,
            })?;
        // The plugin proves the settings and key work (e.g. a signed call).
        provider
            .validate_config(&config)
            .await
            .map_err(|e| match &e.failure {
                plugins::Failure::Plugin(p) if p.kind == plugins::ErrorKind::InvalidInput => {
                    Error::Invalid(Invalid::new("config", p.message.clone()))
                }
                _ => Error::Cloud(e),
            })?;
        Ok(AccountChange {
            name: input.name.trim().to_owned(),
            provider: input.provider.clone(),
            config,
            key_id: input.key_id.trim().to_owned(),
            secret_sealed: Some(self.vault.seal(ACCOUNT_SECRET, secret.as_bytes())),
        })
    }

    /// The cloud-provider plugin `name`, bound to one account's settings
    /// and key (`secrets`, from [`account_grant`]).
    fn bind(
        &self,
        name: &str,
        config: &str,
        secrets: BTreeMap<String, Secret>,
    ) -> Result<Arc<dyn CloudProvider>, Error> {
        Ok(Arc::new(self.bind_plugin(name, config, secrets)?))
    }

    /// [`Self::bind`], as the plugin itself (which may also manage load
    /// balancers).
    fn bind_plugin(
        &self,
        name: &str,
        config: &str,
        secrets: BTreeMap<String, Secret>,
    ) -> Result<WasmPlugin, Error> {
        let active = self.plugins.active(name).ok_or_else(|| {
            let names: Vec<String> = self
                .plugins
                .active_in(World::CloudProvider)
                .into_iter()
                .map(|a| a.plugin.name.to_string())
                .collect();
            Error::Unavailable(format!(
                "no active cloud-provider plugin {name:?}; active: {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ))
        })?;
        if active.plugin.world != World::CloudProvider {
            return Err(Error::Unavailable(format!(
                "plugin {name:?} is a {} plugin, not a cloud provider",
                active.plugin.world
            )));
        }
        let origins = active
            .granted
            .origins()
            .map_err(|e| Error::Unavailable(format!("plugin {name:?} has a bad grant: {e}")))?;
        Ok(WasmPlugin::new(
            active.plugin,
            Grants {
                config: config.to_owned(),
                origins,
                secrets,
                limits: active.limits,
                ..Grants::default()
            },
        ))
    }

    /// The provider plugin bound to a stored account.
    fn provider(&self, account: &AccountRecord) -> Result<Arc<dyn CloudProvider>, Error> {
        let secrets = account_secrets(&self.vault, account)?;
        self.bind(&account.provider, &account.config, secrets)
    }

    /// A look-up of an account's cloud, for the template form.
    pub async fn lookup(
        &self,
        account_id: i64,
        kind: LookupKind,
        query: &LookupQuery,
    ) -> Result<Vec<Choice>, Error> {
        let account = self.store.account(account_id).await?;
        let provider = self.provider(&account)?;
        let need = |field: &'static str, value: &Option<String>| {
            value
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| Invalid::new(field, format!("is required for {}", kind.as_str())))
        };
        let choices = match kind {
            LookupKind::Regions => provider.list_regions().await,
            LookupKind::Zones => provider.list_zones(&need("region", &query.region)?).await,
            LookupKind::Vpcs => provider.list_vpcs(&need("region", &query.region)?).await,
            LookupKind::Subnets => {
                let (region, vpc) = (need("region", &query.region)?, need("vpc", &query.vpc)?);
                provider
                    .list_subnets(&region, &vpc, query.zone.as_deref())
                    .await
            }
            LookupKind::Images => provider.list_images(&need("region", &query.region)?).await,
            LookupKind::InstanceTypes => {
                provider
                    .list_instance_types(&need("region", &query.region)?, query.zone.as_deref())
                    .await
            }
            LookupKind::SecurityGroups => {
                provider
                    .list_security_groups(&need("region", &query.region)?, query.vpc.as_deref())
                    .await
            }
            LookupKind::DiskCategories => {
                let (region, zone) = (need("region", &query.region)?, need("zone", &query.zone)?);
                provider.list_disk_categories(&region, &zone).await
            }
            LookupKind::ChargeTypes => provider.list_charge_types().await,
        }?;
        Ok(choices
            .into_iter()
            .map(|c| Choice {
                id: c.id,
                name: c.name,
                details: serde_json::from_str(&c.details).unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }

    // ---- templates and quotas ----

    /// A window of the templates, by name, and how many there are.
    pub async fn templates(
        &self,
        window: store::Window,
    ) -> Result<(Vec<MachineTemplate>, u64), Error> {
        let (templates, total) = self.store.templates(window).await?;
        let templates = templates
            .into_iter()
            .map(template_to_api)
            .collect::<Result<_, _>>()?;
        Ok((templates, total))
    }

    /// One template.
    pub async fn template(&self, id: i64) -> Result<MachineTemplate, Error> {
        template_to_api(self.store.template(id).await?)
    }

    /// Creates a template after checking its rules.
    pub async fn create_template(&self, input: TemplateInput) -> Result<MachineTemplate, Error> {
        let change = self.template_change(input).await?;
        template_to_api(self.store.create_template(&change).await?)
    }

    /// Changes a template.
    pub async fn update_template(
        &self,
        id: i64,
        input: TemplateInput,
    ) -> Result<MachineTemplate, Error> {
        self.store.template(id).await?;
        let change = self.template_change(input).await?;
        template_to_api(self.store.update_template(id, &change).await?)
    }

    /// Deletes a template no live machine uses.
    pub async fn delete_template(&self, id: i64) -> Result<(), Error> {
        Ok(self.store.delete_template(id).await?)
    }

    async fn template_change(&self, input: TemplateInput) -> Result<TemplateChange, Error> {
        // Every field the form shows is checked, so one answer names them all.
        let mut checks = validate::Checks::default();
        checks.check(validate::name("name", &input.name, 64));
        checks.check(validate::max_chars("description", &input.description, 1024));
        checks.check(rules::check_spec(&input.spec));
        if input.quota_hours < 0 {
            checks.check(Err(Invalid::new("quota_hours", "must be 0 or more")));
        }
        let init_timeout_secs = input.init_timeout_secs.unwrap_or(600);
        if !(10..=7200).contains(&init_timeout_secs) {
            checks.check(Err(Invalid::new(
                "init_timeout_secs",
                "must be between 10 and 7200",
            )));
        }
        let login_user = input
            .login_user
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "root".to_owned());
        checks.check(validate::identifier("login_user", &login_user, 32));
        checks.finish()?;
        let account = self
            .store
            .account(input.account_id)
            .await
            .map_err(|e| match e {
                store::Error::NotFound { .. } => Error::Invalid(Invalid::new(
                    "account_id",
                    format!("no account with id {}", input.account_id),
                )),
                other => other.into(),
            })?;
        if let Some(group) = input.init_group_id {
            self.store.group(group).await.map_err(|e| match e {
                store::Error::NotFound { .. } => Error::Invalid(Invalid::new(
                    "init_group_id",
                    format!("no command group with id {group}"),
                )),
                other => other.into(),
            })?;
        }
        // The provider has its own say (e.g. an image that does not exist).
        let provider = self.provider(&account)?;
        let spec_json = serde_json::to_string(&input.spec).unwrap_or_default();
        provider
            .validate_config(&account.config)
            .await
            .map_err(Error::Cloud)?;
        rules::check_with_provider(provider.as_ref(), &input.spec).await?;
        Ok(TemplateChange {
            name: input.name.trim().to_owned(),
            description: input.description,
            account_id: input.account_id,
            spec: spec_json,
            login_user,
            init_group_id: input.init_group_id,
            init_timeout_secs,
            quota_hours: input.quota_hours,
        })
    }

    /// A window of the templates' quotas and usage, by name, and how many there are.
    pub async fn quotas(&self, window: store::Window) -> Result<(Vec<QuotaUsage>, u64), Error> {
        let (templates, total) = self.store.templates(window).await?;
        Ok((templates.iter().map(quota_to_api).collect(), total))
    }

    /// Sets a template's granted instance-hours.
    pub async fn set_quota(&self, id: i64, quota_hours: i64) -> Result<QuotaUsage, Error> {
        if quota_hours < 0 {
            return Err(Invalid::new("quota_hours", "must be 0 or more").into());
        }
        Ok(quota_to_api(&self.store.set_quota(id, quota_hours).await?))
    }

    // ---- machines ----

    /// A window of the machines `filter` matches, each with its pool.
    pub async fn list(
        &self,
        filter: MachineFilter,
        window: store::Window,
    ) -> Result<(Vec<Machine>, u64), Error> {
        if let Some(text) = &filter.q {
            validate::filter("q", text)?;
        }
        let query = store::MachineQuery {
            state: filter.state,
            template_id: filter.template_id,
            pooled: filter.pooled,
            text: filter.q.filter(|q| !q.is_empty()),
        };
        let (machines, total) = self.store.search_machines(&query, window).await?;
        Ok((self.with_pools(machines).await?, total))
    }

    /// Machines as the API shows them, each with the pool it is a node of.
    async fn with_pools(&self, machines: Vec<MachineRecord>) -> Result<Vec<Machine>, Error> {
        let ids: Vec<i64> = machines.iter().map(|m| m.id).collect();
        let pools = self.store.machine_pools(&ids).await?;
        Ok(machines
            .into_iter()
            .map(|m| {
                let pool_id = pools.get(&m.id).copied();
                Machine {
                    pool_id,
                    ..machine_to_api(m)
                }
            })
            .collect())
    }

    /// A machine with its timeline and log.
    pub async fn detail(&self, id: i64) -> Result<MachineDetail, Error> {
        let machine = self.store.machine(id).await?;
        let events = self.store.machine_events(id).await?;
        let log = self.store.machine_log(id, LOG_LINES).await?;
        Ok(MachineDetail {
            machine: self
                .with_pools(vec![machine])
                .await?
                .pop()
                .ok_or(store::Error::NotFound { what: "machine" })?,
            events: events
                .into_iter()
                .map(|e| MachineEvent {
                    at: crate::api::rfc3339(e.at),
                    state: e.state,
                    reason: e.reason,
                })
                .collect(),
            log: log
                .into_iter()
                .map(|(at, line)| MachineLogLine {
                    at: crate::api::rfc3339(at),
                    line,
                })
                .collect(),
        })
    }

    /// Creates `count` machines from a template. Answers at once with the
    /// machines `creating`; each then goes its own way, and a failure of one
    /// shows on that machine only. The same idempotency key answers the
    /// same machines again.
    pub async fn create(self: &Arc<Self>, input: CreateMachines) -> Result<Vec<Machine>, Error> {
        if self.stop.is_cancelled() {
            return Err(Error::Unavailable("DCP is shutting down".to_owned()));
        }
        if !(1..=MAX_COUNT).contains(&input.count) {
            return Err(Invalid::new("count", format!("must be between 1 and {MAX_COUNT}")).into());
        }
        if let Some(key) = &input.idempotency_key {
            if key.is_empty() || key.len() > 64 || !key.chars().all(|c| c.is_ascii_graphic()) {
                return Err(Invalid::new(
                    "idempotency_key",
                    "must be 1–64 printable ASCII characters",
                )
                .into());
            }
            let earlier = self.store.machines_of_request(key).await?;
            if !earlier.is_empty() {
                return Self::replayed(&input, earlier);
            }
        }
        let template = self
            .store
            .template(input.template_id)
            .await
            .map_err(|e| match e {
                store::Error::NotFound { .. } => Error::Invalid(Invalid::new(
                    "template_id",
                    format!("no machine template with id {}", input.template_id),
                )),
                other => other.into(),
            })?;
        let credit = template.quota_hours - template.used_hours;
        if credit <= 0 {
            return Err(Error::Conflict(format!(
                "machine template {} has no quota left: {} of {} instance-hours used; raise its \
                 quota to create machines",
                template.name, template.used_hours, template.quota_hours
            )));
        }
        let spec: TemplateSpec =
            serde_json::from_str(&template.spec).map_err(|_| store::Error::Corrupt {
                column: "machine_templates.spec",
                value: template.spec.clone(),
            })?;
        // Names stay unique across requests without a lookup: the request's
        // first id is not known before insert, a random suffix is.
        let batch = keys::batch_tag();
        let mut new = Vec::new();
        for n in 1..=input.count {
            let key = keys::generate(&format!("dcp-{}-{batch}-{n}", template.name))?;
            new.push(NewMachine {
                name: format!("{}-{batch}-{n:03}", template.name),
                template_id: Some(template.id),
                provider: template.provider.clone(),
                region: spec.region.clone(),
                request_key: input.idempotency_key.as_ref().map(|k| format!("{k}#{n}")),
                address: None,
                port: 22,
                user: template.login_user.clone(),
                private_key_sealed: Some(self.vault.seal(MACHINE_KEY, key.private.as_bytes())),
                public_key: Some(key.public),
                state: MachineState::Creating,
                reason: format!("requested from template {}", template.name),
            });
        }
        let created = match self.store.create_machines(&new).await {
            Ok(created) => created,
            // Two requests with one key at once: the other one won.
            Err(store::Error::Conflict { .. }) if input.idempotency_key.is_some() => {
                let key = input.idempotency_key.as_deref().unwrap_or_default();
                let earlier = self.store.machines_of_request(key).await?;
                return Self::replayed(&input, earlier);
            }
            Err(e) => return Err(e.into()),
        };
        self.record_fleet(&template.provider).await;
        for machine in &created {
            self.spawn(machine.id);
        }
        Ok(created.into_iter().map(machine_to_api).collect())
    }

    /// The answer to a create whose idempotency key was used before.
    fn replayed(
        input: &CreateMachines,
        earlier: Vec<MachineRecord>,
    ) -> Result<Vec<Machine>, Error> {
        let same = earlier.len() == input.count as usize
            && earlier
                .iter()
                .all(|m| m.template_id == Some(input.template_id));
        if !same {
            return Err(Error::Conflict(format!(
                "idempotency_key was used before for {} machine(s) of another request; use a new key",
                earlier.len()
            )));
        }
        Ok(earlier.into_iter().map(machine_to_api).collect())
    }

    /// Drives a machine's unfinished work (creating, starting,
    /// initialising, deleting) in this process: a task taken over from a
    /// replica that died waits on machines that process was driving.
    pub async fn take_over(self: &Arc<Self>, id: i64) -> Result<(), Error> {
        let machine = self.store.machine(id).await?;
        if matches!(
            machine.state,
            MachineState::Creating
                | MachineState::Starting
                | MachineState::Initializing
                | MachineState::Deleting
        ) {
            self.spawn(id);
        }
        Ok(())
    }

    /// Runs a machine's init again after it failed or timed out (the
    /// retry of a task step that made it); a machine that is ready or still
    /// initialising is left as it is.
    pub async fn reinit(self: &Arc<Self>, id: i64) -> Result<Machine, Error> {
        let machine = self.store.machine(id).await?;
        let failed = [MachineState::InitFailed, MachineState::InitTimeout];
        if failed.contains(&machine.state)
            && let Some(m) = self
                .store
                .transition_machine(
                    id,
                    &failed,
                    MachineState::Initializing,
                    "init retried",
                    &store::MachineUpdate::default(),
                )
                .await?
        {
            self.spawn(id);
            return Ok(machine_to_api(m));
        }
        Ok(machine_to_api(machine))
    }

    /// Releases a machine: force-stops and deletes its instance, then
    /// charges its template. Refused while it is being created.
    pub async fn delete(self: &Arc<Self>, id: i64) -> Result<Machine, Error> {
        let machine = self.store.machine(id).await?;
        match machine.state {
            MachineState::Creating | MachineState::Starting => {
                return Err(Error::Conflict(format!(
                    "machine {} is being created; delete it once it is ready or has failed",
                    machine.name
                )));
            }
            MachineState::Deleted => {
                return Err(Error::Conflict(format!(
                    "machine {} is already released",
                    machine.name
                )));
            }
            MachineState::Deleting => return Ok(machine_to_api(machine)),
            _ => {}
        }
        if let Some(pool) = self.store.pool_of_machine(id).await? {
            return Err(Error::Conflict(format!(
                "machine {} is a node of pool {pool}; remove it from the pool first",
                machine.name
            )));
        }
        if machine.state == MachineState::Initializing {
            // Init is cut short: the machine goes.
            self.cancel_work(id);
        }
        let moved = self
            .store
            .transition_machine(
                id,
                &[
                    MachineState::Initializing,
                    MachineState::Ready,
                    MachineState::InitTimeout,
                    MachineState::InitFailed,
                    MachineState::Error,
                ],
                MachineState::Deleting,
                "delete requested",
                &store::MachineUpdate::default(),
            )
            .await?
            .ok_or_else(|| {
                Error::Conflict(format!("machine {} changed state; try again", machine.name))
            })?;
        self.spawn_after_cancel(id).await;
        Ok(machine_to_api(moved))
    }

    fn cancel_work(&self, id: i64) {
        if let Some(token) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            token.cancel();
        }
    }

    /// Starts a machine's work once an earlier, cancelled task of it ended.
    async fn spawn_after_cancel(self: &Arc<Self>, id: i64) {
        for _ in 0..200 {
            let busy = self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&id);
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.spawn(id);
    }

    /// Adopts an existing server: connects to prove the address and
    /// credentials, installs a key DCP generates when given a password
    /// (which is then forgotten), and records the machine `ready`.
    pub async fn adopt(&self, input: AdoptMachine) -> Result<Machine, Error> {
        validate::address("address", input.address.trim())?;
        let port = input.port.unwrap_or(22);
        if port == 0 {
            return Err(Invalid::new("port", "must be between 1 and 65535").into());
        }
        let user = input.user.clone().unwrap_or_else(|| "root".to_owned());
        validate::identifier("user", &user, 32)?;
        let name = input.name.clone().unwrap_or_else(|| input.address.clone());
        validate::name("name", &name, 64)?;
        // Refused before connecting, so a second adoption installs no key;
        // the store's index refuses the one that races past this check.
        self.store.address_free(&input.address, port).await?;
        let endpoint = ssh::Endpoint {
            address: input.address.trim().to_owned(),
            port,
            user: user.clone(),
        };
        let (private, public, credential) = match (&input.private_key, &input.password) {
            (Some(_), Some(_)) => {
                return Err(
                    Invalid::new("password", "give a password or a private key, not both").into(),
                );
            }
            (Some(key), None) => {
                let credential =
                    ssh::Credential::parse_key(key).map_err(|e| Invalid::new("private_key", e))?;
                (key.trim().to_owned() + "\n", None, credential)
            }
            (None, Some(password)) => {
                let key = keys::generate(&format!("dcp-adopted-{}", endpoint.address))?;
                (
                    key.private,
                    Some(key.public),
                    ssh::Credential::Password(Arc::from(password.as_str())),
                )
            }
            (None, None) => {
                return Err(Invalid::new("password", "give a password or a private key").into());
            }
        };
        let target = ssh::Target {
            endpoint,
            credential,
        };
        let field = if input.password.is_some() {
            "password"
        } else {
            "private_key"
        };
        let probe = match &public {
            // Installs DCP's key so later logins need no password.
            Some(public) => format!(
                "umask 077 && mkdir -p ~/.ssh && touch ~/.ssh/authorized_keys && \
                 (grep -qxF {key} ~/.ssh/authorized_keys || echo {key} >> ~/.ssh/authorized_keys) && uname -a",
                key = remote::shell_quote(public.trim())
            ),
            None => "uname -a".to_owned(),
        };
        let out = self
            .remote
            .transport()
            .exec(
                &target,
                &probe,
                None,
                Duration::from_secs(30),
                64 << 10,
                &CancellationToken::new(),
            )
            .await
            .map_err(|e| {
                Invalid::new(
                    if matches!(e, ssh::Error::AuthFailed { .. }) {
                        field
                    } else {
                        "address"
                    },
                    e.to_string(),
                )
            })?;
        if out.exit_code != Some(0) {
            return Err(Invalid::new(
                field,
                format!(
                    "connected, but setting up DCP's key failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )
            .into());
        }
        let created = self
            .store
            .create_machines(&[NewMachine {
                name,
                template_id: None,
                provider: ADOPTED.to_owned(),
                region: String::new(),
                request_key: None,
                address: Some(target.endpoint.address.clone()),
                port,
                user,
                private_key_sealed: Some(self.vault.seal(MACHINE_KEY, private.as_bytes())),
                public_key: public,
                state: MachineState::Ready,
                reason: "adopted".to_owned(),
            }])
            .await?;
        let machine = created
            .into_iter()
            .next()
            .ok_or(store::Error::NotFound { what: "machine" })?;
        self.store
            .log_machine(
                machine.id,
                &[format!(
                    "adopted: {}",
                    String::from_utf8_lossy(&out.stdout).trim()
                )],
            )
            .await?;
        self.record_fleet(ADOPTED).await;
        Ok(machine_to_api(machine))
    }

    /// A machine's private key (OpenSSH format), for download.
    pub async fn private_key(&self, id: i64) -> Result<(MachineRecord, String), Error> {
        let machine = self.store.machine(id).await?;
        let sealed = machine
            .private_key_sealed
            .clone()
            .ok_or(store::Error::NotFound {
                what: "machine key",
            })?;
        let key = self.vault.open_text(MACHINE_KEY, &sealed)?;
        Ok((machine, key))
    }

    /// The fleet size per provider, hour by hour, over the last `hours`.
    pub async fn fleet_history(&self, hours: u32) -> Result<Vec<FleetPoint>, Error> {
        let since =
            OffsetDateTime::now_utc() - time::Duration::hours(i64::from(hours.saturating_sub(1)));
        Ok(self
            .store
            .fleet_history(since)
            .await?
            .into_iter()
            .map(|(hour, provider, machines)| FleetPoint {
                hour: crate::api::rfc3339(hour),
                provider,
                machines,
            })
            .collect())
    }

    /// Records this hour's fleet size of `provider`; a failure only costs a chart point.
    async fn record_fleet(&self, provider: &str) {
        if let Err(e) = self.store.record_fleet_size(provider).await {
            tracing::warn!(provider, "recording the fleet size failed: {e}");
        }
    }

    /// Records every provider's size once an hour, so quiet hours have points too.
    pub fn track_fleet(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = this.stop.cancelled() => return,
                }
                if let Ok(providers) = this.store.fleet_providers().await {
                    for provider in providers {
                        this.record_fleet(&provider).await;
                    }
                }
            }
        });
    }
}

/// The secrets a plugin acting for an account is granted: its key, as the
/// secret named `account`.
fn account_grant(key_id: &str, secret: &str) -> BTreeMap<String, Secret> {
    BTreeMap::from([(
        ACCOUNT_GRANT.to_owned(),
        Secret {
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
        },
    )])
}

/// The secrets a plugin acting for a stored account is granted (the cloud
/// provider bound to it, a cloud load balancer of it): its key id and its
/// secret opened from the vault, as the secret named `account`. The one
/// place an account's secret is opened for a plugin.
pub fn account_secrets(
    vault: &Vault,
    account: &AccountRecord,
) -> Result<BTreeMap<String, Secret>, vault::Error> {
    let secret = vault.open_text(ACCOUNT_SECRET, &account.secret_sealed)?;
    Ok(account_grant(&account.key_id, &secret))
}

/// An account as the API shows it: never the secret.
fn account_to_api(a: AccountRecord, manages_load_balancers: bool) -> Account {
    Account {
        id: a.id,
        name: a.name,
        provider: a.provider,
        config: serde_json::from_str(&a.config).unwrap_or_default(),
        key_id: a.key_id,
        templates: a.templates,
        manages_load_balancers,
        created_at: crate::api::rfc3339(a.created_at),
        updated_at: crate::api::rfc3339(a.updated_at),
    }
}

fn template_to_api(t: TemplateRecord) -> Result<MachineTemplate, Error> {
    let spec = serde_json::from_str(&t.spec).map_err(|_| store::Error::Corrupt {
        column: "machine_templates.spec",
        value: t.spec.clone(),
    })?;
    Ok(MachineTemplate {
        id: t.id,
        name: t.name,
        description: t.description,
        account_id: t.account_id,
        account_name: t.account_name,
        provider: t.provider,
        spec,
        login_user: t.login_user,
        init_group_id: t.init_group_id,
        init_timeout_secs: t.init_timeout_secs,
        quota_hours: t.quota_hours,
        used_hours: t.used_hours,
        machines: t.live_machines,
        created_at: crate::api::rfc3339(t.created_at),
        updated_at: crate::api::rfc3339(t.updated_at),
    })
}

/// A template's quota and usage as the API shows it.
pub(crate) fn quota_to_api(t: &TemplateRecord) -> QuotaUsage {
    QuotaUsage {
        template_id: t.id,
        template_name: t.name.clone(),
        quota_hours: t.quota_hours,
        used_hours: t.used_hours,
        credit_hours: t.quota_hours - t.used_hours,
        live_machines: t.live_machines,
        released_machines: t.released_machines,
    }
}

/// A machine as the API shows it.
#[must_use]
pub fn machine_to_api(m: MachineRecord) -> Machine {
    Machine {
        id: m.id,
        name: m.name,
        template_id: m.template_id,
        provider: m.provider,
        region: m.region,
        instance_id: m.instance_id,
        address: m.address,
        port: m.port,
        user: m.user,
        state: m.state,
        reason: m.reason,
        created_at: crate::api::rfc3339(m.created_at),
        ready_at: m.ready_at.map(crate::api::rfc3339),
        released_at: m.released_at.map(crate::api::rfc3339),
        charged_hours: m.charged_hours,
        pool_id: None,
    }
}
