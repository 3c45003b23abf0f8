-- Operator overrides of a plugin version's per-call limits (JSON); null
-- means the defaults.
alter table plugin_versions add column limits text;
