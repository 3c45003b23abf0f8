-- Timestamps are integer milliseconds since the Unix epoch (UTC) on both
-- backends, so lease and expiry arithmetic is the same SQL everywhere.

create table users (
    id            integer primary key autoincrement,
    username      text not null unique,
    password_hash text not null,
    role          text not null default 'admin',
    created_at    integer not null,
    updated_at    integer not null
);

create table sessions (
    id_hash      text primary key,
    user_id      integer not null references users (id) on delete cascade,
    csrf_token   text not null,
    created_at   integer not null,
    expires_at   integer not null
);
create index sessions_expires_at on sessions (expires_at);

create table api_tokens (
    id           integer primary key autoincrement,
    user_id      integer not null references users (id) on delete cascade,
    name         text not null,
    prefix       text not null,
    token_hash   text not null unique,
    created_at   integer not null,
    last_used_at integer
);
create index api_tokens_user_id on api_tokens (user_id);

create table clusters (
    id            integer primary key autoincrement,
    name          text not null unique,
    description   text not null default '',
    business_line text not null default '',
    created_at    integer not null,
    updated_at    integer not null
);
