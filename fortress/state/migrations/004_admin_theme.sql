-- Each admin account picks the look of the admin pages (admin/themes.py lists the names; an unknown
-- name falls back to the default there, so adding a theme needs no migration).
ALTER TABLE admins ADD COLUMN theme TEXT NOT NULL DEFAULT 'light';
