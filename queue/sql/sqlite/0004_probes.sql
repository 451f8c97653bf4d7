-- The health check proves the database takes writes by committing one small row (GET /health).
CREATE TABLE probes (
    writer TEXT PRIMARY KEY,
    at REAL NOT NULL
);
