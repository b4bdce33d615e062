"""A SIGTERM during start-up: the worker still drains and logs its stop (CI once lost a test's log lines
to a SIGTERM that came between the port opening and the handler's install)."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from tests.conftest import PY, ROOT, make_fortress


def test_sigterm_while_starting_stops_cleanly(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # a backend that accepts and never answers
        silent.settimeout(20)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        f = make_fortress(tmp_path, [("silent", url)], "[routing]\nconnect_timeout_s = 2\n")
        with (tmp_path / "err.txt").open("wb") as err:
            proc = subprocess.Popen(
                [PY, "-m", "fortress", "serve", "--config", str(f.config)], cwd=ROOT, stderr=err
            )
        try:
            conn, _ = silent.accept()  # the first health poll: the worker is past its imports, not listening
            with conn:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = (tmp_path / "err.txt").read_text()
    assert "draining" in log and "stopped" in log, log
