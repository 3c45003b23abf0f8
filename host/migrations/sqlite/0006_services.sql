-- Orchestration below clusters: services, their pools, and the pools' nodes.

create table services (
    id           integer primary key autoincrement,
    cluster_id   integer not null references clusters (id) on delete restrict,
    name         text not null unique,
    description  text not null default '',
    service_type text not null default '',
    image        text not null,
    -- The default container spec as JSON (ports, env, volumes, limits…).
    container    text not null,
    created_at   integer not null,
    updated_at   integer not null
);
create index services_cluster on services (cluster_id);

create table pools (
    id          integer primary key autoincrement,
    service_id  integer not null references services (id) on delete restrict,
    name        text not null unique,
    description text not null default '',
    template_id integer references machine_templates (id) on delete restrict,
    created_at  integer not null,
    updated_at  integer not null
);
create index pools_service on pools (service_id);
create index pools_template on pools (template_id);

-- A node is a machine DCP manages, or a server added by address.
create table nodes (
    id         integer primary key autoincrement,
    pool_id    integer not null references pools (id) on delete restrict,
    machine_id integer unique references machines (id) on delete restrict,
    address    text not null,
    port       integer not null,
    login_user text not null,
    state      text not null,
    created_at integer not null,
    updated_at integer not null,
    unique (pool_id, address, port)
);
