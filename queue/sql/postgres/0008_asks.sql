-- Supervised agent sessions: a task may wait for a person (status 'waiting' while an ask is open),
-- carries a bounded progress record, queued steering messages and its usage.

-- A waiting task still holds its lock and its lease: the indexes over running tasks include it.
DROP INDEX tasks_held_lock;
CREATE UNIQUE INDEX tasks_held_lock ON tasks (
    lock, lock_per_machine, (CASE WHEN lock_per_machine THEN assigned_to ELSE '' END)
) WHERE status IN ('claimed', 'in_progress', 'waiting') AND lock IS NOT NULL;
DROP INDEX tasks_active;
CREATE INDEX tasks_active ON tasks (seq) WHERE status IN ('claimed', 'in_progress', 'waiting');

-- The progress record is replaced whole each time (one row write, not an event per update);
-- progress_rev counts the replacements so a follower can long-poll for the next one.
ALTER TABLE tasks ADD COLUMN progress_record text;
ALTER TABLE tasks ADD COLUMN progress_rev integer NOT NULL DEFAULT 0;
-- Tokens and cost as the agent reported them (JSON), for budgets and /metrics.
ALTER TABLE tasks ADD COLUMN usage text;
ALTER TABLE tasks ADD COLUMN cost_usd double precision;

-- An ask or an answer is an event too (ask_id set); transitions leave it null.
ALTER TABLE events ADD COLUMN ask_id integer;

CREATE TABLE asks (
    task_id text COLLATE "C" NOT NULL,
    -- 1, 2, ... per task: what people type after the task's short id.
    id integer NOT NULL,
    kind text NOT NULL CHECK (kind IN ('permission', 'plan', 'question')),
    title text NOT NULL,
    detail text NOT NULL DEFAULT '',
    -- JSON: [{"id": ..., "label": ...}]
    options text NOT NULL,
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered', 'expired')),
    answer text,
    note text,
    answered_by text,
    opened_by text,
    created_at double precision NOT NULL,
    expires_at double precision NOT NULL,
    answered_at double precision,
    PRIMARY KEY (task_id, id)
);
CREATE INDEX asks_open ON asks (expires_at) WHERE status = 'open';

-- Steering messages for a running session, handed to its worker once.
CREATE TABLE messages (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id text COLLATE "C" NOT NULL,
    text text NOT NULL,
    interrupt boolean NOT NULL DEFAULT false,
    created_by text,
    created_at double precision NOT NULL,
    delivered_at double precision
);
CREATE INDEX messages_waiting ON messages (task_id, seq) WHERE delivered_at IS NULL;

-- An ask opened: the task waits for a person (the transition trigger records that), and the ask is an
-- event. An ask settled (answered or expired) is an event; the last one settled lets the task run on.
-- Both run after the ask row is written, so the transaction has its xid before it takes an event id.
CREATE FUNCTION record_ask() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE tasks SET status = 'waiting', changed_by = NEW.opened_by, change_note = 'asked: ' || NEW.title,
                         updated_at = NEW.created_at
        WHERE id = NEW.task_id AND status = 'in_progress';
        INSERT INTO events (task_id, from_status, to_status, by, at, note, ask_id)
        SELECT NEW.task_id, status, status, NEW.opened_by, NEW.created_at,
               'ask ' || NEW.id || ' (' || NEW.kind || '): ' || NEW.title, NEW.id
        FROM tasks WHERE id = NEW.task_id;
    ELSE
        UPDATE tasks SET status = 'in_progress', changed_by = coalesce(NEW.answered_by, 'queue'),
                         change_note = 'ask ' || NEW.id || ' ' || NEW.status, updated_at = NEW.answered_at
        WHERE id = NEW.task_id AND status = 'waiting'
          AND NOT EXISTS (SELECT 1 FROM asks WHERE task_id = NEW.task_id AND status = 'open');
        INSERT INTO events (task_id, from_status, to_status, by, at, note, ask_id)
        SELECT NEW.task_id, status, status, coalesce(NEW.answered_by, 'queue'), NEW.answered_at,
               CASE WHEN NEW.status = 'answered'
                    THEN 'ask ' || NEW.id || ' answered ' || NEW.answer || coalesce(': ' || NEW.note, '')
                    ELSE 'ask ' || NEW.id || ' expired: nobody answered in time, so it was rejected' END, NEW.id
        FROM tasks WHERE id = NEW.task_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER asks_opened AFTER INSERT ON asks FOR EACH ROW EXECUTE FUNCTION record_ask();
CREATE TRIGGER asks_settled AFTER UPDATE OF status ON asks FOR EACH ROW
    WHEN (OLD.status = 'open' AND NEW.status != 'open') EXECUTE FUNCTION record_ask();
