-- A task's folder lock (its checkout, once per machine) and its named lock (once in the fleet) are
-- two columns: a task that names its own lock still holds its checkout, so two tasks in one checkout
-- never run at once on a machine whatever locks they name.
ALTER TABLE tasks ADD COLUMN checkout TEXT;
UPDATE tasks SET checkout = lock, lock = NULL WHERE lock_per_machine;
DROP INDEX tasks_held_lock;
ALTER TABLE tasks DROP COLUMN lock_per_machine;
CREATE UNIQUE INDEX tasks_held_lock ON tasks (lock)
WHERE status IN ('claimed', 'in_progress', 'waiting') AND lock IS NOT NULL;
CREATE UNIQUE INDEX tasks_held_checkout ON tasks (checkout, assigned_to)
WHERE status IN ('claimed', 'in_progress', 'waiting') AND checkout IS NOT NULL;
