-- A task's version moves on every change a reader can see (its state,
-- command, nodes, steps), so an event stream finds out whether anything
-- changed with one cheap read instead of re-reading the whole task; the
-- version is in the database, so it also tells about changes another
-- replica made.
alter table tasks add column version bigint not null default 0;
