-- Draining and removing nodes (#15).

-- Set when an operator drains the node: nothing new is placed on it.
ALTER TABLE nodes ADD COLUMN drained_at TIMESTAMPTZ;

-- A removed node leaves its deployments' history behind without a node; the instances it held
-- go with it (it was drained, or ran none).
ALTER TABLE deployments DROP CONSTRAINT deployments_node_id_fkey,
    ADD CONSTRAINT deployments_node_id_fkey FOREIGN KEY (node_id) REFERENCES nodes(id) ON DELETE SET NULL;
ALTER TABLE deployments DROP CONSTRAINT deployments_build_node_id_fkey,
    ADD CONSTRAINT deployments_build_node_id_fkey FOREIGN KEY (build_node_id) REFERENCES nodes(id) ON DELETE SET NULL;
ALTER TABLE deployment_instances DROP CONSTRAINT deployment_instances_node_id_fkey,
    ADD CONSTRAINT deployment_instances_node_id_fkey FOREIGN KEY (node_id) REFERENCES nodes(id) ON DELETE CASCADE;
