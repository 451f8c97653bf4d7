-- The database, not only the claim's check, keeps a lock from being held twice: a named lock once in
-- the fleet, a cwd lock once per machine. Starting a task moves its cwd lock to the folder the worker
-- resolved (so every spelling of one folder is one lock), and this index refuses that move while
-- another task on the machine holds the folder. It replaces tasks_active_lock, which it also serves.
CREATE UNIQUE INDEX tasks_held_lock ON tasks (
    lock, lock_per_machine, (CASE WHEN lock_per_machine THEN assigned_to ELSE '' END)
) WHERE status IN ('claimed', 'in_progress') AND lock IS NOT NULL;
DROP INDEX tasks_active_lock;
