-- One server, one machine: a live machine's identity is its address in one
-- canonical form (an IP address as Rust prints it, a host name in lower
-- case) with its port. Two live machines on one identity would run every
-- command twice on one server, so the pair is unique among live machines;
-- a released machine gives its identity up.
alter table machines add column identity text;

-- Databases from before this rule may hold duplicates already. The upgrade
-- must not fail on them, nor release or rewrite a machine someone uses:
-- the oldest live machine of each address and port keeps the identity, the
-- later ones get none (so they stay outside the index) and a line in their
-- log saying which machine they duplicate. Addresses written before this
-- version are compared in lower case, which is canonical for host names
-- and IPv4 and for IPv6 as DCP's UI and API examples write it.
update machines set identity = lower(address)
where address is not null
  and not (
    state <> 'deleted'
    and exists (
      select 1 from machines older
      where older.state <> 'deleted'
        and lower(older.address) = lower(machines.address)
        and older.port = machines.port
        and older.id < machines.id
    )
  );

insert into machine_logs (machine_id, at, line)
select m.id, (extract(epoch from now()) * 1000)::bigint,
       'this machine has the same address and port as machine '
       || (select min(o.id) from machines o
           where o.identity = lower(m.address) and o.port = m.port and o.state <> 'deleted')
       || ', so DCP reaches one server through both: release one of them'
from machines m
where m.state <> 'deleted' and m.address is not null and m.identity is null;

create unique index machines_identity on machines (identity, port) where state <> 'deleted';
