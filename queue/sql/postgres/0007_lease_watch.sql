-- When any replica last settled leases (its reap, or a give-back of unwatched time). A replica that
-- was paused or cut off gives running leases back only the time nobody watched, not its own gap:
-- while another replica kept reaping, heartbeats were landing there.
CREATE TABLE lease_watch (
    id integer PRIMARY KEY CHECK (id = 1),
    settled_at double precision NOT NULL
);
INSERT INTO lease_watch (id, settled_at) VALUES (1, 0);
