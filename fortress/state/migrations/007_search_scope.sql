-- Fortress database, migration 7: the `search` key scope (issue 13): an ordinary key that may also use
-- /api/web_search and /api/web_fetch. SQLite cannot change a CHECK constraint in place, so api_keys is
-- rebuilt as SQLite's "other kinds of table schema changes" describes, inside the migration's one
-- transaction. Foreign keys stay on there, so dropping the old table deletes the playground_keys rows
-- that point at it (ON DELETE CASCADE): they are kept aside and put back once the new table has the name.
CREATE TEMP TABLE kept_playground_keys AS SELECT * FROM playground_keys;

CREATE TABLE api_keys_new (
    id             TEXT PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    label          TEXT NOT NULL DEFAULT '',
    secret_hash    TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled', 'revoked')),
    scope          TEXT NOT NULL DEFAULT 'user' CHECK (scope IN ('user', 'search', 'admin')),
    models         TEXT NOT NULL DEFAULT '',
    rate_count     INTEGER,
    rate_window_s  INTEGER,
    token_count    INTEGER,
    token_window_s INTEGER,
    max_concurrent INTEGER,
    max_num_ctx    INTEGER,
    max_num_predict INTEGER,
    max_keep_alive_s INTEGER,
    expires_at     REAL,
    created_at     REAL NOT NULL,
    revoked_at     REAL,
    auto_models    TEXT NOT NULL DEFAULT ''
);
INSERT INTO api_keys_new (id, user_id, label, secret_hash, state, scope, models, rate_count, rate_window_s,
                          token_count, token_window_s, max_concurrent, max_num_ctx, max_num_predict,
                          max_keep_alive_s, expires_at, created_at, revoked_at, auto_models)
    SELECT id, user_id, label, secret_hash, state, scope, models, rate_count, rate_window_s,
           token_count, token_window_s, max_concurrent, max_num_ctx, max_num_predict,
           max_keep_alive_s, expires_at, created_at, revoked_at, auto_models
      FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_new RENAME TO api_keys;
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TRIGGER cv_keys_i AFTER INSERT ON api_keys BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_keys_u AFTER UPDATE ON api_keys BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;
CREATE TRIGGER cv_keys_d AFTER DELETE ON api_keys BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'config_version'; END;

INSERT INTO playground_keys SELECT * FROM kept_playground_keys;
DROP TABLE kept_playground_keys;
