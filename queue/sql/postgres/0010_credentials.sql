-- Which credential acted, kept beside who the client said it was (`created_by`, `by`): a client token
-- may write any name there, but the queue writes this one ('admin secret', or 'client token NAME (ID)').
ALTER TABLE tasks ADD COLUMN created_via text;
-- The credential of the latest change, copied onto its event by the triggers; null for the queue's
-- own changes and a worker's (its machine, which its token is bound to, is already the event's `by`).
ALTER TABLE tasks ADD COLUMN changed_via text;
ALTER TABLE events ADD COLUMN via text;
ALTER TABLE asks ADD COLUMN answered_via text;
ALTER TABLE messages ADD COLUMN created_via text;

CREATE OR REPLACE FUNCTION record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO events (task_id, from_status, to_status, by, at, note, via)
        VALUES (NEW.id, NULL, NEW.status, NEW.changed_by, NEW.updated_at, NEW.change_note, NEW.changed_via);
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO events (task_id, from_status, to_status, by, at, note, via)
        VALUES (NEW.id, OLD.status, NEW.status, NEW.changed_by, NEW.updated_at, NEW.change_note, NEW.changed_via);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION record_ask() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE tasks SET status = 'waiting', changed_by = NEW.opened_by, changed_via = NULL,
                         change_note = 'asked: ' || NEW.title, updated_at = NEW.created_at
        WHERE id = NEW.task_id AND status = 'in_progress';
        INSERT INTO events (task_id, from_status, to_status, by, at, note, ask_id)
        SELECT NEW.task_id, status, status, NEW.opened_by, NEW.created_at,
               'ask ' || NEW.id || ' (' || NEW.kind || '): ' || NEW.title, NEW.id
        FROM tasks WHERE id = NEW.task_id;
    ELSE
        UPDATE tasks SET status = 'in_progress', changed_by = coalesce(NEW.answered_by, 'queue'),
                         changed_via = NEW.answered_via,
                         change_note = 'ask ' || NEW.id || ' ' || NEW.status, updated_at = NEW.answered_at
        WHERE id = NEW.task_id AND status = 'waiting'
          AND NOT EXISTS (SELECT 1 FROM asks WHERE task_id = NEW.task_id AND status = 'open');
        INSERT INTO events (task_id, from_status, to_status, by, at, note, ask_id, via)
        SELECT NEW.task_id, status, status, coalesce(NEW.answered_by, 'queue'), NEW.answered_at,
               CASE WHEN NEW.status = 'answered'
                    THEN 'ask ' || NEW.id || ' answered ' || NEW.answer || coalesce(': ' || NEW.note, '')
                    ELSE 'ask ' || NEW.id || ' expired: nobody answered in time, so it was rejected' END, NEW.id,
               NEW.answered_via
        FROM tasks WHERE id = NEW.task_id;
    END IF;
    RETURN NULL;
END $$;
