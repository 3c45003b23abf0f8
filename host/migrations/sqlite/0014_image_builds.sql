-- Image projects: a repository of the registry and how its image is made.
create table image_projects (
    id          integer primary key autoincrement,
    repository  text not null unique,
    description text not null default '',
    -- JSON: the Dockerfile source (text, git or form) without secrets
    dockerfile  text not null,
    -- JSON: the deploy media without secrets, or null
    media       text,
    -- Sealed by the vault: the Dockerfile repository's and the media's passwords
    source_secret_sealed text,
    media_secret_sealed  text,
    -- JSON object of ARG values
    build_args  text not null default '{}',
    created_by  text not null,
    created_at  bigint not null,
    updated_at  bigint not null
);

-- Every build of a project. A build runs in the DCP process that owns it,
-- which renews `heartbeat_at`; one whose owner stopped renewing is
-- interrupted, never left building.
create table image_builds (
    id              integer primary key autoincrement,
    project_id      bigint not null references image_projects (id) on delete cascade,
    repository      text not null,
    tag             text not null,
    -- queued, building, pushing, succeeded, failed, cancelled, interrupted
    state           text not null,
    requested_by    text not null,
    idempotency_key text,
    source_revision text,
    media_revision  text,
    digest          text,
    size            bigint,
    message         text not null default '',
    no_cache        integer not null default 0,
    build_args      text not null default '{}',
    log             text not null default '',
    log_bytes       bigint not null default 0,
    -- set when a user cancels; the owning process acts on it
    cancel_requested text,
    owner           text not null,
    heartbeat_at    bigint not null,
    created_at      bigint not null,
    started_at      bigint,
    finished_at     bigint,
    unique (project_id, idempotency_key)
);
create index image_builds_project on image_builds (project_id, id);
create index image_builds_active on image_builds (state, heartbeat_at);
