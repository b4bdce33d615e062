-- Admin sign-in sessions live on the server: the browser's cookie holds a random token, this table
-- its SHA-256 (a copy of the database signs nobody in). Sign-out deletes the row, so a copied cookie
-- is dead at once; removing an account removes its sessions (foreign key).
CREATE TABLE admin_sessions (
    token_hash TEXT PRIMARY KEY,
    admin      TEXT NOT NULL REFERENCES admins(name) ON DELETE CASCADE ON UPDATE CASCADE,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,                   -- created_at + [admin] session_lifetime_s
    ip         TEXT NOT NULL DEFAULT '',
    user_agent TEXT NOT NULL DEFAULT ''
);
CREATE INDEX admin_sessions_admin ON admin_sessions(admin);

-- A new password ends every session of the account, whoever sets it (admin page or fortress init).
CREATE TRIGGER admin_sessions_end_on_password AFTER UPDATE OF password_hash ON admins
WHEN NEW.password_hash != OLD.password_hash BEGIN
    DELETE FROM admin_sessions WHERE admin = NEW.name; END;
