"""Gossip datagram security against real agents: forged, replayed, stale and junk datagrams.

The test builds datagrams itself from the format in docs/agent.md (MAGIC | HMAC-SHA256 | JSON),
so the documented format is what is tested, not the agent's own encoder.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import time
from typing import Any

from tests.support.agents import Cluster, wait_for

MAGIC = b"OMV1"


def read_key(path: str) -> bytes:
    with open(path, encoding="ascii") as fh:
        return bytes.fromhex(fh.read().strip())


def datagram(key: bytes, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    return MAGIC + hmac.new(key, MAGIC + body, hashlib.sha256).digest() + body


def info_payload(
    node: int, addr: str, seq: int, load: int, *, ts: float | None = None, boot: str = "feedfacecafe"
) -> dict[str, Any]:
    return {
        "t": "info",
        "node": node,
        "addr": addr,
        "boot": boot,
        "seq": seq,
        "ts": time.time() if ts is None else ts,
        "info": {"id": node, "address": addr, "hostname": "fake3", "load": load, "speed": 4321, "cpus": 8},
    }


def gossip_stats(agent) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with agent.client() as c:
        return dict(c.call("node.stats")["gossip"])


def row(agent, node: int):  # type: ignore[no-untyped-def]
    with agent.client() as c:
        return next(n for n in c.nodes() if n.id == node)


def test_forged_replayed_stale_and_junk_are_dropped(cluster_factory) -> None:  # type: ignore[no-untyped-def]
    cl: Cluster = cluster_factory(3, down_after=30.0)
    a1, a2, _ = cl.agents
    a1.start()
    a2.start()  # node 3 (127.0.0.4) is played by this test
    key = read_key(cl.key)
    target = (a1.settings["address"], cl.port)
    fake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fake.bind(("127.0.0.4", cl.port))  # node 3's address and port: we also receive what agents send it
    fake.settimeout(5)
    try:
        base = gossip_stats(a1)

        # forged: right format, wrong key -> dropped, counted, table unchanged
        fake.sendto(datagram(os.urandom(32), info_payload(3, "127.0.0.4", 1, 777)), target)
        wait_for(lambda: gossip_stats(a1)["forged"] == base["forged"] + 1, 5, "forged datagram counted")
        r = row(a1, 3)
        assert r.status == "down" and r.load == 0 and r.age == -1.0

        # a tampered valid datagram (one byte of the body changed) is forged too
        good = datagram(key, info_payload(3, "127.0.0.4", 1, 777))
        tampered = good[:-3] + (b"8" if good[-3:-2] != b"8" else b"9") + good[-2:]
        fake.sendto(tampered, target)
        wait_for(lambda: gossip_stats(a1)["forged"] == base["forged"] + 2, 5, "tampered datagram counted")

        # genuine: accepted, node 3 appears with what it said
        fake.sendto(good, target)
        wait_for(lambda: row(a1, 3).up, 5, "node 3 up after a genuine datagram")
        r = row(a1, 3)
        assert (r.load, r.speed, r.cpus, r.hostname) == (777, 4321, 8, "fake3")
        fake.sendto(datagram(key, info_payload(3, "127.0.0.4", 2, 555)), target)
        wait_for(lambda: row(a1, 3).load == 555, 5, "second genuine datagram taken")

        # replayed: the first datagram again, byte for byte -> dropped, load stays 555
        s0 = gossip_stats(a1)
        fake.sendto(good, target)
        wait_for(lambda: gossip_stats(a1)["replayed"] == s0["replayed"] + 1, 5, "replay counted")
        assert row(a1, 3).load == 555

        # stale: properly signed and new, but the timestamp is two minutes old
        fake.sendto(datagram(key, info_payload(3, "127.0.0.4", 3, 111, ts=time.time() - 120)), target)
        wait_for(lambda: gossip_stats(a1)["stale"] == s0["stale"] + 1, 5, "stale datagram counted")
        fake.sendto(datagram(key, info_payload(3, "127.0.0.4", 4, 222, ts=time.time() + 120)), target)
        wait_for(lambda: gossip_stats(a1)["stale"] == s0["stale"] + 2, 5, "future datagram counted")
        assert row(a1, 3).load == 555

        # junk: not ours at all, or signed garbage
        fake.sendto(os.urandom(200), target)
        fake.sendto(datagram(key, {"t": "info", "node": "three"}), target)
        wait_for(lambda: gossip_stats(a1)["malformed"] == s0["malformed"] + 2, 5, "junk counted")

        # a signed datagram claiming node 3 but from an address the map does not give node 3
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.bind(("127.0.0.9", 0))
        other.sendto(datagram(key, info_payload(3, "127.0.0.4", 10, 999)), target)
        other.close()
        wait_for(
            lambda: gossip_stats(a1)["unknown_sender"] == s0["unknown_sender"] + 1,
            5,
            "unknown sender counted",
        )
        assert row(a1, 3).load == 555

        # a real datagram captured on the wire and replayed later: node 1 -> node 3, replayed to node 2
        captured = None
        deadline = time.monotonic() + 10
        while captured is None and time.monotonic() < deadline:
            data, src = fake.recvfrom(65536)
            if src[0] == a1.settings["address"] and data.startswith(MAGIC):
                captured = data
        assert captured is not None, "node 1 never gossiped to node 3"
        # wait until node 2 has certainly accepted newer datagrams from node 1 (1/s)
        seq_captured = json.loads(captured[36:])["seq"]
        with a1.client() as c:
            wait_for(
                lambda: c.call("node.stats")["seq"] > seq_captured + 3, 10, "node 1 sent newer datagrams"
            )
        time.sleep(1.5)
        before = gossip_stats(a2)
        table_before = {n.id: (n.status, n.load) for n in a2.client().nodes()}
        spoof = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        spoof.bind((a1.settings["address"], 0))  # same source address as node 1
        spoof.sendto(captured, (a2.settings["address"], cl.port))
        spoof.close()
        wait_for(lambda: gossip_stats(a2)["replayed"] == before["replayed"] + 1, 5, "captured replay counted")
        assert gossip_stats(a2)["forged"] == before["forged"]
        assert {n.id: n.status for n in a2.client().nodes()} == {k: v[0] for k, v in table_before.items()}
    finally:
        fake.close()
