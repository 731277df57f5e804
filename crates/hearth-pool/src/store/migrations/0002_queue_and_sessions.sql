-- The job queue, shared by every pool process: a node on any process leases any job, a
-- customer waiting on any process is told when its job finishes (NOTIFY hearth_jobs).

CREATE SEQUENCE job_places;

CREATE TABLE jobs (
    id text PRIMARY KEY,
    model text NOT NULL,
    state text NOT NULL CHECK (state IN ('queued', 'leased', 'paying', 'finished')),
    -- The node holding (or being paid for) the job, its lease, and when that runs out.
    node_id text,
    lease_id text,
    lease_expires_unix_ms bigint,
    leased_unix_ms bigint NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Nodes that may not take it again (they answered it, or were struck for it).
    exclude text[] NOT NULL DEFAULT '{}',
    -- Only established nodes may take it (another node's answer is being checked).
    established_only boolean NOT NULL DEFAULT false,
    -- Handed back, retried or under verification: offered before new jobs.
    front boolean NOT NULL DEFAULT false,
    -- Its place in line among the queued (a new one each time it is queued).
    place bigint NOT NULL DEFAULT nextval('job_places'),
    deadline_unix_ms bigint NOT NULL,
    -- The task, the pool's units, answers, streamed text, outcome (JSON).
    body text NOT NULL,
    -- Raised by every change: a change is written only over the version it read.
    version bigint NOT NULL DEFAULT 0,
    CHECK ((state IN ('leased', 'paying')) = (node_id IS NOT NULL))
);

-- A claim walks the line in order, skipping rows other processes hold.
CREATE INDEX jobs_line ON jobs (front DESC, place) WHERE state = 'queued';
-- The reaper finds expired leases; a node that comes back finds what it held.
CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_unix_ms) WHERE state IN ('leased', 'paying');
CREATE INDEX jobs_by_node ON jobs (node_id) WHERE state = 'leased';
-- Jobs whose customer is gone are purged by deadline.
CREATE INDEX jobs_deadline ON jobs (deadline_unix_ms);

-- A lease: up to p_limit queued jobs that p_node may run, in line order, each to one node
-- however many processes claim at once. A function so that its plan can be fixed: a queue's
-- statistics are always out of date, and with them the planner would sort every queued row
-- for each claim instead of walking jobs_line. (PL/pgSQL keeps the plan for the session.)
CREATE FUNCTION claim_jobs(
    p_models text[], p_node text, p_established boolean, p_limit integer, p_lease text,
    p_now bigint, p_expires bigint)
RETURNS SETOF jobs
LANGUAGE plpgsql
SET enable_sort = off
SET enable_bitmapscan = off
SET enable_seqscan = off
AS $$
BEGIN
    RETURN QUERY
    WITH picked AS (
        SELECT id FROM jobs
        WHERE state = 'queued' AND model = ANY(p_models) AND NOT (p_node = ANY(exclude))
          AND (p_established OR NOT established_only)
        ORDER BY front DESC, place
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED)
    UPDATE jobs AS j SET state = 'leased', node_id = p_node, lease_id = p_lease,
        lease_expires_unix_ms = p_expires, leased_unix_ms = p_now, version = j.version + 1
    FROM picked WHERE j.id = picked.id
    RETURNING j.*;
END
$$;

-- Each node's registration (key, profile, session MAC key) as JSON, so that any process
-- checks its requests.
CREATE TABLE node_sessions (
    node_id text PRIMARY KEY,
    body text NOT NULL
);
