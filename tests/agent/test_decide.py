"""The balancer's pure decision code (omview/agent/migration/decide.py) and placement.best_node:
speed weighting, the stab factor, hold-offs, memory ushering and rooms, and every switch."""

from __future__ import annotations

import pytest

from omview.agent.migration import decide
from omview.agent.migration.decide import Candidate, Here, Node, Settings
from omview.agent.migration.placement import best_node
from omview.model.cluster import STD_SPEED, NodeInfo

MiB = 1 << 20
GiB = 1 << 30


def here(runnable: float, **kw: object) -> Here:
    args: dict[object, object] = {"id": 1, "cpus": 1, "runnable": runnable, "free": GiB, "total": 2 * GiB}
    args.update(kw)
    return Here(**args)  # type: ignore[arg-type]


def peer(nid: int, runnable: float = 0.0, **kw: object) -> Node:
    args: dict[object, object] = {"id": nid, "cpus": 1, "runnable": runnable, "free": GiB, "total": 2 * GiB}
    args.update(kw)
    return Node(**args)  # type: ignore[arg-type]


def burners(n: int, **kw: object) -> list[Candidate]:
    return [Candidate(id=f"1:{100 + i}", cpu=100.0, rss=10 * MiB, home=1, **kw) for i in range(n)]  # type: ignore[arg-type]


def test_four_burners_on_one_of_two_nodes_move_until_two_and_two() -> None:
    d = decide.decide(here(4), [peer(2)], burners(4))
    assert d.move and d.reason == "load" and d.target == 2
    assert (d.my_load, d.its_load, d.gain) == (400, 0, 4.0)  # 1/4 of a CPU here, a whole one there
    d = decide.decide(here(3), [peer(2, 1)], burners(3))
    assert d.move and d.gain == pytest.approx(1.5)  # 1/3 here, 1/2 there: beats 1.3
    d = decide.decide(here(2), [peer(2, 2)], burners(2))
    assert not d.move and d.reason == "balanced" and d.gain == pytest.approx(2 / 3, abs=1e-3)


def test_three_nodes_six_burners_converge_to_two_each() -> None:
    """The issue's 3/2/1: the node with 3 sends one to the node with 1; 2/2/2 holds everywhere."""
    d = decide.decide(here(3), [peer(2, 2), peer(3, 1)], burners(3))
    assert d.move and d.target == 3
    for me in (1, 2, 3):
        others = [peer(n, 2) for n in (1, 2, 3) if n != me]
        assert not decide.decide(here(2, id=me), others, burners(2)).move


def test_stab_factor_stops_ping_pong_with_mixed_speeds() -> None:
    """A node twice as fast takes a second job (1/2 * 2 = 1 > 1.3 * 1/2), not a third."""
    fast = dict(speed=2 * STD_SPEED)
    assert decide.decide(here(2), [peer(2, 1, **fast)], burners(2)).move
    d = decide.decide(here(1), [peer(2, 2, **fast)], burners(1))
    assert not d.move  # 2/3 of a fast CPU = 1.33 reference CPUs, not 1.3x the 1.0 it gets here
    # with 3 jobs the fast node keeps 2 (a reference CPU each) and the slow one 1: stable both ways
    assert decide.decide(here(3, **fast), [peer(2, 0)], burners(3)).move  # 2/3 here vs 1 there
    assert not decide.decide(here(2, **fast), [peer(2, 1)], burners(2)).move  # 1 here vs 1/2 there
    assert not decide.decide(here(1), [peer(2, 2, **fast)], burners(1)).move


def test_speed_slider_lowest_speed_sheds_every_cpu_bound_job() -> None:
    slow = dict(speed=1)
    for n in (3, 2, 1):
        d = decide.decide(here(n, **slow), [peer(2, 2), peer(3, 2)], burners(n))
        assert d.move and d.reason == "load", n
    # and nothing goes back to it: one reference CPU shared by 3 still beats speed 1 alone
    assert not decide.decide(here(3), [peer(2, 0, speed=1)], burners(3)).move


def test_loads_are_normalised_by_cpus() -> None:
    """A 2-CPU node with 2 runnable processes gives a newcomer 2/3; a 1-CPU node with 1 gives 1/2."""
    d = decide.decide(here(3), [peer(2, 1), peer(3, 2, cpus=2)], burners(3))
    assert d.move and d.target == 3
    assert not decide.decide(here(2, cpus=2), [peer(2, 0)], burners(2)).move  # each has its own CPU


def test_only_cpu_bound_jobs_move_and_hints_decide() -> None:
    idle = [Candidate(id="1:7", cpu=5.0, home=1)]
    d = decide.decide(here(4), [peer(2)], idle)
    assert not d.move and d.reason == "no-candidate"
    d = decide.decide(here(4), [peer(2)], [Candidate(id="1:7", cpu=5.0, hints=("cpujob",), home=1)])
    assert d.move and d.job == "1:7"
    d = decide.decide(here(4), [peer(2)], [Candidate(id="1:7", cpu=100.0, hints=("iojob",), home=1)])
    assert not d.move and d.reason == "no-candidate"
    # the hungriest moves first, ties by job id
    cands = [Candidate(id="1:9", cpu=60.0), Candidate(id="1:8", cpu=90.0), Candidate(id="1:5", cpu=90.0)]
    assert decide.decide(here(4), [peer(2)], cands).job == "1:5"


def test_switches_stay_quiet_lstay_lock_block() -> None:
    assert decide.decide(here(4, stay=True), [peer(2)], burners(4)).reason == "stay"
    assert decide.decide(here(4, quiet=True), [peer(2)], burners(4)).reason == "quiet"
    d = decide.decide(here(4, lstay=True), [peer(2)], burners(4))
    assert not d.move and d.details["held"]["lstay"] == 4
    guest = [Candidate(id="3:5", cpu=100.0, home=3)]
    assert decide.decide(here(4, lstay=True), [peer(2)], burners(3) + guest).job == "3:5"  # guests may go
    d = decide.decide(here(4), [peer(2)], burners(4, lock=True))
    assert not d.move and d.details["held"]["lock"] == 4
    d = decide.decide(here(4), [peer(2, block=True), peer(3, quiet=True), peer(4, up=False)], burners(4))
    assert not d.move and d.reason == "no-target"
    d = decide.decide(here(4), [peer(2, block=True), peer(3, 1)], burners(4))
    assert d.move and d.target == 3


def test_a_young_job_moves_only_when_the_time_it_saves_repays_the_move() -> None:
    """Expected remaining time ~ age: 4 on 1 CPU vs idle = gain 4, saves 3/4 of the age; a 10 MiB move
    costs 0.1 + 0.1 s. At 0.2 s of age it does not pay yet, at 0.3 s it does; 1 GiB takes longer."""
    d = decide.decide(here(4), [peer(2)], burners(4, age=0.2))
    assert not d.move and d.reason == "young" and d.details["cost"] == pytest.approx(0.2)
    assert decide.decide(here(4), [peer(2)], burners(4, age=0.3)).move
    big = [Candidate(id="1:1", cpu=100.0, rss=GiB // 2, home=1, age=5.0)]
    assert decide.decide(here(4), [peer(2)], big).reason == "young"  # 3.75 s saved < 5.22 s cost
    assert decide.decide(here(4), [peer(2)], [*big, *burners(1, age=1.0)]).job == "1:100"  # the next one


def test_hold_off_after_arrival() -> None:
    fresh = burners(4, since_move=5.0)
    d = decide.decide(here(4), [peer(2)], fresh)
    assert not d.move and d.details["held"]["hold-off"] == 4
    assert decide.decide(here(4), [peer(2)], burners(4, since_move=25.0)).move
    assert decide.decide(here(4), [peer(2)], fresh, Settings(hold_off=2.0)).move


def test_memory_ushering_moves_against_load_to_a_node_with_room() -> None:
    """Node 1 has 100 MiB free of 2 GiB (low mark 205 MiB): it sends the smallest job that ends the
    shortage to a node with room, even though that node is busier; never to one without room."""
    jobs = [Candidate(id="1:1", cpu=100.0, rss=50 * MiB, home=1), Candidate(id="1:2", cpu=0.0, rss=900 * MiB, home=1),
            Candidate(id="1:3", cpu=0.0, rss=300 * MiB, home=1)]  # fmt: skip
    me = here(1, free=100 * MiB)
    full = peer(2, 0, free=400 * MiB)  # idle but would fall short with any job over 195 MiB
    roomy = peer(3, 3, free=1800 * MiB)  # busy, plenty of room
    d = decide.decide(me, [full, roomy], jobs)
    assert d.move and d.reason == "memory" and d.job == "1:3" and d.target == 3
    assert d.details["rss"] == 300 * MiB
    d = decide.decide(me, [full], jobs)  # only the 50 MiB job fits there, and it does not end the shortage
    assert d.move and d.job == "1:1" and d.target == 2
    d = decide.decide(me, [peer(2, 0, free=210 * MiB)], jobs[1:])
    assert not d.move and d.reason == "no-room"


def test_load_moves_need_room_too() -> None:
    big = [Candidate(id="1:1", cpu=100.0, rss=1500 * MiB, home=1)] + burners(3)
    d = decide.decide(here(4), [peer(2, 0, free=GiB)], big)
    assert d.move and d.job == "1:100"  # the hungriest (tie by id: 1:1) fits nowhere: the next one goes
    d = decide.decide(here(4), [peer(2, 0, free=GiB)], big[:1])
    assert not d.move and d.reason == "no-target"
    assert decide.has_room(peer(2, free=GiB), 800 * MiB) and not decide.has_room(peer(2, free=GiB), 900 * MiB)


def test_decision_is_deterministic_and_serialisable() -> None:
    a = decide.decide(here(4), [peer(3), peer(2)], burners(4))
    b = decide.decide(here(4), [peer(2), peer(3)], list(reversed(burners(4))))
    assert a == b and a.target == 2 and a.job == "1:100"
    d = a.to_dict()
    assert {"action", "reason", "text", "job", "target", "my_load", "its_load", "gain"} <= set(d)
    assert "moves job 1:100" in d["text"] and "expected 4.00x" in d["text"]


def info(nid: int, load: int, **kw: object) -> NodeInfo:
    args: dict[str, object] = {"id": nid, "address": f"10.0.0.{nid}", "status": "up", "load": load, "cpus": 1,
                               "mem": GiB, "tmem": 2 * GiB}  # fmt: skip
    args.update(kw)
    return NodeInfo(**args)  # type: ignore[arg-type]


def test_best_node_weighs_speed_cpus_and_memory() -> None:
    nodes = {1: info(1, 300), 2: info(2, 100), 3: info(3, 0, speed=6000), 4: info(4, 100, cpus=4)}
    assert best_node(nodes, 1) == 4  # 4 CPUs, 1 runnable: a whole CPU, at full speed
    assert best_node(nodes, 1, rss=800 * MiB) == 4
    assert best_node(nodes, 1, rss=900 * MiB) == 1  # 1 GiB free - 900 MiB is below the low mark anywhere
    nodes[4] = info(4, 100, cpus=4, mem=300 * MiB)
    assert best_node(nodes, 1, rss=200 * MiB) == 3  # node 4 has no room; 0.6 speed but idle beats 1/2 (node 2)
    assert best_node(nodes, 1, rss=5 * GiB) == 1  # nowhere has room: it stays
    assert best_node({1: info(1, 100), 2: info(2, 100)}, 1) == 1  # 1/2 there is not better than 1 here
    assert best_node(nodes, 1, allowed={2}) == 2
    assert best_node(nodes, -1, allowed={2, 3}) == 3  # a new job (launch) picks among ALLOWED
    nodes[3] = info(3, 0, speed=6000, block=True)
    assert best_node(nodes, 1, rss=200 * MiB) == 2
