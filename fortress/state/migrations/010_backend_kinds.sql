-- Fortress database, migration 10: a backend's type is any registered kind (fortress/backends/), checked
-- by the code that writes it (repo.check_backend_type asks the registry), not by a list fixed here, so a
-- new kind needs no schema change. SQLite cannot drop a CHECK in place: the table is rebuilt as it was
-- without it, rows kept, and its config_version triggers (dropped with the old table) created again.
CREATE TABLE backends_new (
    name           TEXT PRIMARY KEY,
    url            TEXT NOT NULL,
    type           TEXT NOT NULL DEFAULT 'ollama',
    weight         INTEGER NOT NULL DEFAULT 1,
    models         TEXT NOT NULL DEFAULT '',    -- for kinds with configured models: comma-separated
    credential_enc BLOB,                        -- Fernet-encrypted; the key lives outside the database
    max_concurrent INTEGER NOT NULL DEFAULT 0,
    ca_bundle      TEXT NOT NULL DEFAULT '',
    enabled        INTEGER NOT NULL DEFAULT 1,
    created_at     REAL NOT NULL
);
INSERT INTO backends_new (name, url, type, weight, models, credential_enc, max_concurrent, ca_bundle, enabled,
                          created_at)
    SELECT name, url, type, weight, models, credential_enc, max_concurrent, ca_bundle, enabled, created_at
    FROM backends;
DROP TABLE backends;
ALTER TABLE backends_new RENAME TO backends;

CREATE TRIGGER cv_backends_i AFTER INSERT ON backends BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_backends_u AFTER UPDATE ON backends BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_backends_d AFTER DELETE ON backends BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
