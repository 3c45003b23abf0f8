-- Machines: cloud accounts, machine templates with their quota, machines
-- with their timeline and log, and the hourly fleet size.

-- Secrets are sealed (AEAD, key from the configuration) before they get here.
create table cloud_accounts (
    id            bigint generated always as identity primary key,
    name          text not null unique,
    provider      text not null,
    config        text not null default '{}',
    key_id        text not null,
    secret_sealed text not null,
    created_at    bigint not null,
    updated_at    bigint not null
);

create table machine_templates (
    id                bigint generated always as identity primary key,
    name              text not null unique,
    description       text not null default '',
    account_id        bigint not null references cloud_accounts (id) on delete restrict,
    -- What machines are made of, as JSON (region, zone, network, disks…).
    spec              text not null,
    login_user        text not null,
    init_group_id     bigint references command_groups (id) on delete restrict,
    init_timeout_secs bigint not null,
    -- Instance-hours granted; usage is the sum of machines.charged_hours.
    quota_hours       bigint not null,
    created_at        bigint not null,
    updated_at        bigint not null
);
create index machine_templates_account on machine_templates (account_id);
create index machine_templates_init_group on machine_templates (init_group_id);

create table machines (
    id                 bigint generated always as identity primary key,
    name               text not null,
    template_id        bigint references machine_templates (id) on delete restrict,
    provider           text not null,
    region             text not null default '',
    -- `<idempotency key>#<n>`: a retried create answers the same rows.
    request_key        text unique,
    instance_id        text,
    address            text,
    port               bigint not null,
    login_user         text not null,
    private_key_sealed text,
    public_key         text,
    state              text not null,
    reason             text not null default '',
    created_at         bigint not null,
    ready_at           bigint,
    released_at        bigint,
    charged_hours      bigint,
    updated_at         bigint not null
);
create index machines_state on machines (state);
create index machines_template on machines (template_id, state);

create table machine_events (
    id         bigint generated always as identity primary key,
    machine_id bigint not null references machines (id) on delete cascade,
    at         bigint not null,
    state      text not null,
    reason     text not null
);
create index machine_events_machine on machine_events (machine_id, id);

create table machine_logs (
    id         bigint generated always as identity primary key,
    machine_id bigint not null references machines (id) on delete cascade,
    at         bigint not null,
    line       text not null
);
create index machine_logs_machine on machine_logs (machine_id, id);

-- Live machines per provider at the end of each hour (the last write of the hour wins).
create table fleet_sizes (
    hour     bigint not null,
    provider text not null,
    machines bigint not null,
    primary key (hour, provider)
);
