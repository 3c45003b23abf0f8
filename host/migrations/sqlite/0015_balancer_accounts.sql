-- A balancer node is a machine DCP reaches over SSH, or a cloud load
-- balancer (Aliyun SLB, …) its plugin drives through the API of a cloud
-- account: `machine_id` or `account_id`, exactly one.
--
-- SQLite cannot drop a NOT NULL, so lb_nodes is rebuilt. Its children
-- (upstream_states, lb_release_nodes) reference it `on delete cascade`,
-- and this runs in sqlx's transaction with foreign keys on, where they
-- cannot be turned off: dropping lb_nodes would delete every child row,
-- and renaming it rewrites the children's references to the old name
-- (even under legacy_alter_table, while foreign keys are on). So the
-- children are set aside first, rebuilt unchanged after, and lb_nodes is
-- rebuilt while nothing references it. Every row keeps its id, and the id
-- sequence keeps going (a removed node's id is not reused).

create table lb_nodes_0015_states as select * from upstream_states;
create table lb_nodes_0015_release_nodes as select * from lb_release_nodes;
drop table upstream_states;
drop table lb_release_nodes;

create table lb_nodes_0015 (
    id         integer primary key autoincrement,
    unit_id    integer not null references lb_units (id) on delete restrict,
    -- A machine running the balancer, reached over SSH…
    machine_id integer references machines (id) on delete restrict,
    -- …or a cloud account whose load balancer (named in `settings`) the
    -- unit's plugin drives through the cloud's API.
    account_id integer references cloud_accounts (id) on delete restrict,
    settings   text not null default '{}',
    created_at integer not null,
    updated_at integer not null,
    unique (unit_id, machine_id),
    check ((machine_id is null) <> (account_id is null))
);
insert into lb_nodes_0015 (id, unit_id, machine_id, settings, created_at, updated_at)
select id, unit_id, machine_id, settings, created_at, updated_at from lb_nodes;
delete from sqlite_sequence where name = 'lb_nodes_0015';
insert into sqlite_sequence (name, seq)
select 'lb_nodes_0015', seq from sqlite_sequence where name = 'lb_nodes';
drop table lb_nodes;
alter table lb_nodes_0015 rename to lb_nodes;
create index lb_nodes_machine on lb_nodes (machine_id);
create index lb_nodes_account on lb_nodes (account_id);

-- As 0012 made them.
create table upstream_states (
    upstream_id integer not null references upstreams (id) on delete cascade,
    node_id     integer not null references lb_nodes (id) on delete cascade,
    -- The highest revision the node confirmed serving.
    revision    integer not null,
    -- Why the last attempt failed; empty when it served the revision asked.
    error       text not null default '',
    updated_at  integer not null,
    primary key (upstream_id, node_id)
);
insert into upstream_states (upstream_id, node_id, revision, error, updated_at)
select upstream_id, node_id, revision, error, updated_at from lb_nodes_0015_states;
drop table lb_nodes_0015_states;

create table lb_release_nodes (
    release_id  integer not null references lb_releases (id) on delete cascade,
    node_id     integer not null references lb_nodes (id) on delete cascade,
    address     text not null,
    -- pending, running, succeeded or failed.
    state       text not null,
    log         text not null default '',
    started_at  integer,
    finished_at integer,
    primary key (release_id, node_id)
);
insert into lb_release_nodes (release_id, node_id, address, state, log, started_at, finished_at)
select release_id, node_id, address, state, log, started_at, finished_at
from lb_nodes_0015_release_nodes;
drop table lb_nodes_0015_release_nodes;
