-- Counts of tasks removed by `da prune`, so per-machine totals survive pruning.
CREATE TABLE pruned_counts (
    machine TEXT NOT NULL,
    agent TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (machine, agent, status)
);
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE status IN ('done', 'failed', 'needs_human', 'cancelled');
