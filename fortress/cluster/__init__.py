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
    control     control: the process running lease, publisher, consumer, fold and trust sessions
    trust       node: IP trust sessions asked of the control node; control: stored, published, answered
    node        a proxy worker's side: `Member` on a node, `Shared` on the control node
    link        the Redis names, clients, and `Reachability` (connected / last_ok, logged once)

How the rest of Fortress uses them
-----------------------------------
- `fortress serve` on a node (fortress/proxy/server.py, through `node.Member`): no database; the worker's
  snapshot comes from the Subscriber (each change: `worker.swap` and an inventory re-sync), the on-demand
  configuration check (fortress/proxy/freshness.py) asks Redis (and, with a refusal waiting,
  the control node first: `Subscriber.latest`), usage goes through the usage pipe to
  `producer` (the same protocol as the SQLite writer; a loop turn's rows before the turn's client
  bytes, so a SIGKILL of the proxy loses none of a completed request), the stats task beats instead of writing
  proxy_stats, and POST/DELETE /auth are stored by the control node (`trust`). On the control node the
  proxy works from SQLite as a single gateway does, shares limits through Redis, and names itself in
  its proxy_stats rows (`node.Shared`).
- `fortress run` on the control node adds `python -m fortress.cluster.control` as a third supervised
  child; on a node it runs only the proxy.
- `/health` stays 200 and adds `"redis"` and `"config_version"` (admin detail: `"cluster"`), `/metrics`
  adds `fortress_cluster_redis_up`; while Redis is away the limiter counts on each machine
  (fortress.pipeline.limits.RedisLimiter).
- The admin never talks to Redis: its dashboard lists `nodes.list_nodes(db)`, which the control
  process keeps current by folding heartbeats into proxy_stats.
"""
