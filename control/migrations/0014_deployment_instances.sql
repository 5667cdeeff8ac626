-- Replicas (#15): a deployment runs `services.replicas` containers, each an instance placed on
-- a compute node (several may share one). Teardown, the old set's stop, the removal of a
-- failed set and node views read the instances, so every container is found. The
-- deployment's own node_id/container_id/upstream_address stay those of replica 0.
CREATE TABLE deployment_instances (
    deployment_id    UUID NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    -- From 0; the node agent derives the container id from (deployment, replica).
    replica          INTEGER NOT NULL CHECK (replica >= 0),
    node_id          UUID NOT NULL REFERENCES nodes(id),
    -- Set once the container is healthy.
    container_id     TEXT,
    upstream_address TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment_id, replica)
);
CREATE INDEX deployment_instances_node ON deployment_instances (node_id);

-- Every container placed before replicas is replica 0 of its deployment.
INSERT INTO deployment_instances (deployment_id, replica, node_id, container_id, upstream_address)
SELECT id, 0, node_id, container_id, upstream_address FROM deployments WHERE node_id IS NOT NULL;
