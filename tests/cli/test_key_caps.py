"""`fortress key create` per-key model caps: stored in their columns, listed, bad values refused."""

from __future__ import annotations

from .conftest import Fortress


def _create(fortress: Fortress, *caps: str) -> str:
    return fortress.ok("key", "create", "--user", "alice", *caps).strip()[3:11]


def test_caps_are_stored_listed_and_audited(fortress: Fortress) -> None:
    fortress.ok("init", "--admin-user", "admin", "--admin-password-stdin", stdin="a-long-password\n")
    fortress.ok("user", "add", "alice")
    capped = _create(fortress, "--max-num-ctx", "8192", "--max-num-predict", "512", "--max-keep-alive", "5m")
    plain = _create(fortress)

    columns = "SELECT max_num_ctx, max_num_predict, max_keep_alive_s FROM api_keys WHERE id = ?"
    assert fortress.query(columns, capped) == [(8192, 512, 300)]
    assert fortress.query(columns, plain) == [(None, None, None)]
    (detail,) = fortress.query("SELECT detail FROM audit WHERE action = 'key.create' AND target = ?", capped)[
        0
    ]
    assert '"max_num_ctx": 8192' in detail and '"max_keep_alive_s": 300' in detail

    listing = fortress.ok("key", "list", "--user", "alice").splitlines()
    header = listing[0].split()
    caps_at = header.index("CAPS")
    rows = {line.split()[0]: line.split() for line in listing[1:]}
    assert rows[capped][caps_at] == "ctx<=8192,predict<=512,keep_alive<=300s"
    assert rows[plain][caps_at] == "-"

    only_ctx = _create(fortress, "--max-num-ctx", "2048")
    assert fortress.query(columns, only_ctx) == [(2048, None, None)]


def test_bad_caps_are_refused_with_one_line_and_store_nothing(fortress: Fortress) -> None:
    fortress.ok("init", "--admin-user", "admin", "--admin-password-stdin", stdin="a-long-password\n")
    fortress.ok("user", "add", "alice")
    refused = [
        (("--max-num-ctx", "0"), "--max-num-ctx: must be a positive integer"),
        (("--max-num-predict", "-5"), "--max-num-predict: must be a positive integer"),
        (("--max-keep-alive", "0"), "--max-keep-alive: duration must be positive"),
        (("--max-keep-alive", "forever"), "--max-keep-alive: invalid duration"),
    ]
    for flags, message in refused:
        res = fortress.run("key", "create", "--user", "alice", *flags)
        assert res.returncode == 1, (flags, res.stdout, res.stderr)
        assert res.stderr.startswith(f"fortress: {message}") and res.stderr.count("\n") == 1, res.stderr
        assert res.stdout == ""
    res = fortress.run("key", "create", "--user", "alice", "--max-num-ctx", "lots")
    assert res.returncode == 2 and "--max-num-ctx" in res.stderr
    assert fortress.query("SELECT COUNT(*) FROM api_keys") == [(0,)]
