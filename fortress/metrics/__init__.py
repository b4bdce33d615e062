"""Prometheus metrics for the proxy (GET /metrics), summed over every worker.

`layout` (where each figure lives in a worker's slot) → `table` (the shared mmap'd file: claim a slot,
collect every slot into `Totals`) → `recorder` (the hot-path calls writing one's own slot) → `families`
(Totals → Prometheus families) → `exposition` (families → text format 0.0.4); `access` decides who may
read it.
"""
