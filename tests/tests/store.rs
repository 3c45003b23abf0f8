//! The store suite: every test runs on SQLite and on PostgreSQL, so the two
//! backends behave the same to everything above them.

#![allow(clippy::unwrap_used)]

use dcp::store::{
    self, AccountChange, ClusterChange, ClusterQuery, CommandChange, GroupChange, HostKeyRecord,
    HostReport, MachineUpdate, NewExecution, NewHost, NewMachine, NewNode, NewTask, PoolChange,
    ServiceChange, Store, TemplateChange, Window,
};
use dcp_api_types::{CommandMode, ExecutionState, HostState, MachineState};
use dcp_tests::Backend;
use time::{Duration, OffsetDateTime};

/// Runs each listed test against both backends, as `sqlite::name` and `postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(dcp_tests::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(dcp_tests::Backend::Postgres).await })*
        }
    };
}

on_both_backends!(
    clusters_round_trip,
    cluster_names_are_unique,
    missing_clusters_are_not_found,
    listing_filters_pages_and_orders,
    like_wildcards_match_literally,
    migrations_apply_once,
    sessions_expire_and_end,
    tokens_belong_to_their_user,
    usernames_are_unique,
    groups_keep_their_commands_in_order_and_from_deletion,
    executions_count_their_hosts_and_page_newest_first,
    abandoned_executions_end_failed_not_lost,
    retention_deletes_old_finished_executions_only,
    host_keys_are_trusted_once,
    machines_move_only_from_the_state_they_are_in,
    released_machines_charge_their_template,
    machines_in_pools_are_named_and_kept,
    one_server_is_one_live_machine,
    an_upgrade_keeps_machines_that_already_share_a_server,
    balancer_nodes_are_a_machine_or_an_account,
    an_upgrade_keeps_balancer_nodes_their_states_and_releases,
    an_upgrade_keeps_the_logs_memberships_and_snapshots_every_upstream,
    reads_are_answered_while_writes_wait_for_the_lock,
);

/// Reads do not queue behind writes: while another process holds the
/// database's write lock and sixteen of DCP's writes wait for it (a large
/// expand's burst, as far as the store can tell), a read is answered, and
/// once the lock goes every write lands. On SQLite, writers that waited
/// on shared connections used to hold them all, so the API's reads and
/// `/readyz` waited too, and each writer failed with "database is locked"
/// after SQLite's busy timeout.
async fn reads_are_answered_while_writes_wait_for_the_lock(backend: Backend) {
    use sqlx::{Connection as _, Executor as _};

    let (store, db) = backend.store().await;
    let kept = store
        .create_cluster(&change("kept", "video"))
        .await
        .unwrap();
    let mut other = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    match backend {
        Backend::Sqlite => other.execute("begin immediate").await.unwrap(),
        Backend::Postgres => {
            other.execute("begin").await.unwrap();
            other
                .execute("lock table clusters in exclusive mode")
                .await
                .unwrap()
        }
    };
    let mut started = Vec::new();
    let writes: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            started.push(rx);
            tokio::spawn(async move {
                let _ = tx.send(());
                store
                    .create_cluster(&change(&format!("w{i}"), "feed"))
                    .await
            })
        })
        .collect();
    for rx in started {
        rx.await.unwrap();
    }
    assert_eq!(store.cluster(kept.id).await.unwrap(), kept);
    let (page, total) = store
        .list_clusters(&ClusterQuery::default(), ALL)
        .await
        .unwrap();
    assert_eq!((page.len(), total), (1, 1), "a write landed under the lock");
    assert!(
        writes.iter().all(|w| !w.is_finished()),
        "a write ended while the lock was held"
    );

    other.execute("commit").await.unwrap();
    for write in writes {
        write.await.unwrap().unwrap();
    }
    let (_, total) = store
        .list_clusters(&ClusterQuery::default(), ALL)
        .await
        .unwrap();
    assert_eq!(total, 17);
}

fn change(name: &str, business_line: &str) -> ClusterChange {
    ClusterChange {
        name: name.into(),
        description: format!("{name} description"),
        business_line: business_line.into(),
    }
}

const ALL: Window = Window {
    limit: 200,
    offset: 0,
};

async fn clusters_round_trip(backend: Backend) {
    let (store, _db) = backend.store().await;
    let created = store.create_cluster(&change("web", "video")).await.unwrap();
    assert_eq!(created.name, "web");
    assert_eq!(created.business_line, "video");
    assert_eq!(store.cluster(created.id).await.unwrap(), created);

    let updated = store
        .update_cluster(created.id, &change("web-2", "feed"))
        .await
        .unwrap();
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.name, "web-2");
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);

    store.delete_cluster(created.id).await.unwrap();
    assert!(matches!(
        store.cluster(created.id).await,
        Err(store::Error::NotFound { what: "cluster" })
    ));
}

async fn cluster_names_are_unique(backend: Backend) {
    let (store, _db) = backend.store().await;
    store.create_cluster(&change("web", "")).await.unwrap();
    let other = store.create_cluster(&change("api", "")).await.unwrap();
    for result in [
        store.create_cluster(&change("web", "")).await,
        store.update_cluster(other.id, &change("web", "")).await,
    ] {
        match result {
            Err(store::Error::Conflict { field, value }) => {
                assert_eq!((field, value.as_str()), ("name", "web"));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    // The failed update left the row as it was.
    assert_eq!(store.cluster(other.id).await.unwrap().name, "api");
}

async fn missing_clusters_are_not_found(backend: Backend) {
    let (store, _db) = backend.store().await;
    let not_found = |r: Result<_, store::Error>| matches!(r, Err(store::Error::NotFound { .. }));
    assert!(not_found(store.cluster(42).await.map(|_| ())));
    assert!(not_found(
        store.update_cluster(42, &change("x", "")).await.map(|_| ())
    ));
    assert!(not_found(store.delete_cluster(42).await));
}

async fn listing_filters_pages_and_orders(backend: Backend) {
    let (store, _db) = backend.store().await;
    for (name, line) in [
        ("zeta", "video"),
        ("alpha", "feed"),
        ("web-b", "video"),
        ("web-a", "video"),
    ] {
        store.create_cluster(&change(name, line)).await.unwrap();
    }
    let names = |v: Vec<store::Cluster>| v.into_iter().map(|c| c.name).collect::<Vec<_>>();

    let (all, total) = store
        .list_clusters(&ClusterQuery::default(), ALL)
        .await
        .unwrap();
    assert_eq!(total, 4);
    assert_eq!(names(all), ["alpha", "web-a", "web-b", "zeta"]);

    let query = ClusterQuery {
        name_contains: Some("web".into()),
        business_line: None,
    };
    let (page2, total) = store
        .list_clusters(
            &query,
            Window {
                limit: 1,
                offset: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!((names(page2), total), (vec!["web-b".to_owned()], 2));

    let query = ClusterQuery {
        name_contains: None,
        business_line: Some("video".into()),
    };
    let (video, total) = store.list_clusters(&query, ALL).await.unwrap();
    assert_eq!(
        (names(video), total),
        (vec!["web-a".into(), "web-b".into(), "zeta".into()], 3)
    );

    let (past_end, total) = store
        .list_clusters(
            &ClusterQuery::default(),
            Window {
                limit: 10,
                offset: 10,
            },
        )
        .await
        .unwrap();
    assert!(past_end.is_empty());
    assert_eq!(total, 4);
}

async fn like_wildcards_match_literally(backend: Backend) {
    let (store, _db) = backend.store().await;
    store.create_cluster(&change("a_b", "")).await.unwrap();
    store.create_cluster(&change("axb", "")).await.unwrap();
    let query = ClusterQuery {
        name_contains: Some("a_b".into()),
        business_line: None,
    };
    let (found, total) = store.list_clusters(&query, ALL).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(found[0].name, "a_b");
}

async fn migrations_apply_once(backend: Backend) {
    let (store, db) = backend.store().await;
    store.create_cluster(&change("kept", "")).await.unwrap();
    store.close().await;
    // Reopening runs the migrator again: nothing re-applied, nothing lost.
    let again = Store::open(&db.url).await.unwrap();
    assert_eq!(again.backend(), store.backend());
    let (all, _) = again
        .list_clusters(&ClusterQuery::default(), ALL)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

async fn sessions_expire_and_end(backend: Backend) {
    let (store, _db) = backend.store().await;
    let user = store.create_user("ann", "hash", "admin").await.unwrap();
    let later = OffsetDateTime::now_utc() + Duration::hours(1);
    let earlier = OffsetDateTime::now_utc() - Duration::seconds(1);
    store
        .create_session("live", user.id, "csrf-1", later)
        .await
        .unwrap();
    store
        .create_session("dead", user.id, "csrf-2", earlier)
        .await
        .unwrap();

    let live = store.session("live").await.unwrap().unwrap();
    assert_eq!((live.user, live.csrf_token.as_str()), (user, "csrf-1"));
    assert!(store.session("dead").await.unwrap().is_none());
    assert!(store.session("unknown").await.unwrap().is_none());

    store.delete_session("live").await.unwrap();
    assert!(store.session("live").await.unwrap().is_none());
}

async fn tokens_belong_to_their_user(backend: Backend) {
    let (store, _db) = backend.store().await;
    let ann = store.create_user("ann", "hash", "admin").await.unwrap();
    let bob = store.create_user("bob", "hash", "admin").await.unwrap();
    let first = store
        .create_token(ann.id, "ci", "dcp_abc", "hash-1")
        .await
        .unwrap();
    let second = store
        .create_token(ann.id, "laptop", "dcp_def", "hash-2")
        .await
        .unwrap();
    assert!(first.last_used_at.is_none());

    assert_eq!(store.token_user("hash-1").await.unwrap(), Some(ann.clone()));
    assert!(store.token_user("nope").await.unwrap().is_none());

    let (listed, total) = store.list_tokens(ann.id, ALL).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(listed[0].id, second.id, "newest first");
    assert!(listed[1].last_used_at.is_some(), "use was recorded");
    assert_eq!(store.list_tokens(bob.id, ALL).await.unwrap().1, 0);

    // Bob cannot revoke Ann's token.
    assert!(matches!(
        store.delete_token(bob.id, first.id).await,
        Err(store::Error::NotFound { what: "token" })
    ));
    store.delete_token(ann.id, first.id).await.unwrap();
    assert!(store.token_user("hash-1").await.unwrap().is_none());
}

async fn usernames_are_unique(backend: Backend) {
    let (store, _db) = backend.store().await;
    assert_eq!(store.count_users().await.unwrap(), 0);
    store.create_user("ann", "h", "admin").await.unwrap();
    assert!(matches!(
        store.create_user("ann", "h", "admin").await,
        Err(store::Error::Conflict {
            field: "username",
            ..
        })
    ));
    let (user, hash) = store.user_credentials("ann").await.unwrap().unwrap();
    assert_eq!((user.username.as_str(), hash.as_str()), ("ann", "h"));
    assert_eq!(store.count_users().await.unwrap(), 1);
}

fn command(name: &str) -> CommandChange {
    CommandChange {
        name: name.into(),
        description: String::new(),
        mode: CommandMode::Shell,
        script: format!("echo {name}"),
        params: "[]".into(),
    }
}

async fn groups_keep_their_commands_in_order_and_from_deletion(backend: Backend) {
    let (store, _db) = backend.store().await;
    let a = store.create_command(&command("a")).await.unwrap();
    let b = store.create_command(&command("b")).await.unwrap();
    let group = store
        .create_group(&GroupChange {
            name: "deploy".into(),
            description: String::new(),
            command_ids: vec![b.id, a.id, b.id],
        })
        .await
        .unwrap();
    let order: Vec<_> = group.steps.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(order, ["b", "a", "b"]);

    let err = store.delete_command(a.id).await.unwrap_err();
    assert!(
        matches!(&err, store::Error::InUse { by, .. } if by == &["command group deploy"]),
        "{err}"
    );
    // A group naming a missing command is refused whole.
    let err = store
        .update_group(
            group.id,
            &GroupChange {
                name: "deploy".into(),
                description: String::new(),
                command_ids: vec![a.id, 999_999],
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, store::Error::NotFound { what: "command" }),
        "{err}"
    );
    assert_eq!(store.group(group.id).await.unwrap().steps.len(), 3);

    store.delete_group(group.id).await.unwrap();
    store.delete_command(a.id).await.unwrap();
    let (left, total) = store.list_commands(None, window(10, 0)).await.unwrap();
    assert_eq!((left.len(), total), (1, 1));
}

fn execution(hosts: usize) -> NewExecution {
    NewExecution {
        title: "ad-hoc shell".into(),
        command_id: None,
        group_id: None,
        steps: "[]".into(),
        params: "{}".into(),
        forks: 5,
        timeout_secs: 60,
        created_by: "admin".into(),
        owner: "test".into(),
        hosts: (0..hosts)
            .map(|i| NewHost {
                address: format!("127.20.0.{i}"),
                port: 22,
                user: "root".into(),
            })
            .collect(),
    }
}

fn report(state: HostState, stdout: &str) -> HostReport {
    HostReport {
        state,
        exit_code: Some(0),
        stdout: stdout.into(),
        finished_at: Some(OffsetDateTime::now_utc()),
        ..HostReport::pending()
    }
}

async fn executions_count_their_hosts_and_page_newest_first(backend: Backend) {
    let (store, _db) = backend.store().await;
    let first = store.create_execution(&execution(3)).await.unwrap();
    let second = store.create_execution(&execution(1)).await.unwrap();
    store
        .report_host(first, 0, &report(HostState::Ok, "hi\n"))
        .await
        .unwrap();
    store
        .report_host(first, 2, &report(HostState::Unreachable, ""))
        .await
        .unwrap();
    store
        .set_execution_state(first, ExecutionState::Running)
        .await
        .unwrap();

    let got = store.execution(first).await.unwrap();
    assert_eq!(
        (
            got.counts.total,
            got.counts.ok,
            got.counts.pending,
            got.counts.unreachable
        ),
        (3, 1, 1, 1)
    );
    assert_eq!(got.state, ExecutionState::Running);
    assert!(got.finished_at.is_none());
    let hosts = store.execution_hosts(first).await.unwrap();
    assert_eq!(hosts[0].report.stdout, "hi\n");
    assert_eq!(hosts[1].report.state, HostState::Pending);

    let (page, total) = store.list_executions(None, window(1, 0)).await.unwrap();
    assert_eq!((page[0].id, total), (second, 2));
    let (running, _) = store
        .list_executions(Some(ExecutionState::Running), window(10, 0))
        .await
        .unwrap();
    assert_eq!(running.iter().map(|e| e.id).collect::<Vec<_>>(), [first]);
}

async fn abandoned_executions_end_failed_not_lost(backend: Backend) {
    let (store, _db) = backend.store().await;
    // Of two silent executions, the one whose runner still says it is
    // alive is left alone.
    let silent = store.create_execution(&execution(1)).await.unwrap();
    let alive = store.create_execution(&execution(1)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cutoff = OffsetDateTime::now_utc();
    store.heartbeat_executions(&[alive]).await.unwrap();
    let ended = store
        .end_abandoned_executions(cutoff, "gone")
        .await
        .unwrap();
    assert_eq!(ended, [silent]);
    assert_eq!(
        store.execution(silent).await.unwrap().state,
        ExecutionState::Failed
    );
    assert_eq!(
        store.execution(alive).await.unwrap().state,
        ExecutionState::Pending
    );
    store
        .set_execution_state(alive, ExecutionState::Succeeded)
        .await
        .unwrap();

    let id = store.create_execution(&execution(2)).await.unwrap();
    store
        .report_host(id, 0, &report(HostState::Ok, ""))
        .await
        .unwrap();
    // Alive recently: left alone.
    let ended = store
        .end_abandoned_executions(OffsetDateTime::now_utc() - Duration::minutes(1), "gone")
        .await
        .unwrap();
    assert!(ended.is_empty());
    let ended = store
        .end_abandoned_executions(OffsetDateTime::now_utc() + Duration::seconds(1), "gone")
        .await
        .unwrap();
    assert_eq!(ended, [id]);
    let got = store.execution(id).await.unwrap();
    assert_eq!(got.state, ExecutionState::PartiallyFailed);
    assert!(got.finished_at.is_some());
    let hosts = store.execution_hosts(id).await.unwrap();
    assert_eq!(
        (hosts[1].report.state, hosts[1].report.message.as_str()),
        (HostState::Failed, "gone")
    );
}

async fn retention_deletes_old_finished_executions_only(backend: Backend) {
    let (store, _db) = backend.store().await;
    let old = store.create_execution(&execution(1)).await.unwrap();
    store
        .report_host(old, 0, &report(HostState::Ok, "out"))
        .await
        .unwrap();
    store
        .set_execution_state(old, ExecutionState::Succeeded)
        .await
        .unwrap();
    let running = store.create_execution(&execution(1)).await.unwrap();
    store
        .set_execution_state(running, ExecutionState::Running)
        .await
        .unwrap();
    let settings = dcp::retention::Settings {
        executions: Some(std::time::Duration::from_secs(30 * 86_400)),
        ..Default::default()
    };
    // Today, the finished one is recent: kept.
    let now = OffsetDateTime::now_utc();
    let swept = dcp::retention::sweep_once(&store, settings, now)
        .await
        .unwrap();
    assert_eq!(swept.executions, 0);
    assert!(store.execution(old).await.is_ok());
    // 31 days on, it is deleted with its hosts; the running one stays.
    let later = now + Duration::days(31);
    let swept = dcp::retention::sweep_once(&store, settings, later)
        .await
        .unwrap();
    assert_eq!(swept.executions, 1);
    assert!(store.execution(old).await.is_err());
    assert!(store.execution_hosts(old).await.unwrap().is_empty());
    assert_eq!(
        store.execution(running).await.unwrap().state,
        ExecutionState::Running
    );
}

async fn host_keys_are_trusted_once(backend: Backend) {
    let (store, _db) = backend.store().await;
    let key = |fingerprint: &str| HostKeyRecord {
        host: "127.20.0.1:22".into(),
        algorithm: "ssh-ed25519".into(),
        fingerprint: fingerprint.into(),
        public_key: format!("ssh-ed25519 {fingerprint}"),
        first_seen_at: OffsetDateTime::UNIX_EPOCH,
        last_seen_at: OffsetDateTime::UNIX_EPOCH,
    };
    assert_eq!(
        store
            .trust_host_key(&key("SHA256:one"))
            .await
            .unwrap()
            .fingerprint,
        "SHA256:one"
    );
    // A different key later does not replace the trusted one.
    assert_eq!(
        store
            .trust_host_key(&key("SHA256:two"))
            .await
            .unwrap()
            .fingerprint,
        "SHA256:one"
    );
    store.forget_host_key("127.20.0.1:22").await.unwrap();
    assert_eq!(
        store
            .trust_host_key(&key("SHA256:two"))
            .await
            .unwrap()
            .fingerprint,
        "SHA256:two"
    );
    let (keys, total) = store.list_host_keys(window(10, 0)).await.unwrap();
    assert_eq!((keys.len(), total), (1, 1));
    assert!(matches!(
        store.forget_host_key("127.9.9.9:22").await,
        Err(store::Error::NotFound { .. })
    ));
}

fn window(limit: u32, offset: u64) -> Window {
    Window { limit, offset }
}

/// An aliyun account named `name` (its secret is not a real seal).
async fn account(store: &Store, name: &str) -> store::AccountRecord {
    store
        .create_account(&AccountChange {
            name: name.into(),
            provider: "aliyun".into(),
            config: "{}".into(),
            key_id: "LTAI".into(),
            secret_sealed: Some("v1:sealed".into()),
        })
        .await
        .unwrap()
}

async fn template(store: &Store, name: &str) -> i64 {
    let account = account(store, &format!("{name}-account")).await;
    store
        .create_template(&TemplateChange {
            name: name.into(),
            description: String::new(),
            account_id: account.id,
            spec: "{}".into(),
            login_user: "root".into(),
            init_group_id: None,
            init_timeout_secs: 600,
            quota_hours: 10,
        })
        .await
        .unwrap()
        .id
}

fn machine(template_id: i64, key: Option<&str>) -> NewMachine {
    NewMachine {
        name: "m".into(),
        template_id: Some(template_id),
        provider: "aliyun".into(),
        region: "cn-hangzhou".into(),
        request_key: key.map(str::to_owned),
        address: None,
        port: 22,
        user: "root".into(),
        private_key_sealed: None,
        public_key: None,
        state: MachineState::Creating,
        reason: "requested".into(),
    }
}

async fn machines_move_only_from_the_state_they_are_in(backend: Backend) {
    let (store, _db) = backend.store().await;
    let template = template(&store, "web").await;
    let made = store
        .create_machines(&[
            machine(template, Some("k#1")),
            machine(template, Some("k#2")),
        ])
        .await
        .unwrap();
    assert_eq!(made.len(), 2);
    assert!(matches!(
        store
            .create_machines(&[machine(template, Some("k#1"))])
            .await,
        Err(store::Error::Conflict {
            field: "idempotency_key",
            ..
        })
    ));
    assert_eq!(store.machines_of_request("k").await.unwrap().len(), 2);
    assert!(
        store.machines_of_request("k_").await.unwrap().is_empty(),
        "like wildcards are literal"
    );
    let id = made[0].id;
    let update = MachineUpdate {
        instance_id: Some("i-1".into()),
        ..MachineUpdate::default()
    };
    let moved = store
        .transition_machine(
            id,
            &[MachineState::Creating],
            MachineState::Starting,
            "created",
            &update,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (moved.state, moved.instance_id.as_deref()),
        (MachineState::Starting, Some("i-1"))
    );
    // A second mover from the old state loses.
    assert!(
        store
            .transition_machine(
                id,
                &[MachineState::Creating],
                MachineState::Error,
                "late",
                &MachineUpdate::default()
            )
            .await
            .unwrap()
            .is_none()
    );
    let ready = store
        .transition_machine(
            id,
            &[MachineState::Starting],
            MachineState::Ready,
            "init ok",
            &MachineUpdate {
                address: Some("127.21.1.1".into()),
                ..MachineUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(ready.ready_at.is_some());
    assert_eq!(ready.instance_id.as_deref(), Some("i-1"), "kept");
    let events = store.machine_events(id).await.unwrap();
    let states: Vec<_> = events.iter().map(|e| e.state).collect();
    assert_eq!(
        states,
        [
            MachineState::Creating,
            MachineState::Starting,
            MachineState::Ready
        ]
    );
    store
        .log_machine(id, &["one".into(), "two".into()])
        .await
        .unwrap();
    let log = store.machine_log(id, 1).await.unwrap();
    assert_eq!(
        log.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(),
        ["two"]
    );
    let busy = store.machines_in(&[MachineState::Creating]).await.unwrap();
    assert_eq!(busy.iter().map(|m| m.id).collect::<Vec<_>>(), [made[1].id]);
    let (page, total) = store
        .list_machines(Some(MachineState::Ready), Some(template), window(10, 0))
        .await
        .unwrap();
    assert_eq!((page.len(), total), (1, 1));
}

async fn released_machines_charge_their_template(backend: Backend) {
    let (store, _db) = backend.store().await;
    let template = template(&store, "metered").await;
    let made = store
        .create_machines(&[machine(template, None)])
        .await
        .unwrap();
    store
        .transition_machine(
            made[0].id,
            &[MachineState::Creating],
            MachineState::Deleted,
            "released",
            &MachineUpdate {
                charged_hours: Some(49),
                ..MachineUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    let record = store.template(template).await.unwrap();
    assert_eq!(
        (
            record.used_hours,
            record.live_machines,
            record.released_machines
        ),
        (49, 0, 1)
    );
    store.record_fleet_size("aliyun").await.unwrap();
    let history = store
        .fleet_history(OffsetDateTime::now_utc() - Duration::hours(2))
        .await
        .unwrap();
    assert!(
        history.iter().any(|(_, p, n)| p == "aliyun" && *n == 0),
        "{history:?}"
    );
    // Released machines do not hold their template.
    store.delete_template(template).await.unwrap();
}

async fn machines_in_pools_are_named_and_kept(backend: Backend) {
    let (store, _db) = backend.store().await;
    let template = template(&store, "pooled").await;
    let made = store
        .create_machines(&[machine(template, None)])
        .await
        .unwrap();
    let cluster = store.create_cluster(&change("shop", "")).await.unwrap();
    let service = store
        .create_service(&ServiceChange {
            cluster_id: cluster.id,
            name: "web".into(),
            description: String::new(),
            service_type: String::new(),
            image: "nginx".into(),
            container: "{}".into(),
        })
        .await
        .unwrap();
    let pool = store
        .create_pool(&PoolChange {
            service_id: service.id,
            name: "web-a".into(),
            description: String::new(),
            template_id: Some(template),
            expand_template_id: None,
            shrink_template_id: None,
            deploy_template_id: None,
            binding_id: None,
        })
        .await
        .unwrap();
    // A pool that names no task templates runs the seeded ones.
    for (purpose, bound) in [
        ("expand", pool.task_templates.expand),
        ("shrink", pool.task_templates.shrink),
        ("deploy", pool.task_templates.deploy),
    ] {
        let seeded = store.seeded_template(purpose).await.unwrap();
        assert_eq!(Some(bound), seeded, "{purpose}");
    }
    let nodes = store
        .add_nodes(
            pool.id,
            &[NewNode {
                machine_id: Some(made[0].id),
                address: "127.21.1.2".into(),
                port: 22,
                user: "root".into(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(
        store.pool_of_machine(made[0].id).await.unwrap().as_deref(),
        Some("web-a")
    );
    let in_use = store.delete_template(template).await.unwrap_err();
    assert!(in_use.to_string().contains("pool web-a"), "{in_use}");
    assert!(matches!(
        store.delete_cluster(cluster.id).await,
        Err(store::Error::InUse { .. })
    ));
    store.remove_node(pool.id, nodes[0].id).await.unwrap();
    assert_eq!(store.pool_of_machine(made[0].id).await.unwrap(), None);
    // An unfinished task holds the pool; a finished one goes with it.
    let task = store
        .create_task(&NewTask {
            kind: "shrink".into(),
            pool_id: pool.id,
            template_id: pool.task_templates.shrink,
            steps: "[]".into(),
            step_count: 0,
            overrides: "{}".into(),
            batch_size: 1,
            created_by: "ann".into(),
            nodes: Vec::new(),
            exclusive: true,
        })
        .await
        .unwrap();
    let held = store.delete_pool(pool.id).await.unwrap_err();
    assert!(held.to_string().contains(&format!("task {task}")), "{held}");
    assert_eq!(store.claim_tasks("me", 60_000, 10).await.unwrap(), [task]);
    assert!(
        store
            .save_task_state(task, "me", "succeeded", "", true, true)
            .await
            .unwrap()
    );
    store.delete_pool(pool.id).await.unwrap();
    assert!(matches!(
        store.task(task).await,
        Err(store::Error::NotFound { .. })
    ));
    store.delete_service(service.id).await.unwrap();
    store.delete_cluster(cluster.id).await.unwrap();
}

fn adopted(address: &str) -> NewMachine {
    NewMachine {
        name: "old-db".into(),
        template_id: None,
        provider: "adopted".into(),
        region: String::new(),
        request_key: None,
        address: Some(address.into()),
        port: 22,
        user: "root".into(),
        private_key_sealed: None,
        public_key: None,
        state: MachineState::Ready,
        reason: "adopted".into(),
    }
}

fn claimed_by(result: store::Result<impl std::fmt::Debug>) -> Option<i64> {
    match result {
        Err(store::Error::Claimed {
            field: "address",
            machine,
            ..
        }) => machine,
        other => panic!("expected the address to be refused, got {other:?}"),
    }
}

async fn release(store: &Store, id: i64, from: MachineState) {
    store
        .transition_machine(
            id,
            &[from],
            MachineState::Deleted,
            "released",
            &MachineUpdate::default(),
        )
        .await
        .unwrap()
        .unwrap();
}

async fn one_server_is_one_live_machine(backend: Backend) {
    let (store, _db) = backend.store().await;
    // Two adoptions at once: the index lets exactly one win.
    let (first, second) = ([adopted("127.20.0.7")], [adopted("127.20.0.7")]);
    let (a, b) = tokio::join!(
        store.create_machines(&first),
        store.create_machines(&second)
    );
    let (won, lost) = match (a, b) {
        (Ok(won), lost) | (lost, Ok(won)) => (won[0].id, lost),
        (a, b) => panic!("neither adoption won: {a:?} / {b:?}"),
    };
    assert_eq!(claimed_by(lost), Some(won));
    assert_eq!(
        claimed_by(store.address_free("::FFFF:127.20.0.7", 22).await),
        Some(won)
    );
    assert_eq!(
        claimed_by(store.create_machines(&[adopted("::ffff:127.20.0.7")]).await),
        Some(won)
    );
    store.address_free("127.20.0.7", 2222).await.unwrap();

    // A cloud handing out an address DCP reaches another machine on.
    let template = template(&store, "web").await;
    let cloud = store
        .create_machines(&[machine(template, Some("k#1"))])
        .await
        .unwrap()[0]
        .id;
    let given = MachineUpdate {
        address: Some("127.20.0.7".into()),
        ..MachineUpdate::default()
    };
    let moved = store
        .transition_machine(
            cloud,
            &[MachineState::Creating],
            MachineState::Initializing,
            "running",
            &given,
        )
        .await;
    assert_eq!(claimed_by(moved), Some(won));
    assert_eq!(
        store.machine(cloud).await.unwrap().state,
        MachineState::Creating
    );

    // Released, the server is free again.
    release(&store, won, MachineState::Ready).await;
    store
        .transition_machine(
            cloud,
            &[MachineState::Creating],
            MachineState::Initializing,
            "running",
            &given,
        )
        .await
        .unwrap()
        .unwrap();
    release(&store, cloud, MachineState::Initializing).await;
    store
        .create_machines(&[adopted("127.20.0.7")])
        .await
        .unwrap();
}

/// The migrations before the one that made a live machine's address
/// unique, from the sources (the same files, so the same checksums).
async fn migrate_before_identity(backend: Backend, url: &str) -> sqlx::AnyPool {
    migrate_before(backend, url, "0009").await
}

/// The migrations before `first` (a file name's number), from the sources
/// (the same files, so the same checksums).
async fn migrate_before(backend: Backend, url: &str, first: &str) -> sqlx::AnyPool {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../host/migrations")
        .join(match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        });
    let older = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < first {
            std::fs::copy(&path, older.path().join(name)).unwrap();
        }
    }
    sqlx::any::install_default_drivers();
    let url = match backend {
        Backend::Sqlite => format!("{url}?mode=rwc"),
        Backend::Postgres => url.to_owned(),
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(older.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool
}

async fn an_upgrade_keeps_machines_that_already_share_a_server(backend: Backend) {
    let db = backend.database().await;
    let old = migrate_before_identity(backend, &db.url).await;
    // Written by a version that let one server be adopted twice.
    for (address, port, state) in [
        ("127.20.0.9", 22, "ready"),
        ("127.20.0.9", 22, "ready"),
        ("127.20.0.9", 22, "deleted"),
        ("127.20.0.9", 2222, "ready"),
        ("Db.Example.com", 22, "ready"),
        ("db.example.com", 22, "error"),
    ] {
        sqlx::query(&format!(
            "insert into machines (name, provider, address, port, login_user, state, \
             created_at, updated_at) values ('old', 'adopted', '{address}', {port}, 'root', \
             '{state}', 0, 0)"
        ))
        .execute(&old)
        .await
        .unwrap();
    }
    old.close().await;

    // The upgrade neither fails nor touches a machine; the later duplicates
    // say which machine they duplicate.
    let store = Store::open(&db.url).await.unwrap();
    let (live, _) = store.list_machines(None, None, ALL).await.unwrap();
    assert_eq!(live.len(), 5);
    assert!(
        live.iter()
            .all(|m| m.state != MachineState::Deleted || m.id == 3)
    );
    let log = |id| {
        let store = &store;
        async move {
            store
                .machine_log(id, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, line)| line)
                .collect::<Vec<_>>()
        }
    };
    assert!(log(1).await.is_empty());
    assert!(
        log(2).await[0].contains("as machine 1"),
        "{:?}",
        log(2).await
    );
    assert!(log(4).await.is_empty());
    assert!(
        log(6).await[0].contains("as machine 5"),
        "{:?}",
        log(6).await
    );
    // A new one is refused on the oldest's identity.
    assert_eq!(
        claimed_by(store.create_machines(&[adopted("127.20.0.9")]).await),
        Some(1)
    );
    // The duplicate keeps the host key when the oldest goes.
    let key = HostKeyRecord {
        host: "127.20.0.9:22".into(),
        algorithm: "ssh-ed25519".into(),
        fingerprint: "SHA256:one".into(),
        public_key: "ssh-ed25519 one".into(),
        first_seen_at: OffsetDateTime::UNIX_EPOCH,
        last_seen_at: OffsetDateTime::UNIX_EPOCH,
    };
    store.trust_host_key(&key).await.unwrap();
    release(&store, 1, MachineState::Ready).await;
    assert!(
        !store
            .forget_released_host_key(&key.host, "127.20.0.9", 22, 1)
            .await
            .unwrap()
    );
    // The duplicate left still holds the server.
    assert_eq!(
        claimed_by(store.address_free("127.20.0.9", 22).await),
        Some(2)
    );
    // With both gone the server may be adopted again.
    release(&store, 2, MachineState::Ready).await;
    assert!(
        store
            .forget_released_host_key(&key.host, "127.20.0.9", 22, 2)
            .await
            .unwrap()
    );
    store
        .create_machines(&[adopted("127.20.0.9")])
        .await
        .unwrap();
}

async fn balancer_nodes_are_a_machine_or_an_account(backend: Backend) {
    use dcp::store::NodeHost;
    let (store, db) = backend.store().await;
    let machine = store
        .create_machines(&[adopted("127.20.0.31")])
        .await
        .unwrap()[0]
        .id;
    let account = account(&store, "slb").await;
    // The install's default unit.
    let unit = store.lb_units(None).await.unwrap()[0].clone();
    let on_machine = store
        .add_lb_node(unit.id, NodeHost::Machine(machine), "{}")
        .await
        .unwrap();
    assert_eq!(on_machine.machine_id, Some(machine));
    assert_eq!(on_machine.account_id, None);
    assert_eq!(on_machine.address.as_deref(), Some("127.20.0.31"));
    assert_eq!(on_machine.machine_state.as_deref(), Some("ready"));
    // One account may hold several of a unit's load balancers.
    for lb in ["lb-1", "lb-2"] {
        let node = store
            .add_lb_node(
                unit.id,
                NodeHost::Account(account.id),
                &format!(r#"{{"load_balancer_id":"{lb}"}}"#),
            )
            .await
            .unwrap();
        assert_eq!(node.account_id, Some(account.id));
        assert_eq!(node.account_name.as_deref(), Some("slb"));
        assert_eq!(
            (node.machine_id, node.address, node.machine_state),
            (None, None, None)
        );
    }
    assert!(matches!(
        store.add_lb_node(unit.id, NodeHost::Machine(machine), "{}").await,
        Err(store::Error::Conflict { field, .. }) if field == "machine_id"
    ));
    let targets = store.push_targets(unit.group_id).await.unwrap();
    assert_eq!(targets.len(), 3);
    assert_eq!(
        targets
            .iter()
            .map(|t| (t.machine_id, t.account_id))
            .collect::<Vec<_>>(),
        vec![
            (Some(machine), None),
            (None, Some(account.id)),
            (None, Some(account.id))
        ]
    );
    assert_eq!(store.lb_nodes(unit.id).await.unwrap().len(), 3);
    // The database itself holds the rule: exactly one of the two.
    let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
    for (machine_id, account_id) in [(None, None), (Some(machine), Some(account.id))] {
        let wrote = sqlx::query(
            "insert into lb_nodes (unit_id, machine_id, account_id, settings, created_at, \
             updated_at) values ($1, $2, $3, '{}', 0, 0)",
        )
        .bind(unit.id)
        .bind(machine_id)
        .bind(account_id)
        .execute(&raw)
        .await;
        assert!(wrote.is_err(), "{machine_id:?} {account_id:?} was stored");
    }
    // An account a node uses is not deleted; the unit's dependents name it.
    match store.delete_account(account.id).await {
        Err(store::Error::InUse { what, by }) => {
            assert_eq!(what, "account");
            assert_eq!(by, vec!["balancer node of unit default"; 2]);
        }
        other => panic!("deleting an account in use: {other:?}"),
    }
    match store.delete_lb_unit(unit.id).await {
        Err(store::Error::InUse { by, .. }) => {
            assert_eq!(by, vec!["node 127.20.0.31", "node slb", "node slb"]);
        }
        other => panic!("deleting a unit with nodes: {other:?}"),
    }
    for node in store.lb_nodes(unit.id).await.unwrap() {
        store.delete_lb_node(node.id).await.unwrap();
    }
    store.delete_account(account.id).await.unwrap();
}

async fn an_upgrade_keeps_balancer_nodes_their_states_and_releases(backend: Backend) {
    let db = backend.database().await;
    let old = migrate_before(backend, &db.url, "0015").await;
    // Written by 0014: nodes (one removed, so the id sequence is ahead of
    // the rows), what each applied, and a release's nodes.
    let run = |sql: String| {
        let old = &old;
        async move { sqlx::query(&sql).execute(old).await.unwrap() }
    };
    for i in 1..=3 {
        run(format!(
            "insert into machines (name, provider, address, port, login_user, state, \
             created_at, updated_at) values ('lb{i}', 'adopted', '127.20.1.{i}', 22, 'root', \
             'ready', 0, 0)"
        ))
        .await;
        run(format!(
            "insert into lb_nodes (unit_id, machine_id, settings, created_at, updated_at) \
             select u.id, {i}, '{{\"n\":{i}}}', {i}, {i} from lb_units u where u.name = 'default'"
        ))
        .await;
    }
    run("delete from lb_nodes where id = 3".into()).await;
    for (node, revision, error) in [(1, 4, ""), (2, 3, "reload failed")] {
        run(format!(
            "insert into upstream_states (upstream_id, node_id, revision, error, updated_at) \
             select id, {node}, {revision}, '{error}', 7 from upstreams \
             where name = 'default_upstream'"
        ))
        .await;
    }
    run(
        "insert into lb_releases (unit_id, files, state, created_by, created_at) \
         select id, '[]', 'partial', 'user:admin', 8 from lb_units where name = 'default'"
            .into(),
    )
    .await;
    for (node, state) in [(1, "succeeded"), (2, "failed")] {
        run(format!(
            "insert into lb_release_nodes (release_id, node_id, address, state, log, \
             started_at, finished_at) values (1, {node}, '127.20.1.{node}', '{state}', \
             'log {node}', 8, 9)"
        ))
        .await;
    }
    old.close().await;

    // 0015 (through the store, as a DCP start runs it) keeps every row.
    let store = Store::open(&db.url).await.unwrap();
    let unit = store.lb_units(None).await.unwrap()[0].clone();
    let nodes = store.lb_nodes(unit.id).await.unwrap();
    assert_eq!(
        nodes
            .iter()
            .map(|n| (
                n.id,
                n.machine_id,
                n.account_id,
                n.settings.as_str(),
                n.created_at
            ))
            .collect::<Vec<_>>(),
        vec![
            (1, Some(1), None, r#"{"n":1}"#, 1),
            (2, Some(2), None, r#"{"n":2}"#, 2)
        ]
    );
    let states = store.upstream_states(None).await.unwrap();
    assert_eq!(
        states
            .iter()
            .map(|s| (s.node_id, s.revision, s.error.as_str(), s.updated_at))
            .collect::<Vec<_>>(),
        vec![(1, 4, "", 7), (2, 3, "reload failed", 7)]
    );
    let released = store.release_nodes(1).await.unwrap();
    assert_eq!(
        released
            .iter()
            .map(|r| (
                r.node_id,
                r.address.as_str(),
                r.state.as_str(),
                r.log.as_str()
            ))
            .collect::<Vec<_>>(),
        vec![
            (1, "127.20.1.1", "succeeded", "log 1"),
            (2, "127.20.1.2", "failed", "log 2")
        ]
    );
    // The children still follow their node: removing one removes what it
    // applied and its release rows, and nothing of the other's.
    store.delete_lb_node(2).await.unwrap();
    assert_eq!(store.upstream_states(None).await.unwrap().len(), 1);
    assert_eq!(store.release_nodes(1).await.unwrap().len(), 1);
    // A removed node's id is not given again.
    let next = store
        .add_lb_node(unit.id, dcp::store::NodeHost::Machine(3), "{}")
        .await
        .unwrap();
    assert_eq!(next.id, 4);
}

/// 0016 stops keeping each logged change's whole membership: the changes
/// logged before keep theirs, and every upstream's members are kept as a
/// snapshot of its revision, which later changes are replayed from.
async fn an_upgrade_keeps_the_logs_memberships_and_snapshots_every_upstream(backend: Backend) {
    let db = backend.database().await;
    let old = migrate_before(backend, &db.url, "0016").await;
    let members = r#"[{"address":"127.30.0.1","port":80,"weight":10}]"#;
    for sql in [
        format!(
            "update upstreams set backends = '{members}', revision = 3 \
             where name = 'default_upstream'"
        ),
        "insert into discovery_changes (at, actor, action, upstream_id, target, args, before, \
         after, revision, state) select 5, 'user:admin', 'register', id, 'upstream', '{}', \
         '[]', backends, 3, 'succeeded' from upstreams where name = 'default_upstream'"
            .to_owned(),
    ] {
        sqlx::query(&sql).execute(&old).await.unwrap();
    }
    old.close().await;

    let store = Store::open(&db.url).await.unwrap();
    let upstream = store
        .upstreams(None)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.name == "default_upstream")
        .unwrap();
    let (base, snapshot, after) = store.membership_log(upstream.id, 3, 3).await.unwrap();
    assert_eq!((base, snapshot.as_str(), after.len()), (3, members, 0));
    // Below the snapshot there is none: replaying starts from no members.
    let (base, snapshot, _) = store.membership_log(upstream.id, 2, 3).await.unwrap();
    assert_eq!((base, snapshot.as_str()), (0, "[]"));
    let (changes, _) = store
        .list_changes(&store::ChangeQuery::default(), window(10, 0))
        .await
        .unwrap();
    let logged = &changes[0];
    assert_eq!(
        (
            logged.before.as_deref(),
            logged.after.as_deref(),
            logged.seq,
            logged.added.as_deref()
        ),
        (Some("[]"), Some(members), None, None)
    );
}
