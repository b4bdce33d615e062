"""Issue 11.1: a key works the moment `fortress key create` prints it, without tripping the brute-force
lockout; bad keys are still counted and locked out; disable and enable reach the proxy."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from tests.clients.conftest import new_key, serving, with_user
from tests.conftest import PY, ROOT, Fortress, Sim


def test_create_then_use_at_once_100_times_in_a_row(gateway: Fortress) -> None:
    with_user(gateway, "script")
    script = f"""
set -e
for i in $(seq 100); do
  KEY=$("{PY}" -m fortress key create --user script --config "{gateway.config}" | head -n 1)
  curl -s -o /dev/null -w '%{{http_code}}\\n' -H "Authorization: Bearer $KEY" {gateway.url}/api/tags
done
"""
    run = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ
    )
    assert run.returncode == 0, run.stderr
    codes = run.stdout.split()
    assert codes == ["200"] * 100, codes
    # auth_fail_limit is 5 here: had any of those counted as a failure, this address would be locked
    assert httpx.get(f"{gateway.url}/api/version", headers={"X-API-Key": new_key(gateway)}).status_code == 200


def test_bad_keys_are_still_counted_and_locked_out(tmp_path: Path, backend: Sim) -> None:
    with serving(tmp_path, [("local", backend.url)], "[security]\nauth_fail_limit = 5\n") as f:
        good = new_key(f)
        codes = []
        with httpx.Client(base_url=f.url) as c:  # one connection: a 401 keeps it open
            for i in range(7):
                bad = f"fk_{i:08d}_" + "Q" * 43  # shaped like a key, never issued
                codes.append(c.get("/api/tags", headers={"X-API-Key": bad}).status_code)
            assert codes[:5] == [401] * 5 and codes[5:] == [429, 429], codes
            locked = c.get("/api/tags", headers={"X-API-Key": good})
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0


def test_enable_applies_to_the_very_next_request(tmp_path: Path, backend: Sim) -> None:
    with serving(tmp_path, [("local", backend.url)]) as f:
        key = new_key(f, "erin")
        key_id = key.split("_")[1]
        assert httpx.get(f"{f.url}/api/tags", headers={"X-API-Key": key}).status_code == 200
        f.cli("key", "disable", key_id)
        end = time.monotonic() + 10  # the contract is 1 s; a generous bound for a loaded machine
        while httpx.get(f"{f.url}/api/tags", headers={"X-API-Key": key}).status_code != 401:
            assert time.monotonic() < end, "a disabled key was still served"
            time.sleep(0.05)
        f.cli("key", "enable", key_id)
        r = httpx.get(f"{f.url}/api/tags", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
