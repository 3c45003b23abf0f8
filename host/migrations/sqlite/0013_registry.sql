-- The image registry's retention rules, one per repository. A clean-up
-- deletes the tags its rule does not keep: a tag is kept when it is among
-- the `keep_last` newest (by the image's build time) or was built less
-- than `keep_days` days ago. A rule has at least one of the two.
create table registry_retention (
    repository text primary key,
    keep_last  integer,
    keep_days  integer,
    updated_at bigint not null,
    updated_by text not null
);

-- Every clean-up: who ran it, the tags it deleted, and what the registry's
-- garbage collection freed.
create table registry_cleanups (
    id            integer primary key autoincrement,
    actor         text not null,
    -- running, succeeded, failed
    state         text not null,
    -- JSON: [{"repository", "tag", "digest"}]
    deleted       text not null default '[]',
    blobs_deleted bigint not null default 0,
    freed_bytes   bigint not null default 0,
    message       text not null default '',
    started_at    bigint not null,
    finished_at   bigint
);
