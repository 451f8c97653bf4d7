-- Counts of tasks removed by `da prune`, so per-machine totals survive pruning.
CREATE TABLE pruned_counts (
    machine TEXT NOT NULL,
    agent TEXT NOT NULL,
    status TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (machine, agent, status)
);
-- No index on finished_at: pruning runs rarely and may scan, while every report would pay for one.
