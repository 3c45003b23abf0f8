-- Remote commands: commands, command groups, executions and the SSH host
-- keys trusted on first use.

create table commands (
    id          bigint generated always as identity primary key,
    name        text not null unique,
    description text not null default '',
    mode        text not null,
    script      text not null,
    -- Parameter definitions as JSON.
    params      text not null default '[]',
    created_at  bigint not null,
    updated_at  bigint not null
);

create table command_groups (
    id          bigint generated always as identity primary key,
    name        text not null unique,
    description text not null default '',
    created_at  bigint not null,
    updated_at  bigint not null
);

create table command_group_steps (
    group_id   bigint not null references command_groups (id) on delete cascade,
    position   bigint not null,
    command_id bigint not null references commands (id) on delete restrict,
    primary key (group_id, position)
);
create index command_group_steps_command on command_group_steps (command_id);

-- Credentials of ad-hoc hosts are never stored: an execution interrupted by a
-- restart is marked failed, not resumed.
create table executions (
    id           bigint generated always as identity primary key,
    title        text not null,
    state        text not null,
    command_id   bigint references commands (id) on delete set null,
    group_id     bigint references command_groups (id) on delete set null,
    -- The resolved steps and parameter values as JSON.
    steps        text not null,
    params       text not null,
    forks        bigint not null,
    timeout_secs bigint not null,
    created_by   text not null,
    created_at   bigint not null,
    finished_at  bigint,
    -- Which DCP process runs it, and when it last said so.
    owner        text not null,
    heartbeat_at bigint not null
);
create index executions_state on executions (state, heartbeat_at);

create table execution_hosts (
    execution_id bigint not null references executions (id) on delete cascade,
    position     bigint not null,
    address      text not null,
    port         bigint not null,
    login        text not null,
    state        text not null,
    exit_code    bigint,
    stdout       text not null default '',
    stderr       text not null default '',
    truncated    bigint not null default 0,
    message      text not null default '',
    started_at   bigint,
    finished_at  bigint,
    primary key (execution_id, position)
);

create table ssh_host_keys (
    host          text primary key,
    algorithm     text not null,
    fingerprint   text not null,
    public_key    text not null,
    first_seen_at bigint not null,
    last_seen_at  bigint not null
);
