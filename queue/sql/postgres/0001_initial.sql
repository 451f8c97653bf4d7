-- Tasks, their audit trail, machine liveness, and the indexes that keep a claim as cheap at
-- 50k pending as at 50. The same shape as the SQLite schema; times are epoch seconds.

CREATE TABLE tasks (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- "C" collation: short-id lookups are a range scan (id >= prefix AND id < prefix || 'g'),
    -- which only holds under byte order.
    id text COLLATE "C" NOT NULL UNIQUE,
    type text NOT NULL,
    status text NOT NULL,
    priority integer NOT NULL,
    payload text NOT NULL,
    target_machine text,
    preferred_machine text,
    agent text,
    lock text,
    lock_per_machine boolean NOT NULL DEFAULT false,
    created_by text,
    assigned_to text,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    safe_to_retry boolean NOT NULL DEFAULT false,
    lease text,
    lease_expires_at double precision,
    progress text,
    result text,
    notes text,
    changed_by text,
    change_note text,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision
) WITH (fillfactor = 90);
-- fillfactor leaves room on each page so heartbeats (no indexed column changes) stay HOT updates.

-- One B-tree range per (type, pin, agent) the claimer may take. The three are one key (names hold
-- no spaces) so the claim's "key = ANY(...)" is always the index condition, whatever the planner's
-- statistics say; with three columns it sometimes filtered a 50k backlog row by row instead.
CREATE INDEX tasks_claim ON tasks (
    (type || ' ' || coalesce(target_machine, '') || ' ' || coalesce(agent, '')), priority DESC, seq
) WHERE status = 'pending';

-- The database, not a check-then-act, keeps a lock from being held twice: a named lock once in
-- the fleet, a cwd lock once per machine. A claim that races another for the same lock fails on
-- this index and is retried (it then sees the holder and skips the task).
CREATE UNIQUE INDEX tasks_held_lock ON tasks (
    lock, lock_per_machine, (CASE WHEN lock_per_machine THEN assigned_to ELSE '' END)
) WHERE status IN ('claimed', 'in_progress') AND lock IS NOT NULL;

-- Running tasks by a column heartbeats never change, so a heartbeat stays a HOT update.
CREATE INDEX tasks_active ON tasks (seq) WHERE status IN ('claimed', 'in_progress');
CREATE INDEX tasks_attention ON tasks (status, seq) WHERE status IN ('needs_human', 'failed');

-- Event ids come from this sequence. CACHE 1 (the default) matters: the feed's horizon reads the
-- sequence's last value as "every id up to here has been handed out" (see PostgresStore).
CREATE SEQUENCE event_ids CACHE 1;

CREATE TABLE events (
    id bigint PRIMARY KEY DEFAULT nextval('event_ids'),
    task_id text COLLATE "C" NOT NULL,
    from_status text,
    to_status text NOT NULL,
    by text,
    at double precision NOT NULL,
    note text
);
ALTER SEQUENCE event_ids OWNED BY events.id;
CREATE INDEX events_task ON events (task_id, id);

-- Transitions are recorded by triggers so each store write stays one statement. The trigger runs
-- after the task row is written, so the transaction already has its xid when it takes an event id.
CREATE FUNCTION record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO events (task_id, from_status, to_status, by, at, note)
        VALUES (NEW.id, NULL, NEW.status, NEW.changed_by, NEW.updated_at, NEW.change_note);
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO events (task_id, from_status, to_status, by, at, note)
        VALUES (NEW.id, OLD.status, NEW.status, NEW.changed_by, NEW.updated_at, NEW.change_note);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_created AFTER INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION record_transition();
CREATE TRIGGER tasks_transition AFTER UPDATE OF status ON tasks FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION record_transition();

-- Counts of tasks removed by `da prune`, so per-machine totals survive pruning.
CREATE TABLE pruned_counts (
    machine text NOT NULL,
    agent text NOT NULL,
    status text NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (machine, agent, status)
);

-- Who polled lately, shared by every replica; each replica writes what it saw every few
-- seconds in one statement rather than a row update per claim.
CREATE TABLE machines (
    name text PRIMARY KEY,
    seen_at double precision NOT NULL,
    capabilities text[] NOT NULL DEFAULT '{}',
    agents text[] NOT NULL DEFAULT '{}'
);
