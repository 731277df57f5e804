-- The pool's durable state: receipt chains and balances, node records, customer keys and
-- usage, the pool's own settings. Amounts are micro-credits.

-- One row per node that was ever paid: where its chain ends and what it is owed. A payment
-- locks its node's row, so two pool processes paying one node take turns.
CREATE TABLE node_chains (
    node_id text PRIMARY KEY,
    next_sequence bigint NOT NULL DEFAULT 0 CHECK (next_sequence >= 0),
    head_hash text NOT NULL DEFAULT '',
    balance_micro_credits bigint NOT NULL DEFAULT 0 CHECK (balance_micro_credits >= 0)
);

-- Every receipt issued, as signed. A chain cannot fork (one receipt per node and sequence)
-- and a job is paid to a node at most once.
CREATE TABLE receipts (
    node_id text NOT NULL REFERENCES node_chains (node_id),
    sequence bigint NOT NULL CHECK (sequence >= 0),
    job_id text NOT NULL,
    micro_credits bigint NOT NULL CHECK (micro_credits >= 0),
    issued_unix_ms bigint NOT NULL,
    signed text NOT NULL,
    PRIMARY KEY (node_id, sequence),
    UNIQUE (job_id, node_id)
);

-- Each node key's record (verified jobs, strikes, quarantine) as JSON.
CREATE TABLE node_records (
    node_id text PRIMARY KEY,
    record text NOT NULL
);

-- Customers' API keys (hashes only) as JSON.
CREATE TABLE customer_keys (
    id text PRIMARY KEY,
    key_hash text NOT NULL UNIQUE,
    body text NOT NULL
);

-- What each key used and was charged, per model.
CREATE TABLE customer_usage (
    key_id text NOT NULL,
    model text NOT NULL,
    jobs bigint NOT NULL,
    units bigint NOT NULL,
    charged_micro_credits bigint NOT NULL,
    PRIMARY KEY (key_id, model)
);

-- The pool's own values (its receipt-signing key).
CREATE TABLE pool_settings (
    name text PRIMARY KEY,
    value bytea NOT NULL
);
