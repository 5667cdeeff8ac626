-- Persistent volumes (#14): a service's volumes (name, mount path, size in bytes) as the API
-- validated them. A volume lives on the node of the service's serving deployment; the next
-- deployment is placed there and starts once the old container stopped.
ALTER TABLE services ADD COLUMN volumes JSONB NOT NULL DEFAULT '[]';

-- Volumes of deleted services, kept on their node until `delete_after` (the grace period),
-- then removed by control's volume sweeper (or at once with a purge).
CREATE TABLE volume_deletions (
    service_id   UUID NOT NULL,
    node_id      UUID NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    delete_after TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (service_id, node_id)
);
CREATE INDEX volume_deletions_due ON volume_deletions (delete_after);
