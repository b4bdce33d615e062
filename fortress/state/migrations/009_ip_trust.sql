-- Fortress database, migration 9: IP trust sessions (POST /auth, DESIGN §6.1). Requests without any
-- key from `ip` are served as `key_id` until `expires_at`. Each proxy worker reads the live rows with
-- its snapshot (every change bumps config_version), so all workers trust an address together and stop
-- within a second of DELETE /auth, the admin's "End" button, or the key being disabled or revoked
-- (the trigger below ends its sessions, whoever changes the key; deleting the key cascades).
CREATE TABLE ip_trust (
    ip         TEXT PRIMARY KEY,                -- one key per address: a new POST /auth replaces it
    key_id     TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL                    -- created_at + [security] ip_trust_ttl_s
);
CREATE INDEX ip_trust_key ON ip_trust(key_id);

CREATE TRIGGER cv_trust_i AFTER INSERT ON ip_trust BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_trust_u AFTER UPDATE ON ip_trust BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_trust_d AFTER DELETE ON ip_trust BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;

CREATE TRIGGER ip_trust_end_with_key AFTER UPDATE OF state ON api_keys
WHEN NEW.state != 'active' BEGIN
    DELETE FROM ip_trust WHERE key_id = NEW.id; END;
