-- Every container gets a CPU limit (issue #13): services created before the API gave one by
-- default (cpu_millis 0 = unlimited) get the default of 500 millis, which the scheduler then
-- also reserves for them.
UPDATE services
SET resources = jsonb_set(resources, '{cpu_millis}', '500'::jsonb)
WHERE COALESCE((resources->>'cpu_millis')::bigint, 0) = 0;
