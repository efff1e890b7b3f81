-- The origin deletes changes superseded by a later change of the same
-- entity (ReplicationStore::compact_changes): the feed serves an entity's
-- state as it is when read, so only an entity's latest change matters to a
-- follower. This index finds an entity's earlier changes.
CREATE INDEX changes_entity ON changes (kind, tenant, entity, seq);
