-- Supervised agent sessions: a task may wait for a person (status 'waiting' while an ask is open),
-- carries a bounded progress record, queued steering messages and its usage.

-- A waiting task still holds its lock and its lease: the indexes over running tasks include it.
DROP INDEX tasks_held_lock;
CREATE UNIQUE INDEX tasks_held_lock ON tasks (
    lock, lock_per_machine, (CASE WHEN lock_per_machine THEN assigned_to ELSE '' END)
) WHERE status IN ('claimed', 'in_progress', 'waiting') AND lock IS NOT NULL;
DROP INDEX tasks_active_lease;
CREATE INDEX tasks_active_lease ON tasks (lease_expires_at) WHERE status IN ('claimed', 'in_progress', 'waiting');

-- The progress record is replaced whole each time (one row write, not an event per update);
-- progress_rev counts the replacements so a follower can long-poll for the next one.
ALTER TABLE tasks ADD COLUMN progress_record TEXT;
ALTER TABLE tasks ADD COLUMN progress_rev INTEGER NOT NULL DEFAULT 0;
-- Tokens and cost as the agent reported them (JSON), for budgets and /metrics.
ALTER TABLE tasks ADD COLUMN usage TEXT;
ALTER TABLE tasks ADD COLUMN cost_usd REAL;

-- An ask or an answer is an event too (ask_id set); transitions leave it null.
ALTER TABLE events ADD COLUMN ask_id INTEGER;

CREATE TABLE asks (
    task_id TEXT NOT NULL,
    -- 1, 2, ... per task: what people type after the task's short id.
    id INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('permission', 'plan', 'question')),
    title TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    -- JSON: [{"id": ..., "label": ...}]
    options TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered', 'expired')),
    answer TEXT,
    note TEXT,
    answered_by TEXT,
    opened_by TEXT,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    answered_at REAL,
    PRIMARY KEY (task_id, id)
);
CREATE INDEX asks_open ON asks (expires_at) WHERE status = 'open';

-- Steering messages for a running session, handed to its worker once.
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    text TEXT NOT NULL,
    interrupt INTEGER NOT NULL DEFAULT 0,
    created_by TEXT,
    created_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX messages_waiting ON messages (task_id, seq) WHERE delivered_at IS NULL;

-- An ask opened: the task waits for a person (the transition trigger records that), and the ask is an event.
CREATE TRIGGER asks_opened AFTER INSERT ON asks
BEGIN
    UPDATE tasks SET status = 'waiting', changed_by = new.opened_by, change_note = 'asked: ' || new.title,
                     updated_at = new.created_at
    WHERE id = new.task_id AND status = 'in_progress';
    INSERT INTO events (task_id, from_status, to_status, by, at, note, ask_id)
    SELECT new.task_id, status, status, new.opened_by, new.created_at,
           'ask ' || new.id || ' (' || new.kind || '): ' || new.title, new.id
    FROM tasks WHERE id = new.task_id;
END;

-- An ask answered or expired is an event; the last one settled lets the task run on.
CREATE TRIGGER asks_settled AFTER UPDATE OF status ON asks
WHEN old.status = 'open' AND new.status != 'open'
BEGIN
    UPDATE tasks SET status = 'in_progress', changed_by = coalesce(new.answered_by, 'queue'),
                     change_note = 'ask ' || new.id || ' ' || new.status, updated_at = new.answered_at
    WHERE id = new.task_id AND status = 'waiting'
      AND NOT EXISTS (SELECT 1 FROM asks WHERE task_id = new.task_id AND status = 'open');
    INSERT INTO events (task_id, from_status, to_status, by, at, note, ask_id)
    SELECT new.task_id, status, status, coalesce(new.answered_by, 'queue'), new.answered_at,
           CASE WHEN new.status = 'answered'
                THEN 'ask ' || new.id || ' answered ' || new.answer || coalesce(': ' || new.note, '')
                ELSE 'ask ' || new.id || ' expired: nobody answered in time, so it was rejected' END, new.id
    FROM tasks WHERE id = new.task_id;
END;
