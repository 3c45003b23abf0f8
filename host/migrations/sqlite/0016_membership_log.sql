-- The operation log kept each change's whole membership before and after:
-- up to ~100 KB a change at 1000 members, so the store held 110 MB after
-- one 1000-node expand (34 MB since). A change now keeps what it moved
-- (its members added and removed, how many there were before and after)
-- and its place among the changes committed together in its revision
-- (`seq`). Its whole before and after
-- are replayed on demand: from the newest snapshot of the upstream at or
-- below its revision, applying the logged changes in (revision, seq)
-- order. A snapshot is kept once 64 changes that moved members are logged
-- after the newest one, and of every upstream as this runs, so a replay
-- applies at most those and the changes committed with its own. Rows written
-- before keep their stored before and after.
create table upstream_snapshots (
    upstream_id integer not null references upstreams (id) on delete cascade,
    revision    integer not null,
    -- The members at that revision (JSON, as upstreams.backends).
    backends    text not null,
    primary key (upstream_id, revision)
);
insert into upstream_snapshots (upstream_id, revision, backends)
    select id, revision, backends from upstreams;

-- Its place among the changes of its revision's commit (0, 1, …); null
-- when that commit moved no member (the revision stayed).
alter table discovery_changes add column seq integer;
-- The members it added, and re-weighted ones with their new weight (JSON).
alter table discovery_changes add column added text;
-- The members it removed, and re-weighted ones with their old weight (JSON).
alter table discovery_changes add column removed text;
alter table discovery_changes add column members_before integer;
alter table discovery_changes add column members_after integer;
create index discovery_changes_revision on discovery_changes (upstream_id, revision, seq);
