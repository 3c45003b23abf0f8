-- What a rollback deploys. `previous_image` is the image the pools ran
-- before the last finished deploy changed it; `unfinished_image` is the
-- image of a deploy that ended without reaching every node (null once a
-- deploy finishes): while it is set, a rollback restores `image`.
alter table services add column previous_image text;
alter table services add column unfinished_image text;

-- The image a node's container was last started from by DCP (null before
-- its first start): the service page shows the tag of every node.
alter table nodes add column image text;
