"""The Fortress admin: a separate Litestar + htmx process that shares only the SQLite database."""
