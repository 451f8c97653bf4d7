-- Which credential acted, kept beside who the client said it was (`created_by`, `by`): a client token
-- may write any name there, but the queue writes this one ('admin secret', or 'client token NAME (ID)').
ALTER TABLE tasks ADD COLUMN created_via TEXT;
-- The credential of the latest change, copied onto its event by the triggers; null for the queue's
-- own changes and a worker's (its machine, which its token is bound to, is already the event's `by`).
ALTER TABLE tasks ADD COLUMN changed_via TEXT;
ALTER TABLE events ADD COLUMN via TEXT;
ALTER TABLE asks ADD COLUMN answered_via TEXT;
ALTER TABLE messages ADD COLUMN created_via TEXT;

DROP TRIGGER tasks_created;
CREATE TRIGGER tasks_created AFTER INSERT ON tasks
BEGIN
    INSERT INTO events (task_id, from_status, to_status, by, at, note, via)
    VALUES (new.id, NULL, new.status, new.changed_by, new.updated_at, new.change_note, new.changed_via);
END;

DROP TRIGGER tasks_transition;
CREATE TRIGGER tasks_transition AFTER UPDATE OF status ON tasks
WHEN old.status IS NOT new.status
BEGIN
    INSERT INTO events (task_id, from_status, to_status, by, at, note, via)
    VALUES (new.id, old.status, new.status, new.changed_by, new.updated_at, new.change_note, new.changed_via);
END;

DROP TRIGGER asks_opened;
CREATE TRIGGER asks_opened AFTER INSERT ON asks
BEGIN
    UPDATE tasks SET status = 'waiting', changed_by = new.opened_by, changed_via = NULL,
                     change_note = 'asked: ' || new.title, updated_at = new.created_at
    WHERE id = new.task_id AND status = 'in_progress';
    INSERT INTO events (task_id, from_status, to_status, by, at, note, ask_id)
    SELECT new.task_id, status, status, new.opened_by, new.created_at,
           'ask ' || new.id || ' (' || new.kind || '): ' || new.title, new.id
    FROM tasks WHERE id = new.task_id;
END;

DROP TRIGGER asks_settled;
CREATE TRIGGER asks_settled AFTER UPDATE OF status ON asks
WHEN old.status = 'open' AND new.status != 'open'
BEGIN
    UPDATE tasks SET status = 'in_progress', changed_by = coalesce(new.answered_by, 'queue'),
                     changed_via = new.answered_via,
                     change_note = 'ask ' || new.id || ' ' || new.status, updated_at = new.answered_at
    WHERE id = new.task_id AND status = 'waiting'
      AND NOT EXISTS (SELECT 1 FROM asks WHERE task_id = new.task_id AND status = 'open');
    INSERT INTO events (task_id, from_status, to_status, by, at, note, ask_id, via)
    SELECT new.task_id, status, status, coalesce(new.answered_by, 'queue'), new.answered_at,
           CASE WHEN new.status = 'answered'
                THEN 'ask ' || new.id || ' answered ' || new.answer || coalesce(': ' || new.note, '')
                ELSE 'ask ' || new.id || ' expired: nobody answered in time, so it was rejected' END, new.id,
           new.answered_via
    FROM tasks WHERE id = new.task_id;
END;
