-- One volume of a live service can be removed (#14, #21): `PATCH /services/{id}` without it
-- and with `purge_volumes`. Its data goes through the same sweep as a deleted service's
-- volumes; `volume_name` names it, '' meaning every volume of the service (a deleted service).
ALTER TABLE volume_deletions ADD COLUMN volume_name TEXT NOT NULL DEFAULT '';
ALTER TABLE volume_deletions DROP CONSTRAINT volume_deletions_pkey;
ALTER TABLE volume_deletions ADD PRIMARY KEY (service_id, node_id, volume_name);
