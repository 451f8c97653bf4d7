-- Tasks, their audit trail, and the indexes that keep a claim as cheap at 50k pending as at 50.

CREATE TABLE tasks (
    -- Plain rowids: AUTOINCREMENT costs a page write per insert, and pruning only ever
    -- removes old rows, so ids are never reused.
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload TEXT NOT NULL,
    target_machine TEXT,
    preferred_machine TEXT,
    agent TEXT,
    lock TEXT,
    lock_per_machine INTEGER NOT NULL DEFAULT 0,
    created_by TEXT,
    assigned_to TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    safe_to_retry INTEGER NOT NULL DEFAULT 0,
    lease TEXT,
    lease_expires_at REAL,
    progress TEXT,
    result TEXT,
    notes TEXT,
    changed_by TEXT,
    change_note TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);

-- One B-tree range per (type, pin, agent) the claimer may take, already in claim order,
-- so rows pinned elsewhere or of types it lacks are never visited.
CREATE INDEX tasks_claim ON tasks (
    type, coalesce(target_machine, ''), coalesce(agent, ''), priority DESC, seq
) WHERE status = 'pending';

CREATE INDEX tasks_active_lock ON tasks (lock) WHERE status IN ('claimed', 'in_progress') AND lock IS NOT NULL;
CREATE INDEX tasks_active_lease ON tasks (lease_expires_at) WHERE status IN ('claimed', 'in_progress');
-- Only the statuses people review need an index; a per-status index over every transition
-- cost 12% of each write, and other listings find their rows near the newest end.
CREATE INDEX tasks_attention ON tasks (status, seq) WHERE status IN ('needs_human', 'failed');

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    by TEXT,
    at REAL NOT NULL,
    note TEXT
);
CREATE INDEX events_task ON events (task_id, id);

-- Transitions are recorded by triggers so each store write stays one statement.
CREATE TRIGGER tasks_created AFTER INSERT ON tasks
BEGIN
    INSERT INTO events (task_id, from_status, to_status, by, at, note)
    VALUES (new.id, NULL, new.status, new.changed_by, new.updated_at, new.change_note);
END;

CREATE TRIGGER tasks_transition AFTER UPDATE OF status ON tasks
WHEN old.status IS NOT new.status
BEGIN
    INSERT INTO events (task_id, from_status, to_status, by, at, note)
    VALUES (new.id, old.status, new.status, new.changed_by, new.updated_at, new.change_note);
END;
