"""Who may read /metrics, as a table of cases; and the [metrics] config section."""

from __future__ import annotations

from pathlib import Path

import pytest

from fortress import config
from fortress.config import ConfigError, MetricsConfig
from fortress.metrics.access import MetricsAccess

REPO = Path(__file__).resolve().parents[2]
DEFAULT = MetricsConfig()


@pytest.mark.parametrize(
    ("cfg", "ip", "scope", "status"),
    [
        (DEFAULT, "127.0.0.1", None, 200),  # a local Prometheus, no secret in its config
        (DEFAULT, "::1", None, 200),
        (DEFAULT, "::ffff:127.0.0.1", None, 200),  # dual-stack listener: the mapped address is loopback
        (DEFAULT, "127.0.0.2", None, 401),  # /32: exactly the one address
        (DEFAULT, "10.0.0.5", None, 401),
        (DEFAULT, "10.0.0.5", "admin", 200),  # admin-scope keys from anywhere
        (DEFAULT, "10.0.0.5", "", 403),  # an ordinary key is not enough
        (DEFAULT, "127.0.0.1", "", 200),  # the address alone would do; a key takes nothing away
        (DEFAULT, "not-an-ip", None, 401),  # fail closed
        (MetricsConfig(allow=("10.0.0.0/8",)), "10.20.30.40", None, 200),
        (MetricsConfig(allow=("10.0.0.0/8",)), "127.0.0.1", None, 401),
        (MetricsConfig(allow=()), "127.0.0.1", None, 401),  # [] = keys only, not everyone
        (MetricsConfig(allow=()), "127.0.0.1", "admin", 200),
        (MetricsConfig(enabled=False), "127.0.0.1", "admin", 404),  # off: the route does not exist
    ],
)
def test_access_decision(cfg: MetricsConfig, ip: str, scope: str | None, status: int) -> None:
    verdict = MetricsAccess(cfg).decide(ip, scope)
    assert verdict.status == status
    assert (verdict.message == "") == (status == 200)


def test_refusals_say_what_would_be_accepted_and_leak_nothing() -> None:
    access = MetricsAccess(DEFAULT)
    assert "admin-scope API key" in access.decide("10.0.0.5", None).message
    assert "[metrics] allow" in access.decide("10.0.0.5", None).message
    assert "admin scope" in access.decide("10.0.0.5", "").message
    assert "10.0.0.5" not in access.decide("10.0.0.5", None).message


def test_config_section_defaults_and_values() -> None:
    assert config.Config().metrics == MetricsConfig(True, ("127.0.0.1/32", "::1/128"))
    cfg = config.parse({"metrics": {"enabled": False, "allow": ["10.0.0.0/8", "fd00::/8"]}})
    assert cfg.metrics == MetricsConfig(False, ("10.0.0.0/8", "fd00::/8"))
    assert config.load(str(REPO / "config.toml")).metrics == MetricsConfig()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"allow": ["10.0.0.0/8", "10.0.0.300/8"]}, "metrics.allow[1]: not a CIDR: '10.0.0.300/8'"),
        ({"allow": "127.0.0.1/32"}, "metrics.allow: expected a list of strings"),
        ({"enabled": "yes"}, "metrics.enabled: expected true or false"),
        ({"listen": "0.0.0.0:9090"}, "unknown key metrics.listen"),
    ],
)
def test_bad_config_names_the_key(section: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse({"metrics": section})
    assert str(err.value) == message
