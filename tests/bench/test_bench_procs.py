"""Process measurement: CPU that is not ours shows up as other work."""

import subprocess
import sys

from bench.procs import OtherWork

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"


def test_work_we_do_not_claim_is_other() -> None:
    with OtherWork(None, lambda: 0.0) as other:
        subprocess.run([sys.executable, "-c", BUSY], check=True)
    assert other.pct > 20
