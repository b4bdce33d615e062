"""The [cluster] section: defaults, validation with messages that name the key."""

from __future__ import annotations

import re
import socket

import pytest

from fortress.config import ConfigError, parse


def test_defaults_stand_alone_and_a_redis_url_makes_a_control_node() -> None:
    alone = parse({}).cluster
    assert not alone.enabled and alone.role == "control" and alone.name == socket.gethostname()
    control = parse({"cluster": {"redis_url": "redis://10.0.0.5:6379/0"}}).cluster
    assert control.enabled and control.role == "control"  # what a single machine with Redis limits was
    node = parse(
        {"cluster": {"redis_url": "rediss://:pw@r:6380/1", "role": "node", "node_name": "gw-2"}}
    ).cluster
    assert node.role == "node" and node.name == "gw-2"


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        ({"redis_url": "http://r:6379"}, "cluster.redis_url: must start with redis://"),
        ({"role": "worker"}, "cluster.role: must be 'control' or 'node'"),
        ({"role": "node"}, "cluster.role: 'node' takes its configuration from Redis: set cluster.redis_url"),
        ({"node_name": "gw 2"}, "cluster.node_name: letters, digits"),
        ({"node_name": "x" * 64}, "cluster.node_name"),
        ({"snapshot_poll_s": 0}, "cluster.snapshot_poll_s: must be between 0.05 and 60"),
        ({"usage_stream_maxlen": 10}, "cluster.usage_stream_maxlen: must be at least 1000"),
        ({"redis": "redis://r"}, "unknown key cluster.redis"),
    ],
)
def test_bad_values_are_named(cluster: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse({"cluster": cluster})
