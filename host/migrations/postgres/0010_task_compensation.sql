-- The undoing of a step that did not finish (a cancelled or failed
-- create_vm's machines, released or handed to the pool): null while there
-- is nothing to undo, then pending, running, succeeded or failed. Stored
-- with the step so a driver that takes the task over after a crash undoes
-- what is left, under the step's idempotency key.
alter table task_steps add column compensation text;
alter table task_steps add column compensation_output text not null default '';
