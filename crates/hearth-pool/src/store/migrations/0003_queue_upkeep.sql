-- A claim walks the line from its head, and every job leased leaves a dead entry there until
-- the table is vacuumed: claims slow down with each job leased since the last vacuum (a
-- claim read 4 index pages right after a vacuum and 114 after some thousands of leases).
-- Vacuum the queue after every few thousand changes, not after a fifth of the table, and
-- without pausing; the server's autovacuum_naptime bounds how often (see the README).
ALTER TABLE jobs SET (
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 2000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_analyze_threshold = 100000,
    autovacuum_vacuum_cost_delay = 0
);

-- Only queued and finished jobs are purged by deadline: leased ones need no entry (one index
-- write less for each lease and each payment).
DROP INDEX jobs_deadline;
CREATE INDEX jobs_deadline ON jobs (deadline_unix_ms) WHERE state IN ('queued', 'finished');

-- Several nodes' claims at once (one process's nodes asking together): lock up to p_limit
-- queued jobs that any of them may run, in line order; the caller shares them out and leases
-- them in the same transaction. A function for the same fixed plan as claim_jobs.
CREATE FUNCTION pick_jobs(p_models text[], p_established boolean, p_limit integer)
RETURNS SETOF jobs
LANGUAGE plpgsql
SET enable_sort = off
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
BEGIN
    RETURN QUERY
    SELECT * FROM jobs
    WHERE state = 'queued' AND model = ANY(p_models) AND (p_established OR NOT established_only)
    ORDER BY front DESC, place
    LIMIT p_limit
    FOR UPDATE SKIP LOCKED;
END
$$;
