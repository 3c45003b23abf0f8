-- Orchestration below clusters: services, their pools, and the pools' nodes.

create table services (
    id           bigint generated always as identity primary key,
    cluster_id   bigint not null references clusters (id) on delete restrict,
    name         text not null unique,
    description  text not null default '',
    service_type text not null default '',
    image        text not null,
    -- The default container spec as JSON (ports, env, volumes, limits…).
    container    text not null,
    created_at   bigint not null,
    updated_at   bigint not null
);
create index services_cluster on services (cluster_id);

create table pools (
    id          bigint generated always as identity primary key,
    service_id  bigint not null references services (id) on delete restrict,
    name        text not null unique,
    description text not null default '',
    template_id bigint references machine_templates (id) on delete restrict,
    created_at  bigint not null,
    updated_at  bigint not null
);
create index pools_service on pools (service_id);
create index pools_template on pools (template_id);

-- A node is a machine DCP manages, or a server added by address.
create table nodes (
    id         bigint generated always as identity primary key,
    pool_id    bigint not null references pools (id) on delete restrict,
    machine_id bigint unique references machines (id) on delete restrict,
    address    text not null,
    port       bigint not null,
    login_user text not null,
    state      text not null,
    created_at bigint not null,
    updated_at bigint not null,
    unique (pool_id, address, port)
);
