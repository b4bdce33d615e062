-- Per-key narrowing of model "auto" (issue 13): comma-separated globs, '' = no narrowing.
ALTER TABLE api_keys ADD COLUMN auto_models TEXT NOT NULL DEFAULT '';
