-- Issue #17: when a project's SSH deploy key (migration 0023) was made, shown beside its public
-- half so a user can tell a rotated key from the one pasted into the git host.
ALTER TABLE projects ADD COLUMN deploy_key_created_at TIMESTAMPTZ;
