//! Machines, their state timeline and log, and the hourly fleet size.

use std::collections::HashMap;

use dcp_api_types::MachineState;
use sqlx::FromRow;
use time::OffsetDateTime;

use super::{
    Error, Result, Store, Window, contains_pattern, datetime, is_unique_violation, millis,
    now_millis, parse_name, placeholders,
};

/// A stored machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRecord {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// The template it was made from; `None` when adopted.
    pub template_id: Option<i64>,
    /// The provider plugin, or `adopted`.
    pub provider: String,
    /// Region id.
    pub region: String,
    /// `<idempotency key>#<n>` of the request that made it.
    pub request_key: Option<String>,
    /// The cloud's instance id.
    pub instance_id: Option<String>,
    /// The address DCP reaches it on.
    pub address: Option<String>,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Its private key, sealed by the vault.
    pub private_key_sealed: Option<String>,
    /// Its public key (OpenSSH).
    pub public_key: Option<String>,
    /// Current state.
    pub state: MachineState,
    /// Why it is in that state.
    pub reason: String,
    /// When it was asked for.
    pub created_at: OffsetDateTime,
    /// When it became ready.
    pub ready_at: Option<OffsetDateTime>,
    /// When it was released.
    pub released_at: Option<OffsetDateTime>,
    /// Instance-hours charged at release.
    pub charged_hours: Option<i64>,
}

/// A machine to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMachine {
    /// Name.
    pub name: String,
    /// Template.
    pub template_id: Option<i64>,
    /// Provider plugin, or `adopted`.
    pub provider: String,
    /// Region id.
    pub region: String,
    /// Request key, for idempotent creation.
    pub request_key: Option<String>,
    /// Address, when known (adopted servers).
    pub address: Option<String>,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Sealed private key.
    pub private_key_sealed: Option<String>,
    /// Public key.
    pub public_key: Option<String>,
    /// First state.
    pub state: MachineState,
    /// Why.
    pub reason: String,
}

/// What a state change also sets; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineUpdate {
    /// The cloud's instance id.
    pub instance_id: Option<String>,
    /// The address.
    pub address: Option<String>,
    /// Instance-hours charged (at release).
    pub charged_hours: Option<i64>,
}

/// A recorded state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineEventRecord {
    /// When.
    pub at: OffsetDateTime,
    /// The state entered.
    pub state: MachineState,
    /// Why.
    pub reason: String,
}

/// Which machines [`Store::search_machines`] lists.
#[derive(Debug, Clone, Default)]
pub struct MachineQuery {
    /// Only this state; by default every state but `deleted`.
    pub state: Option<MachineState>,
    /// Only machines of this template.
    pub template_id: Option<i64>,
    /// `Some(false)`: only machines in no pool; `Some(true)`: only nodes.
    pub pooled: Option<bool>,
    /// Only names or addresses containing this text (ASCII case ignored).
    pub text: Option<String>,
}

#[derive(FromRow)]
struct Row {
    id: i64,
    name: String,
    template_id: Option<i64>,
    provider: String,
    region: String,
    request_key: Option<String>,
    instance_id: Option<String>,
    address: Option<String>,
    port: i64,
    login_user: String,
    private_key_sealed: Option<String>,
    public_key: Option<String>,
    state: String,
    reason: String,
    created_at: i64,
    ready_at: Option<i64>,
    released_at: Option<i64>,
    charged_hours: Option<i64>,
}

impl TryFrom<Row> for MachineRecord {
    type Error = Error;

    fn try_from(r: Row) -> Result<Self> {
        Ok(Self {
            id: r.id,
            name: r.name,
            template_id: r.template_id,
            provider: r.provider,
            region: r.region,
            request_key: r.request_key,
            instance_id: r.instance_id,
            address: r.address,
            port: u16::try_from(r.port).unwrap_or(22),
            user: r.login_user,
            private_key_sealed: r.private_key_sealed,
            public_key: r.public_key,
            state: parse_name("machines.state", &r.state)?,
            reason: r.reason,
            created_at: datetime(r.created_at),
            ready_at: r.ready_at.map(datetime),
            released_at: r.released_at.map(datetime),
            charged_hours: r.charged_hours,
        })
    }
}

const COLUMNS: &str = "id, name, template_id, provider, region, request_key, instance_id, \
     address, port, login_user, private_key_sealed, public_key, state, reason, created_at, \
     ready_at, released_at, charged_hours";

fn records(rows: Vec<Row>) -> Result<Vec<MachineRecord>> {
    rows.into_iter().map(MachineRecord::try_from).collect()
}

/// The form of an address two machines on one server share: an IP address
/// as Rust prints it (IPv6 compressed and in lower case, an IPv4-mapped IPv6
/// address as IPv4), a host name in lower case without a trailing dot.
/// Names that resolve to one server are not followed: which server a name
/// means can change, and the address DCP connects to is the one it records.
#[must_use]
fn identity(address: &str) -> String {
    let address = address.trim();
    match address.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => address.trim_end_matches('.').to_ascii_lowercase(),
    }
}

fn claimed(identity: &str, port: u16, machine: Option<i64>) -> Error {
    Error::Claimed {
        field: "address",
        value: format!("{identity} port {port}"),
        machine,
    }
}

/// The start of the hour `at` falls in, in store milliseconds.
fn hour_of(at: i64) -> i64 {
    at - at.rem_euclid(3_600_000)
}

impl Store {
    /// Records machines and their first event, all or none. A request key
    /// already recorded is [`Error::Conflict`] on `idempotency_key`; an
    /// address and port a live machine has is [`Error::Claimed`] on `address`.
    pub async fn create_machines(&self, machines: &[NewMachine]) -> Result<Vec<MachineRecord>> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(machines.len());
        for m in machines {
            let identity = m.address.as_deref().map(identity);
            let inserted: std::result::Result<(i64,), sqlx::Error> = sqlx::query_as(
                "insert into machines (name, template_id, provider, region, request_key, address, \
                 port, login_user, private_key_sealed, public_key, state, reason, created_at, \
                 ready_at, updated_at, identity) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                 $10, $11, $12, $13, $14, $13, $15) returning id",
            )
            .bind(&m.name)
            .bind(m.template_id)
            .bind(&m.provider)
            .bind(&m.region)
            .bind(m.request_key.as_deref())
            .bind(m.address.as_deref())
            .bind(i64::from(m.port))
            .bind(&m.user)
            .bind(m.private_key_sealed.as_deref())
            .bind(m.public_key.as_deref())
            .bind(m.state.as_str())
            .bind(&m.reason)
            .bind(now)
            .bind((m.state == MachineState::Ready).then_some(now))
            .bind(identity.as_deref())
            .fetch_one(&mut *tx)
            .await;
            let (id,) = match (inserted, &identity) {
                (Err(e), Some(identity)) if is_unique_violation(&e) => {
                    drop(tx);
                    return Err(self.refused_claim(identity, m.port, None).await);
                }
                (inserted, _) => inserted.map_err(super::conflict_on(
                    "idempotency_key",
                    m.request_key.as_deref().unwrap_or_default(),
                ))?,
            };
            sqlx::query(
                "insert into machine_events (machine_id, at, state, reason) values ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(now)
            .bind(m.state.as_str())
            .bind(&m.reason)
            .execute(&mut *tx)
            .await?;
            ids.push(id);
        }
        tx.commit().await?;
        self.machines_by_ids(&ids).await
    }

    /// The machines with these ids, in the order given; unknown ids are left out.
    pub async fn machines_by_ids(&self, ids: &[i64]) -> Result<Vec<MachineRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "select {COLUMNS} from machines where id in ({})",
            placeholders(1, ids.len())
        );
        let mut query = sqlx::query_as::<_, Row>(&sql);
        for id in ids {
            query = query.bind(id);
        }
        let mut found = records(query.fetch_all(&self.reads).await?)?;
        found.sort_by_key(|m| ids.iter().position(|id| *id == m.id));
        Ok(found)
    }

    /// The machines a request key prefix (`<key>#`) made, in order.
    pub async fn machines_of_request(&self, key: &str) -> Result<Vec<MachineRecord>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "select {COLUMNS} from machines where request_key like $1 escape '\\' order by id"
        ))
        .bind(format!(
            "{}#%",
            key.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        ))
        .fetch_all(&self.reads)
        .await?;
        records(rows)
    }

    /// One machine.
    pub async fn machine(&self, id: i64) -> Result<MachineRecord> {
        let row: Option<Row> =
            sqlx::query_as(&format!("select {COLUMNS} from machines where id = $1"))
                .bind(id)
                .fetch_optional(&self.reads)
                .await?;
        row.ok_or(Error::NotFound { what: "machine" })?.try_into()
    }

    /// A window of machines, newest first, and how many match. Without a
    /// state filter released machines are left out.
    pub async fn list_machines(
        &self,
        state: Option<MachineState>,
        template_id: Option<i64>,
        window: Window,
    ) -> Result<(Vec<MachineRecord>, u64)> {
        self.search_machines(
            &MachineQuery {
                state,
                template_id,
                ..MachineQuery::default()
            },
            window,
        )
        .await
    }

    /// A window of the machines `query` matches, newest first, and how many
    /// match in all.
    pub async fn search_machines(
        &self,
        query: &MachineQuery,
        window: Window,
    ) -> Result<(Vec<MachineRecord>, u64)> {
        let filter = "where ($1 is null and state <> 'deleted' or state = $1) \
                      and ($2 is null or template_id = $2) \
                      and ($3 is null or $3 = exists (select 1 from nodes n where n.machine_id = machines.id)) \
                      and ($4 is null or lower(name) like $4 escape '\\' \
                           or lower(coalesce(address, '')) like $4 escape '\\')";
        let state = query.state.map(MachineState::as_str);
        let text = query
            .text
            .as_deref()
            .map(|t| contains_pattern(&t.to_ascii_lowercase()));
        let (total,): (i64,) = sqlx::query_as(&format!("select count(*) from machines {filter}"))
            .bind(state)
            .bind(query.template_id)
            .bind(query.pooled)
            .bind(&text)
            .fetch_one(&self.reads)
            .await?;
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "select {COLUMNS} from machines {filter} order by id desc limit $5 offset $6"
        ))
        .bind(state)
        .bind(query.template_id)
        .bind(query.pooled)
        .bind(&text)
        .bind(window.limit())
        .bind(window.offset())
        .fetch_all(&self.reads)
        .await?;
        Ok((records(rows)?, u64::try_from(total).unwrap_or_default()))
    }

    /// The pool each of `machine_ids` is a node of, for those in one.
    pub async fn machine_pools(&self, machine_ids: &[i64]) -> Result<HashMap<i64, i64>> {
        if machine_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "select machine_id, pool_id from nodes where machine_id in ({})",
            placeholders(1, machine_ids.len())
        );
        let mut query = sqlx::query_as::<_, (i64, i64)>(&sql);
        for id in machine_ids {
            query = query.bind(id);
        }
        Ok(query.fetch_all(&self.reads).await?.into_iter().collect())
    }

    /// Every machine in one of `states` (to resume their work after a restart).
    pub async fn machines_in(&self, states: &[MachineState]) -> Result<Vec<MachineRecord>> {
        let sql = format!(
            "select {COLUMNS} from machines where state in ({}) order by id",
            placeholders(1, states.len())
        );
        let mut query = sqlx::query_as::<_, Row>(&sql);
        for state in states {
            query = query.bind(state.as_str());
        }
        records(query.fetch_all(&self.reads).await?)
    }

    /// The live machine on `address` (port `port`), if any, by the same
    /// identity rule that keeps one server one machine.
    pub async fn live_machine_at(&self, address: &str, port: u16) -> Result<Option<i64>> {
        self.live_machine_on(&identity(address), port, None).await
    }

    /// Refuses, as [`Error::Claimed`], an address and port a live machine
    /// has (to refuse a second machine before connecting to the server).
    pub async fn address_free(&self, address: &str, port: u16) -> Result<()> {
        let identity = identity(address);
        match self.live_machine_on(&identity, port, None).await? {
            None => Ok(()),
            Some(machine) => Err(claimed(&identity, port, Some(machine))),
        }
    }

    async fn live_machine_on(
        &self,
        identity: &str,
        port: u16,
        except: Option<i64>,
    ) -> Result<Option<i64>> {
        let row: Option<(i64,)> = sqlx::query_as(
            // A duplicate kept by the upgrade (no identity) still has its address.
            "select id from machines where (identity = $1 or identity is null and \
             lower(address) = $1) and port = $2 and state <> 'deleted' \
             and ($3 is null or id <> $3) order by id limit 1",
        )
        .bind(identity)
        .bind(i64::from(port))
        .bind(except)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|(id,)| id))
    }

    /// The error for a write the live-identity index refused, naming the
    /// machine that holds the address (read after the refusal: the writer
    /// that won may have committed only just now).
    async fn refused_claim(&self, identity: &str, port: u16, except: Option<i64>) -> Error {
        match self.live_machine_on(identity, port, except).await {
            Ok(machine) => claimed(identity, port, machine),
            Err(e) => e,
        }
    }

    /// Moves a machine to `to` if it is in one of `from`, recording the
    /// event; answers the machine after, or `None` when it was not in `from`
    /// (someone else moved it first). A new address a live machine has
    /// already is [`Error::Claimed`].
    pub async fn transition_machine(
        &self,
        id: i64,
        from: &[MachineState],
        to: MachineState,
        reason: &str,
        update: &MachineUpdate,
    ) -> Result<Option<MachineRecord>> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "update machines set state = $1, reason = $2, updated_at = $3, \
             instance_id = coalesce($4, instance_id), address = coalesce($5, address), \
             charged_hours = coalesce($6, charged_hours), \
             ready_at = case when $1 = 'ready' then $3 else ready_at end, \
             released_at = case when $1 = 'deleted' then $3 else released_at end, \
             identity = coalesce($8, identity) \
             where id = $7 and state in ({})",
            placeholders(9, from.len())
        );
        let identity = update.address.as_deref().map(identity);
        let mut query = sqlx::query(&sql)
            .bind(to.as_str())
            .bind(reason)
            .bind(now)
            .bind(update.instance_id.as_deref())
            .bind(update.address.as_deref())
            .bind(update.charged_hours)
            .bind(id)
            .bind(identity.as_deref());
        for state in from {
            query = query.bind(state.as_str());
        }
        let updated = match (query.execute(&mut *tx).await, &identity) {
            (Err(e), Some(identity)) if is_unique_violation(&e) => {
                drop(tx);
                let port = self.machine(id).await?.port;
                return Err(self.refused_claim(identity, port, Some(id)).await);
            }
            (updated, _) => updated?,
        };
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        sqlx::query(
            "insert into machine_events (machine_id, at, state, reason) values ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(now)
        .bind(to.as_str())
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.machine(id).await.map(Some)
    }

    /// Appends lines to a machine's log.
    pub async fn log_machine(&self, id: i64, lines: &[String]) -> Result<()> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        for line in lines {
            sqlx::query("insert into machine_logs (machine_id, at, line) values ($1, $2, $3)")
                .bind(id)
                .bind(now)
                .bind(line)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A machine's state changes, oldest first.
    pub async fn machine_events(&self, id: i64) -> Result<Vec<MachineEventRecord>> {
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "select at, state, reason from machine_events where machine_id = $1 order by id",
        )
        .bind(id)
        .fetch_all(&self.reads)
        .await?;
        rows.into_iter()
            .map(|(at, state, reason)| {
                Ok(MachineEventRecord {
                    at: datetime(at),
                    state: parse_name("machine_events.state", &state)?,
                    reason,
                })
            })
            .collect()
    }

    /// The last `limit` lines of a machine's log, oldest first.
    pub async fn machine_log(&self, id: i64, limit: u32) -> Result<Vec<(OffsetDateTime, String)>> {
        let mut rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "select id, at, line from machine_logs where machine_id = $1 order by id desc limit $2",
        )
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        rows.reverse();
        Ok(rows
            .into_iter()
            .map(|(_, at, line)| (datetime(at), line))
            .collect())
    }

    /// Records how many machines of `provider` are live now, as this hour's size.
    pub async fn record_fleet_size(&self, provider: &str) -> Result<()> {
        let now = now_millis();
        let (count,): (i64,) = sqlx::query_as(
            "select count(*) from machines where provider = $1 and state <> 'deleted'",
        )
        .bind(provider)
        .fetch_one(&self.pool)
        .await?;
        sqlx::query(
            "insert into fleet_sizes (hour, provider, machines) values ($1, $2, $3) \
             on conflict (hour, provider) do update set machines = excluded.machines",
        )
        .bind(hour_of(now))
        .bind(provider)
        .bind(count)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Providers with machines ever recorded.
    pub async fn fleet_providers(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("select distinct provider from machines order by provider")
                .fetch_all(&self.reads)
                .await?;
        Ok(rows.into_iter().map(|(p,)| p).collect())
    }

    /// Fleet sizes from `since` on, by hour then provider. Hours without a
    /// record carry the last size before them.
    pub async fn fleet_history(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<(OffsetDateTime, String, u64)>> {
        let start = hour_of(millis(since));
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "select hour, provider, machines from fleet_sizes where hour >= $1 \
             or hour = (select max(f.hour) from fleet_sizes f where f.provider = fleet_sizes.provider \
             and f.hour < $1) order by hour, provider",
        )
        .bind(start)
        .fetch_all(&self.reads)
        .await?;
        let now_hour = hour_of(now_millis());
        let mut last: std::collections::BTreeMap<String, i64> = Default::default();
        let mut recorded: std::collections::BTreeMap<(i64, String), i64> = Default::default();
        for (hour, provider, machines) in rows {
            recorded.insert((hour.max(start), provider), machines);
        }
        let mut out = Vec::new();
        let mut hour = start;
        while hour <= now_hour {
            for ((h, provider), machines) in recorded.range((hour, String::new())..) {
                if *h != hour {
                    break;
                }
                last.insert(provider.clone(), *machines);
            }
            for (provider, machines) in &last {
                out.push((
                    datetime(hour),
                    provider.clone(),
                    u64::try_from(*machines).unwrap_or_default(),
                ));
            }
            hour += 3_600_000;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{hour_of, identity};

    #[test]
    fn one_server_has_one_identity_however_its_address_is_written() {
        for (a, b) in [
            ("::1", "0:0:0:0:0:0:0:1"),
            ("2001:DB8::1", "2001:db8:0:0::1"),
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("Web-01.Example.com", "web-01.example.com."),
            (" 10.0.0.1", "10.0.0.1"),
        ] {
            assert_eq!(identity(a), identity(b), "{a} vs {b}");
        }
        assert_ne!(identity("127.0.0.1"), identity("127.0.0.2"));
    }

    #[test]
    fn hours_start_on_the_hour() {
        assert_eq!(hour_of(7_199_999), 3_600_000);
        assert_eq!(hour_of(7_200_000), 7_200_000);
    }
}
