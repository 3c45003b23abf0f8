-- Service discovery (OpenDCP's hubble): balancer groups (a product line)
-- → units (the balancer hosts serving one service) → nodes (machines the
-- balancer runs on). Upstreams belong to a group and are served by every
-- node of every unit in it. DCP's store holds their desired membership;
-- `upstream_states` records what each node last applied, so drift shows.

create table lb_groups (
    id          integer primary key autoincrement,
    name        text not null unique,
    description text not null default '',
    created_at  integer not null,
    updated_at  integer not null
);

create table lb_units (
    id          integer primary key autoincrement,
    group_id    integer not null references lb_groups (id) on delete restrict,
    name        text not null,
    description text not null default '',
    -- The load-balancer plugin that applies changes to the unit's nodes.
    plugin      text not null,
    -- Its settings (JSON object); a node's own settings override them.
    config      text not null default '{}',
    -- A command group run on its nodes after each publish (OpenDCP's
    -- publish scripts).
    publish_group_id integer references command_groups (id) on delete restrict,
    created_at  integer not null,
    updated_at  integer not null,
    unique (group_id, name)
);

create table lb_nodes (
    id         integer primary key autoincrement,
    unit_id    integer not null references lb_units (id) on delete restrict,
    machine_id integer not null references machines (id) on delete restrict,
    settings   text not null default '{}',
    created_at integer not null,
    updated_at integer not null,
    unique (unit_id, machine_id)
);
create index lb_nodes_machine on lb_nodes (machine_id);

create table upstreams (
    id          integer primary key autoincrement,
    group_id    integer not null references lb_groups (id) on delete restrict,
    name        text not null,
    -- The desired members as a JSON array of {address, port, weight};
    -- changed only by compare-and-set on `revision`.
    backends    text not null default '[]',
    revision    integer not null default 0,
    created_at  integer not null,
    updated_at  integer not null,
    unique (group_id, name)
);

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

-- A discovery binding (OpenDCP's alteration type, orion's sd_id): where a
-- pool's nodes are registered, on which port and with which weight.
create table bindings (
    id          integer primary key autoincrement,
    name        text not null unique,
    description text not null default '',
    upstream_id integer not null references upstreams (id) on delete restrict,
    -- The backend port; null: the service's first published TCP port.
    port        integer,
    weight      integer not null,
    created_at  integer not null,
    updated_at  integer not null
);

alter table pools add column binding_id integer references bindings (id) on delete restrict;

-- The operation log: every change to discovery, by whom, with what, the
-- membership before and after, and how it ended. A change made under an
-- idempotency key (a task step, an API call with Idempotency-Key) is
-- recorded once; a retry finds it.
create table discovery_changes (
    id              integer primary key autoincrement,
    at              integer not null,
    actor           text not null,
    action          text not null,
    upstream_id     integer references upstreams (id) on delete set null,
    target          text not null default '',
    args            text not null default '{}',
    before          text,
    after           text,
    revision        integer,
    state           text not null,
    message         text not null default '',
    correlation_id  text not null default '',
    idempotency_key text unique,
    finished_at     integer
);
create index discovery_changes_at on discovery_changes (at);
create index discovery_changes_upstream on discovery_changes (upstream_id, at);

-- A unit's main configuration: files (nginx.conf and what it includes)
-- relative to the balancer's configuration directory; every version kept.
create table lb_config_files (
    id         integer primary key autoincrement,
    unit_id    integer not null references lb_units (id) on delete cascade,
    path       text not null,
    version    integer not null,
    content    text not null,
    created_by text not null,
    created_at integer not null,
    unique (unit_id, path, version)
);

-- A release: a set of file versions published to a unit's nodes.
create table lb_releases (
    id          integer primary key autoincrement,
    unit_id     integer not null references lb_units (id) on delete cascade,
    -- JSON array of {"path", "version"}.
    files       text not null,
    -- pending, running, succeeded, partial or failed.
    state       text not null,
    -- The release this one rolls back to, if it is a rollback.
    rollback_of integer references lb_releases (id) on delete set null,
    created_by  text not null,
    created_at  integer not null,
    finished_at integer,
    -- The publish command group's execution, when the unit has one.
    execution_id integer references executions (id) on delete set null
);
create index lb_releases_unit on lb_releases (unit_id, id);

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

-- App keys for other systems (hubble's appkey / interface / privilege):
-- stored hashed, shown once, revocable; privileges name interfaces.
create table app_keys (
    id           integer primary key autoincrement,
    name         text not null unique,
    key_hash     text not null unique,
    -- The first characters of the key, to tell keys apart.
    prefix       text not null,
    -- JSON array of interface names.
    privileges   text not null,
    created_by   text not null,
    created_at   integer not null,
    last_used_at integer,
    revoked_at   integer
);

-- Works on first start, as OpenDCP's default configuration did: a group,
-- a unit run by the bundled nginx plugin, an upstream and a binding to it.
insert into lb_groups (name, description, created_at, updated_at)
values ('default', 'Created at install', 1795305600000, 1795305600000);
insert into lb_units (group_id, name, description, plugin, config, created_at, updated_at)
select id, 'default', 'Created at install: add your nginx hosts here', 'nginx', '{}', 1795305600000, 1795305600000
from lb_groups where name = 'default';
insert into upstreams (group_id, name, created_at, updated_at)
select id, 'default_upstream', 1795305600000, 1795305600000 from lb_groups where name = 'default';
insert into bindings (name, description, upstream_id, port, weight, created_at, updated_at)
select 'default', 'Created at install: nodes join default_upstream', id, null, 10, 1795305600000, 1795305600000
from upstreams where name = 'default_upstream';
-- The default unit's main configuration: nginx proxying port 80 to
-- default_upstream, whose members DCP writes into dcp-upstreams/.
insert into lb_config_files (unit_id, path, version, content, created_by, created_at)
select u.id, 'nginx.conf', 1,
'# Managed by DCP: edit it in DCP (Discovery → unit default → Configuration), then publish.
worker_processes auto;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;

events {
    worker_connections 4096;
}

http {
    access_log off;
    # The upstreams DCP manages, one file each.
    include dcp-upstreams/*.conf;

    server {
        listen 80;
        location / {
            proxy_pass http://default_upstream;
            proxy_next_upstream error timeout http_502;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
        location = /nginx-health {
            return 200 "ok\n";
        }
    }
}
', 'dcp', 1795305600000
from lb_units u join lb_groups g on g.id = u.group_id where g.name = 'default' and u.name = 'default';

-- OpenDCP's templates for pools behind a load balancer: a node takes
-- traffic only once its container is healthy, and leaves the balancer
-- (drained) before its container stops.
insert into task_templates (name, description, purpose, steps, seeded, created_at, updated_at)
values
  ('expand-registered', 'Create machines, start the service, then register the nodes with the load balancer', 'expand',
   '[{"name":"create_vm","timeout_secs":1800},{"name":"start_service","retries":2,"retry_delay_secs":5},{"name":"register","retries":2,"retry_delay_secs":5}]',
   1, 1795305600000, 1795305600000),
  ('shrink-drained', 'Unregister the nodes (drained), stop the service, then return the machines', 'shrink',
   '[{"name":"unregister","retries":2,"retry_delay_secs":5},{"name":"stop_service","retries":2,"retry_delay_secs":5},{"name":"return_vm","timeout_secs":1800}]',
   1, 1795305600000, 1795305600000),
  ('upgrade-drained', 'Batch by batch: unregister (drained), run the new image, register again once healthy', 'deploy',
   '[{"name":"unregister","retries":2,"retry_delay_secs":5},{"name":"start_service","retries":2,"retry_delay_secs":5},{"name":"register","retries":2,"retry_delay_secs":5}]',
   1, 1795305600000, 1795305600000);
