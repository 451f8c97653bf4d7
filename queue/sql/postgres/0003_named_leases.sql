-- Named leases: at most one holder per name at a time, until it lets go or stops renewing
-- (the one Slack bot of a workspace holds `slack:<team id>`). `data` is a small JSON object the
-- holder keeps with it (the bot's event cursor), handed to whoever holds the lease next.
CREATE TABLE named_leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    acquired_at double precision NOT NULL,
    expires_at double precision NOT NULL,
    data text
);
