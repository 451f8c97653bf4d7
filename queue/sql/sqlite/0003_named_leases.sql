-- Named leases: at most one holder per name at a time, until it lets go or stops renewing
-- (the one Slack bot of a workspace holds `slack:<team id>`). `data` is a small JSON object the
-- holder keeps with it (the bot's event cursor), handed to whoever holds the lease next.
CREATE TABLE named_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    data TEXT
);
