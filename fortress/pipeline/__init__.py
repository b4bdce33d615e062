"""Pure decision stages of the hot path: no sockets, no database, unit-testable."""
