"""Automatic balancing on a 3-node namespace cluster of 1 CPU per node (issue 12): the white paper's
test (4 burners on node 1 of 2 -> 2+2 within 20 s, then no move for 60 s), 6 burners -> 2/2/2 within
45 s, the speed slider (node 2 at the lowest speed sheds its burners), stay (nothing leaves node 1),
memory ushering (a node short of memory sends its big job to the node with room, never to one
without), and mosctl balancer showing why. One cluster for the module; each test ends its jobs."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from omview.testbed import Cluster, teardown
from tests.conftest import _STATE_DIRS, require_root
from tests.migration.helpers import PY, Deputy, call, migrate, wait

pytestmark = pytest.mark.cluster

BURN = [PY, "-c", "while True: pass"]
#: a job of N MiB resident that sleeps (never CPU-bound: only memory can make it move)
BIG = [PY, "-c", "import sys, time\nb = bytearray(b'x') * (int(sys.argv[1]) << 20)\nprint('ready', flush=True)\n"
       "while True: time.sleep(1)"]  # fmt: skip
MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_root()
    state = tmp_path_factory.mktemp("balance")
    _STATE_DIRS.append(state)
    try:
        c = Cluster.up(state, 3, cpus_per_node=1)
        # equal nodes: each agent calibrated its own speed at start, and on a shared machine they
        # differ by up to 40 % (8928 against 12699 seen in CI); then 4 burners on the fast node
        # against 2 on the slow one is already balanced and 3/0/3 never comes
        for n in (1, 2, 3):
            mosctl(c, n, "setspeed", "10000")
        wait(lambda: all(int(n["speed"]) == 10000 for v in (1, 2, 3) for n in call(c, v, "cluster.nodes")), 20,
             "every node to see every speed at 10000")  # fmt: skip
        yield c
    finally:
        teardown(state)


def where(c: Cluster, d: Deputy) -> int:
    return int(call(c, d.node, "job.status", job=d.job)["where"])


def placement(c: Cluster, deps: list[Deputy]) -> list[int]:
    """How many of DEPS run on nodes 1, 2, 3."""
    places = [where(c, d) for d in deps]
    return [places.count(n) for n in (1, 2, 3)]


def nmigs(c: Cluster) -> int:
    return sum(int(call(c, n, "migration.history", limit=1)["nmigs"]) for n in (1, 2, 3))


def decisions(c: Cluster, node: int) -> list[dict[str, Any]]:
    r = c.exec(node, ["mosctl", "--json", "balancer", "100"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout)["decisions"])


def mosctl(c: Cluster, node: int, *args: str) -> None:
    c.exec(node, ["mosctl", *args], check=True, timeout=30)


def seen_by(c: Cluster, viewer: int, node: int, key: str) -> Any:
    return {n["id"]: n for n in call(c, viewer, "cluster.nodes")}[node][key]


def start(c: Cluster, node: int, n: int, argv: list[str] = BURN, opts: list[str] | None = None) -> list[Deputy]:
    deps: list[Deputy] = []
    try:
        for _ in range(n):
            deps.append(Deputy(c, node, argv, opts))
        for d in deps:
            d.wait_started(pred=lambda st: st["pid"] > 0)
    except BaseException:
        for d in deps:
            d.kill()
        raise
    return deps


def wait_placement(c: Cluster, deps: list[Deputy], ok: Callable[[list[int]], bool], timeout: float,
                   what: str) -> None:
    """Wait for a placement OK accepts; on timeout say where the jobs are, how often each moved, and
    what every node's balancer last decided (a hold's reason is the why)."""
    try:
        wait(lambda: ok(placement(c, deps)), timeout, what, every=0.5)
    except AssertionError as exc:
        moves = [int(call(c, d.node, "job.status", job=d.job).get("nmigs", -1)) for d in deps]
        last = {n: [(d["action"], d["reason"], d.get("text", "")) for d in decisions(c, n)[-3:]] for n in (1, 2, 3)}
        raise AssertionError(f"{exc}: placement {placement(c, deps)}, migrations per job {moves}, "
                             f"last decisions {last}") from None


def hold_still(c: Cluster, deps: list[Deputy], seconds: float, expect: list[int]) -> None:
    """No job of DEPS moves, and no migration happens anywhere, for SECONDS."""
    before = nmigs(c)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert placement(c, deps) == expect
        time.sleep(2)
    assert nmigs(c) == before, "a migration happened while the cluster was balanced"


def test_two_nodes_four_burners_spread_within_20s_and_stay_put_for_60s(cluster: Cluster) -> None:
    """The white paper's test, on nodes 1 and 2 (node 3 blocks arrivals)."""
    mosctl(cluster, 3, "block")
    wait(lambda: seen_by(cluster, 1, 3, "block"), 10, "node 1 to see node 3's block")
    deps = start(cluster, 1, 4)
    try:
        t0 = time.monotonic()
        wait_placement(cluster, deps, lambda p: p == [2, 2, 0], 20, "2 burners on each of nodes 1 and 2 within 20 s")
        took = time.monotonic() - t0
        hold_still(cluster, deps, 60, [2, 2, 0])
        moves = [d for d in decisions(cluster, 1) if d["action"] == "move"]
        assert len(moves) == 2 and {d["reason"] for d in moves} == {"load"} and {d["target"] for d in moves} == {2}
        for m in moves:  # my load, its load, expected gain: the reasons are there
            assert m["result"] == "ok" and float(m["gain"]) > 1.4 and int(m["my_load"]) > int(m["its_load"])
            assert re.search(r"moves job 1:\d+ \(CPU \d+%\) to node 2", str(m["text"]))
        last = decisions(cluster, 1)[-1]
        assert last["action"] == "hold" and last["reason"] == "balanced", last
        text = cluster.exec(1, ["mosctl", "balancer", "3"], capture_output=True, text=True, timeout=30).stdout
        assert "automatic balancing on, 2 move(s)" in text and "is balanced" in text, text
        print(f"4 burners spread 2+2 in {took:.1f} s")
    finally:
        for d in deps:
            d.kill()
        mosctl(cluster, 3, "noblock")
    wait(lambda: not seen_by(cluster, 1, 3, "block"), 10, "node 1 to see node 3 unblocked")


def test_six_burners_on_three_nodes_then_speed_slider_then_stay(cluster: Cluster) -> None:
    deps = start(cluster, 1, 6)
    try:
        t0 = time.monotonic()
        wait_placement(cluster, deps, lambda p: p == [2, 2, 2], 45, "2/2/2 within 45 s")
        print(f"6 burners spread 2/2/2 in {time.monotonic() - t0:.1f} s")
        hold_still(cluster, deps, 15, [2, 2, 2])
        # the speed slider: node 2 at the lowest speed sends its CPU-bound jobs away, and gets none back
        mosctl(cluster, 2, "setspeed", "1")
        wait_placement(cluster, deps, lambda p: p == [3, 0, 3], 60, "node 2's burners to leave")
        assert {d["reason"] for d in decisions(cluster, 2) if d["action"] == "move"} == {"load"}
        hold_still(cluster, deps, 10, [3, 0, 3])
        # stay on node 1: with node 2 back at full speed, node 3 sends it a burner, node 1 sends nothing
        mosctl(cluster, 1, "stay")
        mosctl(cluster, 2, "setspeed", "10000")
        wait_placement(cluster, deps, lambda p: p[1] >= 1, 60, "node 3 to send node 2 a burner")
        end = time.monotonic() + 10
        while time.monotonic() < end:
            assert placement(cluster, deps)[0] == 3, "stay: a burner left node 1"
            time.sleep(1)
        last = decisions(cluster, 1)[-1]
        assert last["action"] == "hold" and last["reason"] == "stay", last
    finally:
        for d in deps:
            d.kill()
        mosctl(cluster, 1, "nostay")
        mosctl(cluster, 2, "setspeed", "10000")


def set_memory(c: Cluster, node: int, budget: int) -> None:
    """Give NODE's agent a memory budget (agent.toml memory, as on a small machine) and restart it."""
    toml = Path(c.node(node).dir) / "etc-omview" / "agent.toml"
    toml.write_text(re.sub(r"(?m)^memory = \d+$", f"memory = {budget}", toml.read_text()))
    c.agent_restart(node, timeout=60)


def test_memory_ushering_sends_a_big_job_only_where_it_fits(cluster: Cluster) -> None:
    """Nodes 1 and 3 get a 512 MiB budget, node 2 keeps 2 GiB. A job 40 MiB bigger than what node 1
    or node 3 has free over-commits node 1; node 3 is idle but has no room, node 2 is busy but roomy:
    the job goes to node 2, never to node 3, and `migrate best` will not send it anywhere it does not fit."""
    for n in (1, 3):
        set_memory(cluster, n, 512 * MiB)
    wait(lambda: all(int(seen_by(cluster, 2, n, "tmem")) == 512 * MiB for n in (1, 3)), 20,
         "the new memory budgets in the gossip")  # fmt: skip
    time.sleep(2)  # a few samples of the restarted agents
    size = max(int(call(cluster, n, "node.info")["mem"]) for n in (1, 3)) // MiB + 40
    old = len(call(cluster, 1, "migration.history", limit=200)["migrations"])
    busy = start(cluster, 2, 1, opts=["--nomig"])  # node 2 is the slower choice for load alone
    big: list[Deputy] = []
    try:
        big = start(cluster, 1, 1, [*BIG, str(size)])
        job = big[0]
        try:
            wait(lambda: where(cluster, job) != 1, 60, "the big job to leave node 1", every=0.5)
        except AssertionError as exc:
            info = call(cluster, 1, "node.info")
            raise AssertionError(f"{exc}; node 1 tmem {info['tmem']} mem {info['mem']}, decisions "
                                 f"{decisions(cluster, 1)[-3:]}") from None  # fmt: skip
        assert where(cluster, job) == 2
        moved = [d for d in decisions(cluster, 1) if d["action"] == "move"]
        assert [(d["reason"], d["target"]) for d in moved] == [("memory", 2)], moved
        assert "short of memory" in str(moved[0]["text"])
        r = migrate(cluster, 1, job.pid, "best")  # node 3 has no room, node 1 would be short again
        assert r.returncode == 3 and "best node" in r.stderr, r.stdout + r.stderr
        time.sleep(5)
        assert where(cluster, job) == 2
        hist = call(cluster, 1, "migration.history", limit=200)["migrations"][old:]
        assert [(h["target"], h["reason"], h["result"]) for h in hist] == [(2, "balance", "ok")], hist
    finally:
        for d in big + busy:
            d.kill()
