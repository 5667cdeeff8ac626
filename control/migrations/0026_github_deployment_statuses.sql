-- Issue #17: a preview's progress sent back to GitHub as deployment statuses when the project
-- has a GitHub token (sealed like its other secrets; never shown again).
ALTER TABLE projects ADD COLUMN github_token_enc BYTEA;

-- One row per pull request of a project with a token: the head the preview deploys, GitHub's
-- deployment of that head once created, and the last state GitHub accepted. `closed` = the
-- pull request was closed (the environment is gone): `inactive` is sent, then the row goes.
-- `delivery_id` names the webhook delivery that asked for this head or the close: its log
-- entry shows what GitHub was told (webhook_delivery_log.github_status).
CREATE TABLE github_deployments (
    project_id      UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    number          INTEGER NOT NULL CHECK (number > 0),
    environment_id  UUID REFERENCES environments(id) ON DELETE SET NULL,
    repository      TEXT NOT NULL,
    head_sha        TEXT NOT NULL,
    delivery_id     TEXT,
    deployment_id   BIGINT,
    reported        TEXT CHECK (reported IN ('in_progress', 'success', 'failure', 'inactive')),
    closed          BOOLEAN NOT NULL DEFAULT false,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, number)
);

ALTER TABLE webhook_delivery_log ADD COLUMN github_status TEXT;
