-- Issue #17: a repository webhook per project, pull-request previews, and the credentials a
-- project's private repositories are fetched with.

-- The project's repository webhook (one secret per project, sealed like a service's), its
-- preview settings (previews are copies of the template environment, at most max_previews at
-- once, pull requests from forks only when allowed), and its git credentials: a token sent to
-- buildd as HTTPS basic auth (sealed; never shown again).
ALTER TABLE projects
    ADD COLUMN webhook_secret_enc BYTEA,
    ADD COLUMN previews_enabled BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN preview_template_id UUID REFERENCES environments(id) ON DELETE SET NULL,
    ADD COLUMN max_previews INTEGER NOT NULL DEFAULT 5 CHECK (max_previews BETWEEN 0 AND 100),
    ADD COLUMN previews_from_forks BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN git_username TEXT,
    ADD COLUMN git_token_enc BYTEA,
    ADD CHECK ((git_username IS NULL) = (git_token_enc IS NULL));

-- A preview environment: the pull request it shows and the head it was last deployed at.
ALTER TABLE environments
    ADD COLUMN preview_number INTEGER CHECK (preview_number > 0),
    ADD COLUMN preview_head_sha TEXT;
CREATE UNIQUE INDEX environments_preview ON environments (project_id, preview_number)
    WHERE preview_number IS NOT NULL;

-- Deliveries to a project's webhook are deduplicated and replay-checked like a service's.
ALTER TABLE webhook_deliveries
    ALTER COLUMN service_id DROP NOT NULL,
    ADD COLUMN project_id UUID REFERENCES projects(id) ON DELETE CASCADE,
    ADD CHECK ((service_id IS NULL) <> (project_id IS NULL));
ALTER TABLE webhook_bodies
    DROP CONSTRAINT webhook_bodies_pkey,
    ALTER COLUMN service_id DROP NOT NULL,
    ADD COLUMN project_id UUID REFERENCES projects(id) ON DELETE CASCADE,
    ADD CHECK ((service_id IS NULL) <> (project_id IS NULL));
CREATE UNIQUE INDEX webhook_bodies_service ON webhook_bodies (service_id, body_sha256)
    WHERE service_id IS NOT NULL;
CREATE UNIQUE INDEX webhook_bodies_project ON webhook_bodies (project_id, body_sha256)
    WHERE project_id IS NOT NULL;

-- A closed pull request's preview torn down is logged as `removed`.
ALTER TABLE webhook_delivery_log DROP CONSTRAINT webhook_delivery_log_outcome_check,
    ADD CONSTRAINT webhook_delivery_log_outcome_check
    CHECK (outcome IN ('deployed', 'ignored', 'refused', 'removed'));
