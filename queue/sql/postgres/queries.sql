-- insert_task --
-- Create a pending task; the trigger records its first event.
INSERT INTO tasks (id, type, status, priority, payload, target_machine, preferred_machine, agent,
                   lock, checkout, created_by, created_via, max_attempts, notes, changed_by, changed_via, change_note,
                   created_at, updated_at)
VALUES (:id, :type, 'pending', :priority, :payload, :target_machine, :preferred_machine, :agent,
        :lock, :checkout, :created_by, :created_via, :max_attempts, :notes, :created_by, :created_via, :notes,
        :now, :now)
RETURNING *;

-- claim_task --
-- Atomically hand the best pending task this worker may take to it (see Store.claim). Each
-- (type, pin, agent) key the worker takes is one range of tasks_claim, already in claim order, so
-- the statement reads the head of each range (never the rest of a long backlog) and keeps the
-- best. SKIP LOCKED lets concurrent claimers on any replica pass over a head another is taking;
-- the tasks_held_lock and tasks_held_checkout indexes refuse a lock a concurrent claim took a moment earlier.
WITH candidate AS (
    SELECT head.seq
    FROM unnest(:keys::text[]) AS wanted(key)
    CROSS JOIN LATERAL (
        SELECT t.seq, t.priority FROM tasks AS t
        WHERE (t.type || ' ' || coalesce(t.target_machine, '') || ' ' || coalesce(t.agent, '')) = wanted.key
          AND t.status = 'pending'
          AND (t.preferred_machine IS NULL
               OR t.preferred_machine = ANY(:names::text[])
               OR t.created_at <= :overflow_before::float8)
          AND (t.lock IS NULL OR NOT EXISTS (
                SELECT 1 FROM tasks AS holder
                WHERE holder.lock = t.lock AND holder.status IN ('claimed', 'in_progress', 'waiting')))
          AND (t.checkout IS NULL OR NOT EXISTS (
                SELECT 1 FROM tasks AS holder
                WHERE holder.checkout = t.checkout AND holder.status IN ('claimed', 'in_progress', 'waiting')
                  AND holder.assigned_to = ANY(:names::text[])))
        ORDER BY t.priority DESC, t.seq
        LIMIT 1
        FOR UPDATE OF t SKIP LOCKED) AS head
    ORDER BY head.priority DESC, head.seq
    LIMIT 1)
UPDATE tasks
SET status = 'claimed', assigned_to = :machine, lease = :lease, lease_expires_at = :expires,
    attempts = attempts + 1,
    safe_to_retry = tasks.type = ANY(:retry_safe::text[]),
    progress = NULL, changed_by = :machine, changed_via = NULL, change_note = NULL, updated_at = :now
FROM candidate
WHERE tasks.seq = candidate.seq
RETURNING tasks.*;

-- release_task --
-- Hand back a claim whose worker went away before receiving it; the attempt does not count.
-- Here and in the three statements below, :machine is a worker token's machine (null for the admin
-- secret), so a token only ever acts on its own machine's tasks.
UPDATE tasks
SET status = 'pending', lease = NULL, lease_expires_at = NULL, assigned_to = NULL, attempts = attempts - 1,
    changed_by = 'queue', changed_via = NULL, change_note = 'claim released: the worker disconnected before receiving it',
    updated_at = :now
WHERE id = :id AND lease = :lease AND status = 'claimed'
  AND assigned_to = coalesce(:machine, assigned_to)
RETURNING *;

-- quarantine_task --
-- A task whose stored payload cannot be read back goes to a person, never to a worker (it could not
-- be answered to one, and would be claimed and reaped forever); a claim it got on the way does not
-- count as an attempt. The stored payload is kept as it is for whoever repairs it.
UPDATE tasks
SET status = 'needs_human', attempts = CASE WHEN status = 'claimed' THEN attempts - 1 ELSE attempts END,
    lease = NULL, lease_expires_at = NULL, assigned_to = NULL, progress = NULL, notes = :notes, result = :result,
    finished_at = :now, updated_at = :now, changed_by = 'queue', changed_via = NULL, change_note = :notes
WHERE id = :id AND status IN ('pending', 'claimed')
RETURNING *;

-- start_task --
-- The worker began running it. A checkout lock moves to the folder as the worker resolved it (:checkout), so
-- every spelling of one folder is one lock; tasks_held_checkout refuses the move while another task on the
-- machine holds that folder.
UPDATE tasks
SET status = 'in_progress', started_at = :now, updated_at = :now, changed_by = assigned_to, changed_via = NULL, change_note = NULL,
    checkout = CASE WHEN checkout IS NOT NULL AND :checkout::text IS NOT NULL THEN :checkout ELSE checkout END
WHERE id = :id AND lease = :lease AND status = 'claimed'
  AND assigned_to = coalesce(:machine, assigned_to)
RETURNING *;

-- lock_holder --
-- The task that holds a folder on a machine, for the note of a start refused because of it.
SELECT id FROM tasks
WHERE checkout = :checkout AND assigned_to = :machine AND status IN ('claimed', 'in_progress', 'waiting')
  AND id != :id
LIMIT 1;

-- defer_task --
-- A start refused because another task on the machine holds its folder: the claim goes back (not counted),
-- keyed by the resolved folder, so claims on that machine pass over it until the folder is free.
UPDATE tasks
SET status = 'pending', lease = NULL, lease_expires_at = NULL, assigned_to = NULL, attempts = attempts - 1,
    checkout = :checkout, changed_by = 'queue', changed_via = NULL, change_note = :note, updated_at = :now
WHERE id = :id AND lease = :lease AND status = 'claimed' AND checkout IS NOT NULL
RETURNING *;

-- heartbeat --
-- Extend the lease of a running task and record its latest progress line.
UPDATE tasks
SET lease_expires_at = :expires, progress = coalesce(:progress, progress), updated_at = :now
WHERE id = :id AND lease = :lease AND status IN ('claimed', 'in_progress', 'waiting')
  AND assigned_to = coalesce(:machine, assigned_to)
RETURNING *;

-- report_task --
-- Record the outcome of a task whose lease the worker still holds.
UPDATE tasks
SET status = :status, result = :result, notes = coalesce(:notes, notes), lease_expires_at = NULL,
    finished_at = :now, updated_at = :now, changed_by = assigned_to, changed_via = NULL, change_note = :notes
WHERE id = :id AND lease = :lease AND status IN ('claimed', 'in_progress', 'waiting')
  AND assigned_to = coalesce(:machine, assigned_to)
RETURNING *;

-- reap_expired --
-- Settle expired leases in one statement: back to pending when the task never started (so it
-- cannot have run) or its type is safe to run twice with attempts left; else to a human. Every
-- replica runs it; SKIP LOCKED and the status filter settle each lease exactly once. It also marks
-- when leases were last settled by anyone (see shift_leases).
WITH marked AS (UPDATE lease_watch SET settled_at = greatest(settled_at, :now::float8) WHERE id = 1),
expired AS (
    SELECT seq, status = 'claimed' OR (safe_to_retry AND attempts < max_attempts) AS again,
           status = 'claimed' AS never_started
    FROM tasks
    WHERE status IN ('claimed', 'in_progress', 'waiting') AND lease_expires_at < :now::float8
    FOR UPDATE SKIP LOCKED)
UPDATE tasks
SET status = CASE WHEN again THEN 'pending' ELSE 'needs_human' END,
    lease = CASE WHEN again THEN NULL ELSE lease END,
    assigned_to = CASE WHEN again THEN NULL ELSE assigned_to END,
    notes = CASE WHEN again THEN notes
                 ELSE 'worker ' || coalesce(assigned_to, '?') || ' was lost (lease expired) while running this task' END,
    result = CASE WHEN again THEN result
                  ELSE json_build_object('error', 'worker lost', 'action',
                      CASE WHEN safe_to_retry THEN 'it failed ' || attempts || ' times; check the worker, then retry'
                           ELSE 'check whether it ran on ' || coalesce(assigned_to, '?')
                                || ', then resolve it as done or retry it' END)::text END,
    finished_at = CASE WHEN again THEN NULL ELSE :now::float8 END,
    -- A claim that expired before it started never ran, so it does not count as an attempt.
    attempts = CASE WHEN never_started THEN attempts - 1 ELSE attempts END,
    lease_expires_at = NULL, progress = NULL, updated_at = :now, changed_by = 'reaper', changed_via = NULL,
    change_note = CASE WHEN never_started
                       THEN 'claim by ' || coalesce(assigned_to, '?') || ' expired before it started'
                       ELSE 'worker ' || coalesce(assigned_to, '?') || ' lost (lease expired)' END
FROM expired
WHERE tasks.seq = expired.seq
RETURNING tasks.*;

-- extend_leases --
-- On start: running tasks get a fresh lease, since their workers could not heartbeat while
-- this replica was down.
UPDATE tasks SET lease_expires_at = greatest(coalesce(lease_expires_at, 0), :expires)
WHERE status IN ('claimed', 'in_progress', 'waiting')
RETURNING id;

-- shift_leases --
-- The service lost time it could not watch (its loop stalled, its clock jumped, the database did
-- not answer): running leases get that time back, so only time the queue saw counts against them.
-- Only time no replica watched: the gap since any replica last settled leases (beyond one reap
-- period) caps it, and the row lock makes replicas coming back together give it back once.
WITH watch AS (SELECT settled_at FROM lease_watch WHERE id = 1 FOR UPDATE),
gap AS (SELECT least(:seconds::float8, :now::float8 - settled_at - :period::float8) AS seconds FROM watch),
marked AS (UPDATE lease_watch SET settled_at = greatest(settled_at, :now::float8) WHERE id = 1)
UPDATE tasks SET lease_expires_at = lease_expires_at + gap.seconds
FROM gap
WHERE status IN ('claimed', 'in_progress', 'waiting') AND lease_expires_at IS NOT NULL AND gap.seconds > :tolerance::float8
RETURNING id;

-- record_late_report --
-- A worker reports on a task the reaper already handed to a person (its lease, not re-run since):
-- keep the outcome on the task for whoever resolves it; the status stays needs_human.
UPDATE tasks
SET result = (coalesce(result, '{}')::jsonb
              || jsonb_build_object('late_report', :late::jsonb, 'action', :action::text))::text,
    notes = :notes, updated_at = :now
WHERE id = :id AND lease = :lease AND status = 'needs_human' AND changed_by = 'reaper'
RETURNING *;

-- resolve_task --
-- A person settles a task that needs them; pending re-queues the same payload.
UPDATE tasks
SET status = :status, notes = coalesce(:notes, notes), changed_by = :by, changed_via = :via, change_note = :notes, updated_at = :now,
    lease = CASE WHEN :status = 'pending' THEN NULL ELSE lease END,
    assigned_to = CASE WHEN :status = 'pending' THEN NULL ELSE assigned_to END,
    attempts = CASE WHEN :status = 'pending' THEN 0 ELSE attempts END,
    progress = CASE WHEN :status = 'pending' THEN NULL ELSE progress END,
    finished_at = CASE WHEN :status = 'pending' THEN NULL ELSE :now::float8 END
WHERE id = :id AND status IN ('needs_human', 'failed')
RETURNING *;

-- resolve_many --
-- Bulk form of resolve_task over every task in one status.
UPDATE tasks
SET status = :status, notes = coalesce(:notes, notes), changed_by = :by, changed_via = :via, change_note = :notes, updated_at = :now,
    lease = CASE WHEN :status = 'pending' THEN NULL ELSE lease END,
    assigned_to = CASE WHEN :status = 'pending' THEN NULL ELSE assigned_to END,
    attempts = CASE WHEN :status = 'pending' THEN 0 ELSE attempts END,
    progress = CASE WHEN :status = 'pending' THEN NULL ELSE progress END,
    finished_at = CASE WHEN :status = 'pending' THEN NULL ELSE :now::float8 END
WHERE status = :from_status
RETURNING id;

-- count_status --
-- How many tasks a bulk resolve would change (only needs_human and failed are resolvable).
SELECT count(*) AS n FROM tasks WHERE status IN ('needs_human', 'failed') AND status = :status;

-- cancel_task --
-- Stop a task that has not finished; a running one's worker learns it from its held heartbeat.
UPDATE tasks
SET status = 'cancelled', finished_at = :now, updated_at = :now, changed_by = :by, changed_via = :via, change_note = :notes,
    notes = coalesce(:notes, notes)
WHERE id = :id AND status IN ('pending', 'claimed', 'in_progress', 'waiting')
RETURNING *;

-- get_task --
-- One task by full id.
SELECT * FROM tasks WHERE id = :id;

-- find_by_prefix --
-- Tasks whose id starts with a short id; two rows are enough to detect ambiguity.
SELECT * FROM tasks WHERE id >= :prefix AND id < :prefix::text || 'g' ORDER BY id LIMIT 2;

-- list_tasks --
-- Newest first, filtered; :before is the seq cursor of the previous page.
SELECT * FROM tasks
WHERE (:status::text[] IS NULL OR status = ANY(:status::text[]))
  AND (:type::text IS NULL OR type = :type)
  AND (:machine::text IS NULL OR assigned_to = :machine OR target_machine = :machine)
  AND (:before::bigint IS NULL OR seq < :before)
ORDER BY seq DESC
LIMIT :limit;

-- list_attention --
-- list_tasks for needs_human/failed only, served by their partial index.
SELECT * FROM tasks
WHERE status IN ('needs_human', 'failed') AND status = ANY(:status::text[])
  AND (:type::text IS NULL OR type = :type)
  AND (:machine::text IS NULL OR assigned_to = :machine OR target_machine = :machine)
  AND (:before::bigint IS NULL OR seq < :before)
ORDER BY seq DESC
LIMIT :limit;

-- machine_counts --
-- Per machine: active, done and failed counts, including tasks pruned since.
SELECT machine, sum(active)::bigint AS active, sum(done)::bigint AS done, sum(failed)::bigint AS failed FROM (
    SELECT assigned_to AS machine, count(*) FILTER (WHERE status IN ('claimed', 'in_progress', 'waiting')) AS active,
           count(*) FILTER (WHERE status = 'done') AS done, count(*) FILTER (WHERE status = 'failed') AS failed
    FROM tasks WHERE assigned_to IS NOT NULL GROUP BY assigned_to
    UNION ALL
    SELECT machine, 0, sum(CASE WHEN status = 'done' THEN n ELSE 0 END),
           sum(CASE WHEN status = 'failed' THEN n ELSE 0 END)
    FROM pruned_counts GROUP BY machine) AS counted
GROUP BY machine;

-- machine_agents --
-- Per machine and agent: how many tasks ran (pruned ones included), for "most used agent".
SELECT machine, agent, sum(n)::bigint AS n FROM (
    SELECT assigned_to AS machine, agent, count(*) AS n
    FROM tasks WHERE assigned_to IS NOT NULL AND agent IS NOT NULL GROUP BY assigned_to, agent
    UNION ALL
    SELECT machine, agent, n FROM pruned_counts WHERE agent != '') AS used
GROUP BY machine, agent;

-- prune_count --
-- Fold the counts of the finished tasks about to be pruned into pruned_counts.
INSERT INTO pruned_counts (machine, agent, status, n)
SELECT assigned_to, coalesce(agent, ''), status, count(*) FROM tasks
WHERE status IN ('done', 'failed', 'needs_human', 'cancelled') AND finished_at < :before AND assigned_to IS NOT NULL
GROUP BY assigned_to, coalesce(agent, ''), status
ON CONFLICT (machine, agent, status) DO UPDATE SET n = pruned_counts.n + excluded.n;

-- prune_events --
-- Events of the finished tasks being pruned (ids come from a sequence, so none is ever reused).
DELETE FROM events WHERE task_id IN (
    SELECT id FROM tasks WHERE status IN ('done', 'failed', 'needs_human', 'cancelled') AND finished_at < :before);

-- prune_tasks --
-- The finished tasks themselves.
DELETE FROM tasks WHERE status IN ('done', 'failed', 'needs_human', 'cancelled') AND finished_at < :before
RETURNING id;

-- status_counts --
-- Tasks by status and type, for /metrics.
SELECT status, type, count(*) AS n FROM tasks GROUP BY status, type;

-- events_after --
-- The feed after an event id, oldest first, never past the horizon (see PostgresStore.events_after).
SELECT * FROM events WHERE id > :after AND id <= :horizon ORDER BY id LIMIT :limit;

-- event_ids_handed_out --
-- The highest event id handed out so far, committed or not (sequences are not transactional).
SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS id FROM event_ids;

-- running_writers --
-- Transactions that hold an xid right now; one of them may still commit an event id.
SELECT coalesce(array_agg(x::text::bigint), '{}') AS xids FROM pg_snapshot_xip(pg_current_snapshot()) AS x;

-- still_running --
-- Which of those transactions have not finished yet.
SELECT coalesce(array_agg(x), '{}') AS xids FROM unnest(:xids::bigint[]) AS x
WHERE pg_xact_status(x::text::xid8) = 'in progress';

-- task_events --
-- One task's audit trail.
SELECT * FROM events WHERE task_id = :task_id ORDER BY id;

-- record_sightings --
-- Fold the machines this replica saw into the shared table; later sightings win. Capabilities and
-- agents arrive comma-joined (names cannot hold commas); empty means the sighting did not say.
INSERT INTO machines AS m (name, seen_at, capabilities, agents)
SELECT name, seen_at, coalesce(string_to_array(nullif(capabilities, ''), ','), '{}'),
       coalesce(string_to_array(nullif(agents, ''), ','), '{}')
FROM unnest(:names::text[], :seen_at::float8[], :capabilities::text[], :agents::text[])
    AS seen(name, seen_at, capabilities, agents)
ON CONFLICT (name) DO UPDATE
SET seen_at = greatest(m.seen_at, excluded.seen_at),
    capabilities = CASE WHEN excluded.capabilities = '{}' OR excluded.seen_at < m.seen_at THEN m.capabilities
                        ELSE excluded.capabilities END,
    agents = CASE WHEN excluded.capabilities = '{}' OR excluded.seen_at < m.seen_at THEN m.agents
                  ELSE excluded.agents END;

-- sightings --
-- Every machine any replica saw, with when and what it said it can do.
SELECT name, seen_at, capabilities, agents FROM machines;

-- notify --
-- Wake claims and event followers parked on other replicas.
SELECT pg_notify(:channel, :payload);

-- create_schema_table --
-- Which migrations ran (PostgreSQL has no user_version).
CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);

-- schema_version --
-- The schema this database is at, 0 when new.
SELECT coalesce(max(version), 0) AS version FROM schema_version;

-- set_schema_version --
-- Record a migration as applied.
INSERT INTO schema_version (version) VALUES (:version);

-- migration_lock --
-- Replicas that start together on an empty database migrate one at a time.
SELECT pg_advisory_lock(:key);

-- migration_unlock --
-- Let the next replica check the schema.
SELECT pg_advisory_unlock(:key);

-- server_version --
-- For `da doctor`: which PostgreSQL answers.
SELECT current_setting('server_version') AS version;

-- schema_table_exists --
-- For `da doctor`: whether any replica has migrated this database yet.
SELECT to_regclass('schema_version') IS NOT NULL AS migrated;

-- count_replicas --
-- Replicas connected to this database (each holds one bus connection), this one included.
SELECT count(*) AS n FROM pg_stat_activity
WHERE application_name = :bus_name AND datname = current_database();

-- acquire_named_lease --
-- Take a free or expired named lease, or renew one this holder has; no row when another holds it.
-- One upsert decides: concurrent takers on any replica serialise on the row's primary key.
INSERT INTO named_leases (name, holder, acquired_at, expires_at, data)
VALUES (:lease_name, :holder, :now::float8, :now::float8 + :ttl::float8, :data)
ON CONFLICT (name) DO UPDATE SET
    holder = excluded.holder,
    expires_at = excluded.expires_at,
    data = coalesce(excluded.data, named_leases.data),
    acquired_at = CASE WHEN named_leases.holder = excluded.holder AND named_leases.expires_at > excluded.acquired_at
                       THEN named_leases.acquired_at ELSE excluded.acquired_at END
WHERE named_leases.holder = excluded.holder OR named_leases.expires_at <= excluded.acquired_at
RETURNING *;

-- named_lease --
-- Who holds a named lease, and until when.
SELECT * FROM named_leases WHERE name = :lease_name;

-- release_named_lease --
-- Let go of a named lease this holder has: it runs out now, its data stays for the next holder.
UPDATE named_leases SET expires_at = least(expires_at, :now::float8)
WHERE name = :lease_name AND holder = :holder AND expires_at > :now::float8 RETURNING name;

-- probe --
-- The health check's write: proves the database takes a commit now. One row per replica; rows of
-- replicas that have not probed for a day (restarted under another name) go in the same statement.
WITH forgotten AS (DELETE FROM probes WHERE at < :now::float8 - 86400 AND writer <> :writer)
INSERT INTO probes (writer, at) VALUES (:writer, :now)
ON CONFLICT (writer) DO UPDATE SET at = excluded.at;

-- table_columns --
-- `da migrate`: the columns of one table and their types.
SELECT column_name AS name, data_type AS type FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = :table
ORDER BY ordinal_position;

-- transfer_lock --
-- `da migrate`: nobody else writes while the copy runs (a replica started too early waits).
LOCK TABLE tasks, events, pruned_counts, tokens, asks, messages IN ACCESS EXCLUSIVE MODE;

-- transfer_counts --
-- `da migrate`: what a copy must agree on, read from both databases.
SELECT (SELECT count(*) FROM tasks) AS tasks, (SELECT coalesce(sum(seq), 0) FROM tasks) AS task_seq_sum,
       (SELECT count(*) FROM events) AS events, (SELECT coalesce(max(id), 0) FROM events) AS last_event,
       (SELECT coalesce(sum(id), 0) FROM events) AS event_id_sum,
       (SELECT count(*) FROM pruned_counts) AS pruned_rows, (SELECT coalesce(sum(n), 0) FROM pruned_counts) AS pruned_tasks,
       (SELECT count(*) FROM tokens) AS tokens,
       (SELECT count(*) FROM asks) AS asks, (SELECT count(*) FROM asks WHERE status = 'open') AS open_asks,
       (SELECT count(*) FROM messages) AS messages,
       (SELECT count(*) FROM messages WHERE delivered_at IS NULL) AS undelivered_messages,
       (SELECT coalesce(sum(seq), 0) FROM messages) AS message_seq_sum;

-- transfer_statuses --
-- `da migrate`: tasks per status, read from both databases.
SELECT status, count(*) AS n FROM tasks GROUP BY status ORDER BY status;

-- transfer_quiet --
-- `da migrate`: copied rows keep the events they had; the triggers would invent new ones (and an open ask's
-- would move its task).
ALTER TABLE tasks DISABLE TRIGGER USER;
ALTER TABLE asks DISABLE TRIGGER USER;

-- transfer_loud --
-- `da migrate`: transitions are recorded again from here on.
ALTER TABLE tasks ENABLE TRIGGER USER;
ALTER TABLE asks ENABLE TRIGGER USER;

-- transfer_sequences --
-- `da migrate`: new tasks and events number after the copied ones (ids are never reused).
SELECT setval(pg_get_serial_sequence('tasks', 'seq'), greatest(max(seq), 1), count(*) > 0) FROM tasks
UNION ALL
SELECT setval('event_ids', greatest(max(id), 1), count(*) > 0) FROM events
UNION ALL
SELECT setval(pg_get_serial_sequence('messages', 'seq'), greatest(max(seq), 1), count(*) > 0) FROM messages;

-- insert_token --
-- A new scoped token; nothing when an active token already has this name.
INSERT INTO tokens (id, digest, kind, name, machine, aliases, created_at)
VALUES (:id, :digest, :kind, :token_name, :machine, :aliases, :now)
ON CONFLICT DO NOTHING
RETURNING *;

-- find_token --
-- The token with this digest, revoked or not (the log names a revoked one that is still in use).
SELECT * FROM tokens WHERE digest = :digest;

-- list_tokens --
-- Every token, oldest first.
SELECT * FROM tokens ORDER BY created_at, id;

-- get_token --
-- One token by id.
SELECT * FROM tokens WHERE id = :id;

-- revoke_token --
-- Refuse a token from now on; the row stays for `da token list --all`.
UPDATE tokens SET revoked_at = :now WHERE id = :id AND revoked_at IS NULL
RETURNING *;

-- insert_tasks --
-- Create several pending tasks in one statement (all or none); :tasks is a JSON list of their fields.
INSERT INTO tasks (id, type, status, priority, payload, target_machine, preferred_machine, agent,
                   lock, checkout, created_by, created_via, max_attempts, notes, changed_by, changed_via, change_note,
                   created_at, updated_at)
SELECT n.id, n.type, 'pending', n.priority, n.payload, n.target_machine, n.preferred_machine, n.agent,
       n.lock, n.checkout, n.created_by, n.created_via, n.max_attempts, n.notes, n.created_by, n.created_via, n.notes,
       :now::float8, :now::float8
FROM jsonb_array_elements(:tasks::jsonb) WITH ORDINALITY AS e(item, ord)
CROSS JOIN LATERAL jsonb_to_record(e.item) AS n(
    id text, type text, priority integer, payload text, target_machine text, preferred_machine text,
    agent text, lock text, checkout text, created_by text, created_via text, max_attempts integer, notes text)
ORDER BY e.ord
RETURNING *;
-- open_ask --
-- A worker asks a person about the task it runs (numbered 1, 2, ... per task); nothing when its lease no
-- longer holds the task or the task already has :max_open open asks. The task row is locked first, so two
-- asks of one task are numbered one after the other. The asks_opened trigger makes the task wait and
-- records the event.
WITH held AS (
    SELECT id, assigned_to FROM tasks
    WHERE id = :id AND lease = :lease AND status IN ('in_progress', 'waiting')
      AND assigned_to = coalesce(:machine::text, assigned_to)
    FOR UPDATE)
INSERT INTO asks (task_id, id, kind, title, detail, options, status, opened_by, created_at, expires_at)
SELECT held.id, coalesce((SELECT max(a.id) FROM asks AS a WHERE a.task_id = held.id), 0) + 1, :kind, :title,
       :detail, :options, 'open', held.assigned_to, :now, :expires
FROM held
WHERE (SELECT count(*) FROM asks AS o WHERE o.task_id = held.id AND o.status = 'open') < :max_open
RETURNING *;

-- task_asks --
-- One task's asks, oldest first.
SELECT * FROM asks WHERE task_id = :task_id ORDER BY id;

-- get_ask --
-- One ask of one task.
SELECT * FROM asks WHERE task_id = :task_id AND id = :ask_id;

-- answer_ask --
-- The first answer wins: only an open, unexpired ask of a running task takes it (the asks_settled
-- trigger lets the task run on and records the event).
UPDATE asks SET status = 'answered', answer = :option, note = :note, answered_by = :by, answered_via = :via,
    answered_at = :now
WHERE task_id = :task_id AND id = :ask_id AND status = 'open' AND expires_at > :now
  AND EXISTS (SELECT 1 FROM tasks WHERE id = :task_id AND status IN ('in_progress', 'waiting'))
RETURNING *;

-- expire_asks --
-- Asks nobody answered in time are rejected, recorded as expired; SKIP LOCKED settles each once.
WITH due AS (SELECT task_id, id FROM asks WHERE status = 'open' AND expires_at <= :now FOR UPDATE SKIP LOCKED)
UPDATE asks SET status = 'expired', answered_at = :now
FROM due WHERE asks.task_id = due.task_id AND asks.id = due.id AND asks.status = 'open'
RETURNING asks.*;

-- open_asks --
-- Open asks across the fleet, oldest first.
SELECT * FROM asks WHERE status = 'open' ORDER BY created_at, task_id, id LIMIT :limit;

-- save_progress --
-- Replace a running task's progress record (and its usage so far); no event, the revision counts it.
UPDATE tasks
SET progress_record = :record, progress_rev = progress_rev + 1, usage = coalesce(:usage::text, usage),
    cost_usd = coalesce(:cost_usd::float8, cost_usd), updated_at = :now
WHERE id = :id AND lease = :lease AND status IN ('in_progress', 'waiting')
  AND assigned_to = coalesce(:machine::text, assigned_to)
RETURNING *;

-- record_workspace --
-- A later delivery's facts (pushed, PR URL) merged into a finished task's result, by the machine holding it.
UPDATE tasks
SET result = (coalesce(result, '{}')::jsonb || :facts::jsonb)::text, updated_at = :now
WHERE id = :id AND status IN ('done', 'failed', 'needs_human', 'cancelled')
  AND assigned_to = coalesce(:machine::text, assigned_to)
RETURNING *;

-- record_usage --
-- A finished run's usage, from its report.
UPDATE tasks SET usage = :usage, cost_usd = :cost_usd::float8
WHERE id = :id AND lease = :lease
RETURNING id;

-- add_message --
-- Queue a steering message for a running task; nothing when it is not running or has :max_queued waiting.
INSERT INTO messages (task_id, text, interrupt, created_by, created_via, created_at)
SELECT t.id, :text, :interrupt, :by, :via, :now FROM tasks AS t
WHERE t.id = :id AND t.status IN ('claimed', 'in_progress', 'waiting')
  AND (SELECT count(*) FROM messages AS m WHERE m.task_id = t.id AND m.delivered_at IS NULL) < :max_queued
RETURNING *;

-- take_messages --
-- Hand the worker holding the task its queued messages, once: they are marked delivered as they are read.
UPDATE messages SET delivered_at = :now
WHERE task_id = :id AND delivered_at IS NULL
  AND EXISTS (SELECT 1 FROM tasks WHERE id = :id AND lease = :lease
                                       AND assigned_to = coalesce(:machine::text, assigned_to)
                                       AND status IN ('claimed', 'in_progress', 'waiting'))
RETURNING *;

-- spent_since --
-- What one requester's tasks created since a time have cost, for DA_BUDGET_PER_DAY.
SELECT coalesce(sum(cost_usd), 0) AS spent FROM tasks WHERE created_by = :who AND created_at >= :since;

-- usage_totals --
-- Tokens and cost of every task, for /metrics.
SELECT coalesce(sum((usage::jsonb ->> 'input_tokens')::bigint), 0) AS input_tokens,
       coalesce(sum((usage::jsonb ->> 'output_tokens')::bigint), 0) AS output_tokens,
       coalesce(sum(cost_usd), 0) AS cost_usd
FROM tasks WHERE usage IS NOT NULL;
