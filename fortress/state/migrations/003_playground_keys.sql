-- Migration 2: each admin account's playground key. The admin process keeps the full key, encrypted
-- with the secret box (the key file lives outside the database), so the playground can call the proxy
-- like any client. The key itself is an ordinary api_keys row; deleting it (or its user) drops this row.
CREATE TABLE playground_keys (
    admin_name TEXT PRIMARY KEY REFERENCES admins(name) ON DELETE CASCADE,
    key_id     TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    secret_enc BLOB NOT NULL,                   -- Fernet-encrypted full key fk_<id>_<secret>
    created_at REAL NOT NULL
);
