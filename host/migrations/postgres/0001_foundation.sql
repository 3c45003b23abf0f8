-- Timestamps are integer milliseconds since the Unix epoch (UTC) on both
-- backends, so lease and expiry arithmetic is the same SQL everywhere.

create table users (
    id            bigint generated always as identity primary key,
    username      text not null unique,
    password_hash text not null,
    role          text not null default 'admin',
    created_at    bigint not null,
    updated_at    bigint not null
);

create table sessions (
    id_hash      text primary key,
    user_id      bigint not null references users (id) on delete cascade,
    csrf_token   text not null,
    created_at   bigint not null,
    expires_at   bigint not null
);
create index sessions_expires_at on sessions (expires_at);

create table api_tokens (
    id           bigint generated always as identity primary key,
    user_id      bigint not null references users (id) on delete cascade,
    name         text not null,
    prefix       text not null,
    token_hash   text not null unique,
    created_at   bigint not null,
    last_used_at bigint
);
create index api_tokens_user_id on api_tokens (user_id);

create table clusters (
    id            bigint generated always as identity primary key,
    name          text not null unique,
    description   text not null default '',
    business_line text not null default '',
    created_at    bigint not null,
    updated_at    bigint not null
);
