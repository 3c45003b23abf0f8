-- Task templates, the pools' bindings to them, and the durable task engine's
-- state: tasks, the nodes each task works on, and every node × step.

create table task_templates (
    id          integer primary key autoincrement,
    name        text not null unique,
    description text not null default '',
    -- expand, shrink, deploy or adhoc: which of the manual's rules apply.
    purpose     text not null,
    -- The ordered steps as JSON.
    steps       text not null,
    -- Seeded by DCP (OpenDCP's defaults); editable like any other.
    seeded      integer not null default 0,
    created_at  integer not null,
    updated_at  integer not null
);

alter table pools add column expand_template_id integer references task_templates (id) on delete restrict;
alter table pools add column shrink_template_id integer references task_templates (id) on delete restrict;
alter table pools add column deploy_template_id integer references task_templates (id) on delete restrict;

create table tasks (
    id           integer primary key autoincrement,
    kind         text not null,
    pool_id      integer not null references pools (id) on delete restrict,
    template_id  integer not null references task_templates (id) on delete restrict,
    -- The template's steps as they were when the task was made: editing the
    -- template later does not change a task under way.
    steps        text not null,
    -- Run-time overrides (tag, template, discovery) as JSON; kept for resume.
    overrides    text not null,
    batch_size   integer not null,
    state        text not null,
    reason       text not null default '',
    -- pause, resume, retry or cancel, asked through the API and carried out
    -- by whichever process holds the lease.
    command      text,
    lease_owner  text,
    lease_until  integer,
    created_by   text not null,
    created_at   integer not null,
    started_at   integer,
    finished_at  integer,
    updated_at   integer not null
);
create index tasks_pool on tasks (pool_id, state);
create index tasks_claim on tasks (state, lease_until);

create table task_nodes (
    task_id    integer not null references tasks (id) on delete cascade,
    idx        integer not null,
    node_id    integer,
    machine_id integer,
    address    text not null default '',
    state      text not null,
    primary key (task_id, idx)
);

create table task_steps (
    task_id     integer not null references tasks (id) on delete cascade,
    node_idx    integer not null,
    step_idx    integer not null,
    state       text not null,
    attempts    integer not null default 0,
    -- When a failed attempt may run again (retry delay).
    not_before  integer,
    started_at  integer,
    finished_at integer,
    output      text not null default '',
    error       text not null default '',
    primary key (task_id, node_idx, step_idx)
);

-- OpenDCP's default templates, so a new pool can expand, shrink and deploy
-- at once. Machine initialisation is part of create_vm (the machine
-- template's init group); register/unregister join once a pool has a
-- load-balancer binding.
insert into task_templates (name, description, purpose, steps, seeded, created_at, updated_at)
values
  ('expand', 'Create machines, then start the service on them', 'expand',
   '[{"name":"create_vm","timeout_secs":1800},{"name":"start_service","retries":2,"retry_delay_secs":5}]',
   1, 1795305600000, 1795305600000),
  ('shrink', 'Stop the service, then return the machines', 'shrink',
   '[{"name":"stop_service","retries":2,"retry_delay_secs":5},{"name":"return_vm","timeout_secs":1800}]',
   1, 1795305600000, 1795305600000),
  ('upgrade', 'Run the new image on every node, batch by batch', 'deploy',
   '[{"name":"start_service","retries":2,"retry_delay_secs":5}]',
   1, 1795305600000, 1795305600000);
