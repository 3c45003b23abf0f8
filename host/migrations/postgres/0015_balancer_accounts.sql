-- A balancer node is a machine DCP reaches over SSH, or a cloud load
-- balancer (Aliyun SLB, …) its plugin drives through the API of a cloud
-- account: `machine_id` or `account_id`, exactly one.

alter table lb_nodes alter column machine_id drop not null;
-- The account whose load balancer (named in the node's settings) the
-- unit's plugin drives through the cloud's API.
alter table lb_nodes add column account_id bigint references cloud_accounts (id) on delete restrict;
alter table lb_nodes add constraint lb_nodes_machine_or_account
    check ((machine_id is null) <> (account_id is null));
create index lb_nodes_account on lb_nodes (account_id);
