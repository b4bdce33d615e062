"""Backend routing: model inventory, health, the choice of a backend, and federated model lists.

Decision logic (inventory, health, choose, federation) is pure and synchronous; only client.py and
poller.py touch sockets, and only for control-plane calls (/api/version, /api/tags, /api/ps).
"""
