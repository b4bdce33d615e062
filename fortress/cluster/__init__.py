"""Many gateway nodes on one shared state, through Redis (`[cluster] redis_url`).

One machine is the control node (`role = "control"`, the default): it holds the SQLite database and
runs the admin. Every other machine is a node (`role = "node"`): no database; its configuration comes
from Redis and its usage and live figures go there. The pieces, each usable on its own:

    codec       Snapshot <-> bytes: versioned, compact, backend credentials sealed with secrets.key
    publisher   control: keeps `fortress:snapshot` equal to the database (MULTI + pub/sub notice)
    subscriber  node: holds the published snapshot (notice + poll), serves on it while Redis is down
    lease       control: only one control node publishes and consumes
    producer    node: usage rows from the usage pipe into the stream `fortress:usage` (a process)
    consumer    control: the stream into SQLite, exactly once (batch ids committed with the rows)
    nodes       node: heartbeats; control: folded into proxy_stats; list_nodes() for the dashboard
    control     control: the process running lease, publisher, consumer and fold
    link        the Redis names, clients, and `Reachability` (connected / last_ok, logged once)

What the proxy, the CLI and the admin must wire (phase 2)
---------------------------------------------------------
1. The snapshot source, in `fortress/proxy/server.py` `run_worker`. If `cfg.cluster.role == "node"`:
   open no database. `client = link.async_client(url)`; `sub = Subscriber(client,
   SecretBox(key_file_for(cfg)), on_change=apply, poll_s=cfg.cluster.snapshot_poll_s,
   cache=cfg.data_dir / "snapshot.cache")`; `snapshot = (await sub.start()).snapshot`, where
   `apply(decoded)` is `worker.swap(decoded.snapshot); worker.start_polling()`. The reload task keeps
   only `tls.refresh()`; TLS comes from the node's own config.toml (the `tls.files` setting names paths
   on the control machine and is ignored on nodes). `sub.aclose()` and `client.aclose()` at drain.
   `NoSnapshot` from `start()` is the one-line reason `fortress serve` exits with. In `fortress/cli.py`,
   `_serve` and `_run` skip `_require_db` for nodes, and `_run` runs only `serve` there. Otherwise
   (control, or no redis_url) the worker loads from SQLite exactly as today.
2. The control node's cluster process: `fortress run` adds a third supervised child when
   `cfg.cluster.redis_url` is set and the role is control: `[python, -m, fortress.cluster.control,
   --config, cfg.source]` (or a `fortress cluster` subcommand calling `control.main`); systemd and
   Docker get the same as a unit/service. It is its own process on purpose: with `workers = N` no
   worker is special, and a SIGKILL of it costs a restart and nothing else (tests/cluster).
3. Usage on a node: `UsagePipe._spawn` starts `[python, -m, fortress.cluster.producer, --config,
   cfg.source, --stream, ..., --ack-fd, ..., --log-*, --access-log*]` in place of `fortress.state.sink
   <db> --stream ...`: the same protocol and options, the Redis URL (which may hold a password) read
   from the file, never from a command line. Nothing else changes in the pipe: the producer
   acknowledges a batch once Redis has it, and while Redis is away the worker's unacknowledged-bytes
   bound holds the rows (then drops, counts and logs, as for a locked database).
4. Live figures: on a node the stats task calls `nodes.beat(client, hb.figures(time.time(),
   in_flight, requests, errors, connections, sub.version, detail))` with one `Heartbeat(node_name,
   pid)` per worker, instead of `write_proxy_stats`. On the control node the proxy keeps writing
   proxy_stats and passes `nodes.stats_detail(hb.figures(...))` as `detail`, so it is listed with its
   version too.
5. `/health` and `/metrics` on a node: `/health` stays 200 while the node serves (the load balancer
   must keep it) and adds `"redis": "up" | "down"` and `"config_version"`; admin-scope detail adds
   `sub.status()` (last_ok, down_since, error, credential problems). Metrics: the existing
   `fortress_snapshot_version` and `fortress_snapshot_age_seconds` come from `sub.version` and the
   time of the last change, plus a new gauge `fortress_cluster_redis_up` (`sub.connected`). While Redis
   is down the limiter must fall back to local counters (today's RedisLimiter lets requests through:
   the `security` branch's business), and say so in the same places.
6. The admin: nothing talks to Redis. The dashboard calls `await nodes.list_nodes(db)` and shows one
   row per node (name, Fortress version, config version against the database's, workers, in flight,
   req/s, last seen); the existing tiles already sum every node, since the control process folds the
   heartbeats into proxy_stats.
7. `consumer.store_batches` inserts rows with usage.py's private `_INSERT`/`_ROLLUP`/`_hourly`, inside
   its own transaction (store() owns one, and the batch ids must commit with the rows): usage.py should
   expose that insert as a public function used by both.
"""
