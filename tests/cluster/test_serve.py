"""Issue 16 for real: three `fortress serve` nodes (`role = "node"`, no database) on loopback ports, one
control node (its database, `python -m fortress.cluster.control`), one redis-server, the simulator as the
backend; driven with httpx as any client would.

Keys created or revoked on the control node reach every node through the published snapshot; limits
and IP trust sessions hold across nodes; usage rows of every completed request land once in the
control node's database, whatever gets SIGKILLed; a Redis restart costs nothing but shared state for
its duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fortress.cluster.link import SNAPSHOT_TAG
from fortress.cluster.nodes import list_nodes
from fortress.state import db as dbmod
from fortress.state.load import read_config_version
from tests.admin.conftest import start_admin
from tests.conftest import PY, Fortress, Sim, free_port, make_fortress, start, stop, wait_port

from .conftest import RedisServer, wait_until
from .test_processes import start_control

TRUST = "[security]\nip_trust_ttl_s = 600\n"
GEN = {"model": "llama3.2", "prompt": "hi", "stream": False}
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@dataclass
class Node:
    name: str
    config: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self) -> Node:
        self.proc = start([PY, "-m", "fortress", "serve", "--config", str(self.config)])
        wait_port(self.port, self.proc)
        return self

    def stop(self) -> str:
        return stop(self.proc) if self.proc else ""

    def producer(self) -> int:
        """The pid of this node's usage producer (the proxy's child process)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        for pid in children:
            if "fortress.cluster.producer" in Path(f"/proc/{pid}/cmdline").read_text():
                return int(pid)
        raise AssertionError("no usage producer under the node")


def new_node(home: Path, redis_url: str, name: str) -> Node:
    """A node's whole config.toml: its own listen address, Redis for everything else."""
    node = Node(name, home / f"{name}.toml")
    node.config.write_text(
        f'[proxy]\nlisten = "127.0.0.1:{node.port}"\n[database]\npath = "{name}/fortress.db"\n'
        f'[cluster]\nredis_url = "{redis_url}"\nrole = "node"\nnode_name = "{name}"\n'
    )
    return node


@dataclass
class Cluster:
    redis: RedisServer
    control: Fortress
    control_proc: subprocess.Popen
    nodes: list[Node]

    def key(self, *flags: str, user: str = "alice", wait: bool = True) -> str:
        """A key made on the control node; returns once it is published (Redis holds its version),
        or at once (`wait=False`), as a script using it straight away would."""
        if user not in self.control.cli("user", "list").stdout.split():
            self.control.cli("user", "add", user)
        key = self.control.cli("key", "create", "--user", user, *flags).stdout.splitlines()[0].strip()
        if wait:
            self.published()
        return key

    def published(self) -> None:
        """Returns once Redis holds the control node's configuration and every node runs it (a test that
        stops Redis next must not leave a node on the version before)."""
        with contextlib.closing(sqlite3.connect(self.control.db)) as conn:
            version = int(conn.execute("SELECT value FROM meta WHERE key = 'config_version'").fetchone()[0])

        def there() -> bool:
            with contextlib.suppress(Exception):
                tag = self.redis.client().get(SNAPSHOT_TAG)
                return tag is not None and int(tag.split(b".")[0]) >= version
            return False

        def running(node: Node) -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{node.url}/health").json()["config_version"] >= version
            return False

        asyncio.run(wait_until(there, what=f"version {version} published"))
        for node in self.nodes:
            asyncio.run(wait_until(lambda n=node: running(n), what=f"{node.name} on version {version}"))

    def restart_control(self) -> None:
        self.control_proc.kill()
        self.control_proc.wait(10)
        self.control_proc = start_control(self.control)

    def usage(self, paths: tuple[str, ...] = ("/api/generate",)) -> list[str]:
        with contextlib.closing(sqlite3.connect(self.control.db)) as conn:
            query = f"SELECT request_id FROM usage WHERE path IN ({', '.join('?' * len(paths))})"
            return [r[0] for r in conn.execute(query, paths)]


@contextlib.contextmanager
def cluster(home: Path, redis: RedisServer, backend: Sim, nodes: int = 3) -> Iterator[Cluster]:
    """Redis (given), a control node with `backend`, and `nodes` nodes serving; all stopped on the way out."""
    control = make_fortress(
        home,
        [("local", backend.url)],
        extra=f'[cluster]\nredis_url = "{redis.url}"\nnode_name = "control"\n' + TRUST,
    )
    c = Cluster(redis, control, start_control(control), [])
    try:
        c.nodes = [new_node(home, redis.url, f"node{i + 1}").serve() for i in range(nodes)]
        yield c
    finally:
        for node in c.nodes:
            node.stop()
        if c.control_proc.poll() is None:
            c.control_proc.terminate()
            c.control_proc.wait(30)


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory, sim: Sim) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("three")
    (home / "redis").mkdir()
    redis = RedisServer(home / "redis").start()
    try:
        with cluster(home, redis, sim) as c:
            yield c
    finally:
        redis.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_created_on_the_control_node_works_on_every_node_at_once(three: Cluster) -> None:
    """Used the moment `fortress key create` prints it, before the publisher's next poll: the node's
    refusal waits for the control node's answer (Subscriber.latest), as a single gateway's does."""
    for _ in range(3):
        for node in three.nodes:  # each node's first request with a brand-new key, no retry
            key = three.key(wait=False)
            r = httpx.post(f"{node.url}/api/generate", json=GEN, headers=bearer(key), timeout=10)
            assert r.status_code == 200, (node.name, r.text)
    assert httpx.get(f"{three.nodes[0].url}/api/tags").status_code == 401  # and no key is no entry
    bad = "fk_" + "a" * 8 + "_" + "x" * 40  # well formed, unknown
    assert httpx.get(f"{three.nodes[1].url}/api/tags", headers=bearer(bad)).status_code == 401


def test_a_revoked_key_is_refused_by_every_node_within_a_second(three: Cluster) -> None:
    key = three.key()
    for node in three.nodes:
        assert httpx.get(f"{node.url}/api/tags", headers=bearer(key)).status_code == 200
    three.control.cli("key", "revoke", key.split("_")[1])
    revoked = time.monotonic()
    refused: dict[str, float] = {}
    while len(refused) < len(three.nodes) and time.monotonic() - revoked < 10:
        for node in three.nodes:
            if node.name in refused:
                continue
            if httpx.get(f"{node.url}/api/tags", headers=bearer(key)).status_code == 401:
                refused[node.name] = time.monotonic() - revoked
        time.sleep(0.01)
    assert len(refused) == len(three.nodes), refused
    assert max(refused.values()) < 1.0, refused


def test_a_rate_limit_holds_across_three_nodes(three: Cluster) -> None:
    """`5/10s` and 30 requests spread over three nodes at once: at most 5 in any 10 s, and the first 5."""
    key = three.key("--rate", "5/10s")
    answers: list[tuple[float, int]] = []

    def client(node: Node) -> None:
        with httpx.Client(headers=bearer(key), timeout=10) as http:
            for _ in range(10):
                status = http.get(f"{node.url}/api/tags").status_code
                answers.append((time.monotonic(), status))

    threads = [threading.Thread(target=client, args=(n,)) for n in three.nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {s for _, s in answers} <= {200, 429}
    admitted = sorted(t for t, s in answers if s == 200)
    assert len(admitted) >= 5  # the first five fit whatever the order
    # the bound, over any window of 10 s (a slow machine may spread the 30 over more than one window)
    assert all(sum(1 for u in admitted if t <= u < t + 10) <= 5 for t in admitted), admitted
    if answers[-1][0] - min(t for t, _ in answers) < 10:
        assert len(admitted) == 5


def test_token_and_concurrency_limits_hold_across_nodes(three: Cluster) -> None:
    tokens = three.key("--tokens", "10/1h")
    first, *others = three.nodes
    r = httpx.post(f"{first.url}/api/generate", json=GEN, headers=bearer(tokens), timeout=10)
    assert r.status_code == 200 and r.json()["prompt_eval_count"] + r.json()["eval_count"] > 10
    for node in others:  # the budget was spent on another node
        assert httpx.get(f"{node.url}/api/tags", headers=bearer(tokens)).status_code == 429, node.name

    one = three.key("--max-concurrent", "1")
    slow = {**bearer(one), "X-Sim-Delay-Ms": "2000"}
    statuses: list[int] = []

    def call(node: Node) -> None:
        r = httpx.post(f"{node.url}/api/generate", json=GEN, headers=slow, timeout=30)
        statuses.append(r.status_code)

    threads = [threading.Thread(target=call, args=(n,)) for n in three.nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 429, 429], statuses
    assert httpx.get(f"{first.url}/api/tags", headers=bearer(one)).status_code == 200  # the slot is back


def test_an_ip_trust_session_started_on_one_node_serves_on_every_node(three: Cluster) -> None:
    key = three.key(user="trusty")
    first, *others = three.nodes
    r = httpx.post(f"{first.url}/auth", headers=bearer(key), timeout=10)
    assert r.status_code == 200 and r.json()["ip"] == "127.0.0.1", r.text
    for node in three.nodes:  # keyless, from the trusted address
        assert httpx.get(f"{node.url}/api/tags").status_code == 200, node.name
    with contextlib.closing(sqlite3.connect(three.control.db)) as conn:  # the control node's database
        assert conn.execute("SELECT key_id FROM ip_trust").fetchall() == [(key.split("_")[1],)]
    r = httpx.request("DELETE", f"{others[0].url}/auth", headers=bearer(key), timeout=10)
    assert r.json() == {"status": "ok", "ip": "127.0.0.1"}
    for node in three.nodes:
        assert httpx.get(f"{node.url}/api/tags").status_code == 401, node.name


def test_a_trust_session_the_control_node_cannot_store_is_a_clear_503(three: Cluster) -> None:
    key = three.key(user="waits")
    three.control_proc.kill()  # the control process is what stores sessions
    three.control_proc.wait(10)
    try:
        r = httpx.post(f"{three.nodes[1].url}/auth", headers=bearer(key), timeout=30)
        assert r.status_code == 503 and "try again" in r.json()["error"], r.text
        assert httpx.get(f"{three.nodes[1].url}/api/tags").status_code == 401  # nothing half made
    finally:
        three.restart_control()
    r = httpx.post(f"{three.nodes[1].url}/auth", headers=bearer(key), timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.request("DELETE", f"{three.nodes[1].url}/auth", headers=bearer(key), timeout=30)
    assert r.status_code == 200, r.text


def test_health_and_metrics_say_redis_is_up_and_the_dashboard_lists_every_node(three: Cluster) -> None:
    admin = three.key("--scope", "admin", user="ops")
    for node in three.nodes:
        health = httpx.get(f"{node.url}/health").json()
        assert health["redis"] == "up" and health["config_version"] > 0
        detail = httpx.get(f"{node.url}/health", headers=bearer(admin)).json()["cluster"]
        assert detail["limits"] == "shared" and detail["notices"] == "up" and detail["error"] == ""
        metrics = httpx.get(f"{node.url}/metrics", headers=bearer(admin)).text
        assert "\nfortress_cluster_redis_up 1\n" in metrics

    async def listed() -> list:
        """Every node, once each has beaten with the configuration in the database (the admin key above
        bumped it; a node takes it within a second but says so only at its next heartbeat)."""
        db = await dbmod.connect(str(three.control.db))
        try:
            end = time.monotonic() + 15
            while True:
                found = await list_nodes(db)
                current = await read_config_version(db)
                beaten = {n.name for n in found if n.config_version >= current}
                if beaten >= {n.name for n in three.nodes} or time.monotonic() > end:
                    return found
                await asyncio.sleep(0.2)
        finally:
            await db.close()

    found = {n.name: n for n in asyncio.run(listed())}
    for node in three.nodes:
        assert found[node.name].workers == 1 and found[node.name].version
        assert found[node.name].config_version > 0
    admin = start_admin(three.control)  # the admin's dashboard, as the operator sees it
    try:
        http, _ = admin.login()
        page = http.get("/dashboard/live").text
        http.close()
        table = page.partition('<table id="nodes">')[2].partition("</table>")[0]
        for node in three.nodes:
            assert f"<td>{node.name}</td>" in table
        assert "current" in table
    finally:
        stop(admin.proc)


class Load:
    """Sequential generate requests spread over the nodes, from `clients` threads; remembers the ids of
    those answered whole. With `streams`, every other request is a streamed chat (NDJSON, paced)."""

    def __init__(self, nodes: list[Node], key: str, clients: int = 1, streams: bool = False) -> None:
        self.nodes = nodes
        self.key = key
        self.streams = streams
        self.done: list[str] = []
        self.streamed: list[str] = []  # of `done`, the streamed chats
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        with httpx.Client(headers=bearer(self.key), timeout=10) as http:
            i = 0
            while not self._stop.is_set():
                node = self.nodes[i % len(self.nodes)]
                stream = self.streams and i % 2 == 1
                i += 1
                try:
                    r = self._chat(http, node) if stream else http.post(f"{node.url}/api/generate", json=GEN)
                except httpx.HTTPError as exc:  # a node that is down (or went down mid-answer)
                    self.failed.append(f"{node.name}: {exc!r}")
                    self._stop.wait(0.02)
                    continue
                if r.status_code == 200:
                    self.done.append(r.headers["X-Request-ID"])
                    if stream:
                        self.streamed.append(r.headers["X-Request-ID"])
                else:
                    self.failed.append(f"{node.name}: {r.status_code} {r.text[:200]}")

    @staticmethod
    def _chat(http: httpx.Client, node: Node) -> httpx.Response:
        """A streamed chat read to its end: answered whole once its last line says done."""
        with http.stream("POST", f"{node.url}/api/chat", json=CHAT, headers={"X-Sim-Rate": "400"}) as r:
            lines = [json.loads(line) for line in r.iter_lines() if line]
        if r.status_code == 200 and not (lines and lines[-1].get("done")):
            raise httpx.RemoteProtocolError("the stream ended before its last line")
        return r

    def until(self, count: int) -> None:
        asyncio.run(wait_until(lambda: len(self.done) >= count, timeout=60, what=f"{count} requests"))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def test_sigkill_of_a_nodes_producer_or_of_the_control_node_loses_no_usage_row(
    tmp_path: Path, redis_server: RedisServer, sim: Sim
) -> None:
    with cluster(tmp_path, redis_server, sim, nodes=2) as c:
        load = Load(c.nodes, c.key("--rate", "100000/1h"))
        try:
            load.until(50)
            for node in c.nodes:  # SIGKILL of each node's usage writer (the producer), restarted by the node
                os.kill(node.producer(), signal.SIGKILL)
            load.until(150)
            c.restart_control()  # SIGKILL of the writer (the consumer), and a new one
            load.until(250)
            c.restart_control()
            load.until(350)
        finally:
            load.stop()
        for node in c.nodes:  # a graceful stop flushes what each node holds
            node.stop()
        c.nodes = []
        assert load.failed == []
        done = set(load.done)
        asyncio.run(wait_until(lambda: set(c.usage()) >= done, timeout=60, what="every usage row stored"))
        time.sleep(1.0)  # a row stored twice would show now
        stored = c.usage()
        assert len(stored) == len(set(stored)) == len(done)


def listening(port: int) -> int:
    """The pid of the process holding the socket that listens on `port` (as `ss -ltnp` finds it)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
    raise AssertionError(f"nothing listens on port {port}")


def test_sigkill_of_a_nodes_proxy_loses_no_usage_row_of_a_completed_request(
    tmp_path: Path, redis_server: RedisServer, sim: Sim
) -> None:
    """The proxy (with one worker, the `fortress serve` process itself) killed at random moments under
    load, streams included, and started again at once: each request its client saw whole has one row.

    A killed proxy's producer lives on: it reads what the pipe holds, sends it, and stops by itself,
    while the new proxy and its own producer already serve (another stream, so nothing collides)."""
    with cluster(tmp_path, redis_server, sim, nodes=1) as c:
        (node,) = c.nodes
        load = Load(c.nodes, c.key("--rate", "100000/1h"), clients=3, streams=True)
        try:
            for _ in range(5):
                load.until(len(load.done) + 40)
                time.sleep(random.uniform(0.0, 0.2))
                proxy = node.proc
                assert proxy is not None and listening(node.port) == proxy.pid  # the process serving HTTP
                proxy.kill()
                proxy.wait(10)
                node.serve()
                out = proxy.stdout.read().decode(errors="replace") if proxy.stdout else ""  # until it ends
                assert "usage producer stopped:" in out and " rows sent, 0 not" in out, out[-3000:]
            load.until(len(load.done) + 40)
        finally:
            load.stop()
        node.stop()  # a graceful stop flushes what the last one holds
        c.nodes = []
        done = set(load.done)
        assert len(done) == len(load.done) and load.streamed and load.failed  # streams, and requests cut
        paths = ("/api/generate", "/api/chat")
        asyncio.run(
            wait_until(lambda: set(c.usage(paths)) >= done, timeout=60, what="every usage row stored")
        )
        time.sleep(1.0)  # a row stored twice would show now
        stored = c.usage(paths)
        assert len(stored) == len(set(stored))  # once each; rows of requests cut by a kill may be there too
        assert set(stored) >= done


def test_redis_restarted_mid_load_serving_continues_and_shared_state_resumes(
    tmp_path: Path, redis_server: RedisServer, sim: Sim
) -> None:
    with cluster(tmp_path, redis_server, sim, nodes=2) as c:
        admin = c.key("--scope", "admin", user="ops")
        load = Load(c.nodes, c.key("--rate", "100000/1h"))
        try:
            load.until(30)
            alone = c.key("--rate", "2/1h")  # never used while Redis answered
            redis_server.stop(kill=True)
            during = len(load.done)
            for node in c.nodes:  # the snapshot's poll, and the limiter at its next decision, notice

                def local(n: Node = node) -> bool:
                    health = httpx.get(f"{n.url}/health", headers=bearer(admin))
                    assert health.status_code == 200  # the load balancer keeps the node
                    body = health.json()
                    return body["redis"] == "down" and body["cluster"]["limits"] == "local"

                asyncio.run(wait_until(local, timeout=30, what=f"{node.name} to notice"))
                metrics = httpx.get(f"{node.url}/metrics", headers=bearer(admin)).text
                assert "\nfortress_cluster_redis_up 0\n" in metrics
            load.until(during + 30)  # served on the last snapshot while Redis is away
            local = [
                httpx.get(f"{c.nodes[0].url}/api/tags", headers=bearer(alone)).status_code for _ in range(3)
            ]
            assert local == [200, 200, 429]  # the node's own counters hold the limit meanwhile
            redis_server.start()
            for node in c.nodes:
                asyncio.run(
                    wait_until(
                        lambda n=node: httpx.get(f"{n.url}/health").json()["redis"] == "up",
                        timeout=30,
                        what=f"{node.name} back on Redis",
                    )
                )
            load.until(len(load.done) + 30)
        finally:
            load.stop()
        assert load.failed == []
        # shared state again: a key made now (published to the empty Redis) and a limit across nodes
        key = c.key("--rate", "2/1h")
        statuses = [httpx.get(f"{n.url}/api/tags", headers=bearer(key)).status_code for n in c.nodes * 2]
        assert statuses.count(200) == 2 and statuses.count(429) == 2, statuses
        done = set(load.done)
        asyncio.run(wait_until(lambda: set(c.usage()) >= done, timeout=60, what="every usage row stored"))


def test_fortress_run_on_the_control_node_adds_the_cluster_process(
    tmp_path: Path, redis_server: RedisServer, sim: Sim
) -> None:
    control = make_fortress(
        tmp_path,
        [("local", sim.url)],
        extra=f'[cluster]\nredis_url = "{redis_server.url}"\nnode_name = "c"\n',
    )
    user = control.cli("user", "add", "alice") and "alice"
    key = control.cli("key", "create", "--user", user).stdout.splitlines()[0].strip()
    run = start([PY, "-m", "fortress", "run", "--config", str(control.config)])
    node = new_node(tmp_path, redis_server.url, "n1")
    try:
        asyncio.run(wait_until(lambda: redis_server.client().get(SNAPSHOT_TAG), what="a publication"))
        node.serve()  # it starts on what the control process published
        assert httpx.get(f"{node.url}/api/tags", headers=bearer(key)).status_code == 200
        assert httpx.get(f"{control.url}/api/tags", headers=bearer(key)).status_code == 200  # its own proxy
    finally:
        node.stop()
        out = stop(run, timeout=60)
    assert "cluster started" in out and "serve started" in out and "admin started" in out
