-- Entrypoint and arguments replacing the image's (empty = the image's own).
ALTER TABLE services ADD COLUMN command TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE services ADD COLUMN args TEXT[] NOT NULL DEFAULT '{}';
