"""The only package that opens SQLite: schema, migrations, repositories, snapshot, usage."""
