-- Fortress database, migration 1. Applied by fortress.state.db.migrate(); never edited after release:
-- later changes go in migrations/NNN_*.sql. Times are UNIX seconds (REAL).
PRAGMA foreign_keys = ON;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- config_version: bumped by the triggers below on every configuration write, whoever writes
-- (CLI, admin). The proxy polls this one row and reloads its snapshot when it changes.
INSERT INTO meta (key, value) VALUES ('config_version', '1');

CREATE TABLE users (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);

CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,            -- the 8-character public id in fk_<id>_<secret>
    user_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    label          TEXT NOT NULL DEFAULT '',
    secret_hash    TEXT NOT NULL,               -- hex SHA-256 of the secret; the secret is never stored
    state          TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled', 'revoked')),
    scope          TEXT NOT NULL DEFAULT 'user' CHECK (scope IN ('user', 'admin')),
    models         TEXT NOT NULL DEFAULT '',    -- comma-separated glob allow-list; '' = all models
    rate_count     INTEGER,                     -- requests per rate_window_s; NULL = default from settings
    rate_window_s  INTEGER,
    token_count    INTEGER,                     -- prompt+completion tokens per token_window_s
    token_window_s INTEGER,
    max_concurrent INTEGER,
    max_num_ctx    INTEGER,                     -- caps that clamp options.num_ctx / num_predict / keep_alive
    max_num_predict INTEGER,
    max_keep_alive_s INTEGER,
    expires_at     REAL,
    created_at     REAL NOT NULL,
    revoked_at     REAL
);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE backends (
    name           TEXT PRIMARY KEY,
    url            TEXT NOT NULL,
    type           TEXT NOT NULL DEFAULT 'ollama' CHECK (type IN ('ollama', 'openai')),
    weight         INTEGER NOT NULL DEFAULT 1,
    models         TEXT NOT NULL DEFAULT '',    -- for openai type: comma-separated served models
    credential_enc BLOB,                        -- Fernet-encrypted; the key lives outside the database
    max_concurrent INTEGER NOT NULL DEFAULT 0,
    ca_bundle      TEXT NOT NULL DEFAULT '',
    enabled        INTEGER NOT NULL DEFAULT 1,
    created_at     REAL NOT NULL
);

-- Policy overrides from the admin; a row here wins over config.toml. value is JSON.
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE admins (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,                -- scrypt, see fortress/passwords.py
    role          TEXT NOT NULL DEFAULT 'admin' CHECK (role IN ('admin', 'viewer')),
    created_at    REAL NOT NULL,
    last_login_at REAL
);

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY,
    ts     REAL NOT NULL,
    actor  TEXT NOT NULL,                       -- admin name, or 'cli'
    ip     TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL,                       -- e.g. key.create, key.revoke, backend.add
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''             -- never a secret
);
CREATE INDEX audit_ts ON audit(ts);

-- One row per proxied request, written in batches by the proxy's usage writer.
CREATE TABLE usage (
    id                INTEGER PRIMARY KEY,
    ts                REAL NOT NULL,            -- request start
    request_id        TEXT NOT NULL,
    key_id            TEXT,
    user_name         TEXT,
    client_ip         TEXT NOT NULL DEFAULT '',
    method            TEXT NOT NULL,
    path              TEXT NOT NULL,
    model             TEXT,
    backend           TEXT,
    status            INTEGER NOT NULL,
    ttfb_ms           REAL,                     -- first response byte to the client
    duration_ms       REAL NOT NULL,
    bytes_in          INTEGER NOT NULL DEFAULT 0,
    bytes_out         INTEGER NOT NULL DEFAULT 0,
    prompt_eval_count INTEGER,
    eval_count        INTEGER,
    stream            INTEGER NOT NULL DEFAULT 0,
    error             TEXT                      -- short cause for failures (never a secret)
);
CREATE INDEX usage_ts ON usage(ts);
CREATE INDEX usage_key_ts ON usage(key_id, ts);

-- Hourly roll-up kept next to raw rows, updated in the same transaction as each batch, so charts
-- never scan raw usage.
CREATE TABLE usage_hourly (
    hour              INTEGER NOT NULL,         -- floor(ts / 3600)
    user_name         TEXT NOT NULL DEFAULT '',
    key_id            TEXT NOT NULL DEFAULT '',
    model             TEXT NOT NULL DEFAULT '',
    backend           TEXT NOT NULL DEFAULT '',
    status            INTEGER NOT NULL,
    requests          INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    ttfb_ms_sum       REAL NOT NULL DEFAULT 0,
    duration_ms_sum   REAL NOT NULL DEFAULT 0,
    bytes_out         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, user_name, key_id, model, backend, status)
);

-- Live figures each proxy worker writes about once a second, for the admin dashboard.
CREATE TABLE proxy_stats (
    worker      TEXT PRIMARY KEY,               -- host:pid
    ts          REAL NOT NULL,
    in_flight   INTEGER NOT NULL,
    requests    INTEGER NOT NULL,               -- cumulative since start
    errors      INTEGER NOT NULL,               -- cumulative 5xx + relay failures
    connections INTEGER NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}'      -- JSON: backend health, per-key window fill
);

CREATE TRIGGER cv_users_i AFTER INSERT ON users BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_users_d AFTER DELETE ON users BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_keys_i AFTER INSERT ON api_keys BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_keys_u AFTER UPDATE ON api_keys BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_keys_d AFTER DELETE ON api_keys BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_backends_i AFTER INSERT ON backends BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_backends_u AFTER UPDATE ON backends BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_backends_d AFTER DELETE ON backends BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_settings_i AFTER INSERT ON settings BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_settings_u AFTER UPDATE ON settings BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_settings_d AFTER DELETE ON settings BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
