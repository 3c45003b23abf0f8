-- Plugin versions. Grants are stored per version (bound to its content
-- digest), so a new binary never inherits old grants silently.
create table plugin_versions (
    id           bigint generated always as identity primary key,
    name         text not null,
    version      text not null,
    world        text not null,
    description  text not null default '',
    digest       text not null,
    size_bytes   bigint not null,
    manifest     text not null,
    requested    text not null,
    granted      text,
    status       text not null,
    builtin      bigint not null default 0,
    last_error   text,
    created_at   bigint not null,
    updated_at   bigint not null,
    activated_at bigint,
    unique (name, version)
);
create index plugin_versions_name on plugin_versions (name, status);
-- At most one active version per plugin, whatever races the API sees.
create unique index plugin_versions_one_active on plugin_versions (name) where status = 'active';
