"""L2 agent: the Agent, tying sampler, gossip, state and server together and serving every op in
protocol.OPS. /proc work runs in one worker thread; all state changes happen on the asyncio loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from omview import __version__
from omview.agent.config import AgentConfig
from omview.agent.jobops import JobOps
from omview.agent.jobs.awaystats import StatsReporter
from omview.agent.jobs.procctl import ProcCtl
from omview.agent.jobs.rows import group_jobs
from omview.agent.jobs.run import JobManager, become_subreaper
from omview.agent.jobs.table import JobStore
from omview.agent.migration.balancer import Balancer
from omview.agent.migration.common import Env
from omview.agent.migration.faults import FaultHooks
from omview.agent.migration.source import SourceSide
from omview.agent.migration.target import TargetSide
from omview.agent.node import calibrate, movable
from omview.agent.node.procs import CriuProbe, ProcessLister, process_row, real_uid
from omview.agent.node.sampler import Sample, Sampler, Scope
from omview.agent.node.state import FlagError, StateStore, validate_flag
from omview.agent.peers import membership, pidcheck
from omview.agent.peers.gossip import Codec, Gossip, load_key
from omview.agent.peers.links import PeerLinks
from omview.agent.peers.membership import Membership
from omview.agent.server import Connection, Handler, OpFault, Server
from omview.model import protocol
from omview.model.cluster import Flags, NodeInfo, ProcessInfo, proc_table
from omview.model.errors import ConfigError
from omview.model.mapfile import MapEntry
from omview.model.procfs import read_stat
from omview.model.protocol import FaultCode, Request

log = logging.getLogger(__name__)

EVENTS = (
    "node.up", "node.down", "node.joined", "flags.changed", "map.changed",
    "job.started", "job.output", "job.exit", "job.moved", "job.host",
    "migration.started", "migration.phase", "migration.done", "migration.failed",
)  # fmt: skip
#: events only root and the job's owner receive, as only they may read the same data with an op
#: (job.output is "own"); every other event is what open ops show anyone (cluster.nodes, flags.get,
#: cluster.map, job.list, migration.history)
OWNER_ONLY_EVENTS = frozenset({"job.output"})
LOCK_PRUNE_EVERY = 10  # ticks
JOB_TICK = 0.2  # seconds between job watcher rounds (output latency, exit detection)
HOST_CHECK = 2.0  # seconds between checks of the nodes that host this node's jobs (jobs/hostwatch.py)
#: a graceful stop waits this long for its guests to leave before it stops anyway
EXPEL_ON_STOP_TIMEOUT = 120.0


def initial_membership(cfg: AgentConfig, store: StateStore) -> Membership:
    """A map set with ``setpe -w`` (persisted) wins over agent.toml; otherwise the config decides."""
    saved = store.load_map()
    if saved is not None:
        entries, source = saved
        log.info("using the map set by setpe -w (from %s), kept in %s", source, store.dir)
        return membership.from_map(entries, source=source, cfg=cfg)
    return membership.configured(cfg)


class Agent:
    """One node's agent."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.codec = Codec(load_key(cfg.key_file))
        self.store = StateStore(cfg.state_dir)
        flags = self.store.load_flags()
        if flags is None:
            speed = calibrate.measure()
            log.info("calibrated this node's speed: %d (STD_SPEED 10000 = reference CPU)", speed)
            flags = Flags(speed=speed)
            self.store.save_flags(flags)
        self.flags = flags
        self.locks = self.store.load_locks()
        self.membership = initial_membership(cfg, self.store)
        self.scope = Scope(cfg.process_scope)
        self.sampler = Sampler(self.scope, cpus=cfg.cpus, memory=cfg.memory)
        self.criu = CriuProbe(cfg.criu)
        self.lister = ProcessLister(self.scope, self.criu)
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="omview-sampler")
        self.server = Server(
            cfg.socket, self.dispatch, request_timeout=cfg.request_timeout, max_clients=cfg.max_clients,
            max_clients_per_user=cfg.max_clients_per_user,
        )  # fmt: skip
        self.gossip = Gossip(
            codec=self.codec,
            port=cfg.port,
            group=cfg.multicast_group,
            fanout=cfg.gossip_fanout,
            down_after=cfg.down_after,
            on_event=self.publish,
        )
        self.hostname = socket.gethostname()
        self.warnings = membership.address_warnings(self.hostname, self.membership.address)
        for text in self.warnings:
            log.warning("%s", text)
        self.sample: Sample | None = None
        self.started = time.monotonic()
        self.nodes_snapshot: dict[int, NodeInfo] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.jobstore = JobStore(cfg.state_dir)
        self.peers = PeerLinks(self._peer_address, os.path.join(os.path.dirname(cfg.socket), "peers"))
        self.jobs = JobManager(
            store=self.jobstore, peers=self.peers, node_id=lambda: self.membership.node_id,
            publish=self.publish_threadsafe, log_dir=os.path.join(cfg.state_dir, "logs"),
        )  # fmt: skip
        self.stats_reporter = StatsReporter(self.jobstore, lambda: self.membership.node_id, self.jobs.deliver)
        self.faults = FaultHooks(cfg.state_dir, enabled=cfg.test_mode)
        env = Env(
            state_dir=cfg.state_dir, node_id=lambda: self.membership.node_id, nodes=self.fresh_nodes,
            blocked=lambda: self.flags.block, criu=self._criu_path, publish=self.publish_threadsafe,
            faults=self.faults,
        )  # fmt: skip
        self.target_side = TargetSide(env, self.jobstore, self.peers.sock_dir)
        self.source_side = SourceSide(env, self.jobstore, self.jobs, self.peers, expecting=self.target_side.expecting)
        self.job_pool = ThreadPoolExecutor(8, thread_name_prefix="omview-jobs")
        # procs.list's "pid N in use on node M": the peer's last answer, asked again on the job pool
        self.pid_check = pidcheck.PidCheck(self.peers.call, self.job_pool, lambda: self.membership.node_id)
        self.watch_pool = ThreadPoolExecutor(1, thread_name_prefix="omview-jobwatch")
        self.balancer = Balancer(
            enabled=cfg.balance, node=self, store=self.jobstore, jobs=self.jobs, source=self.source_side,
            pool=self.job_pool,
        )
        self.job_ops = JobOps(
            node=self, store=self.jobstore, jobs=self.jobs, peers=self.peers, lister=self.lister,
            source=self.source_side, target=self.target_side, balancer=self.balancer, pool=self.job_pool,
            worker=self.worker, criu=self._criu_path,
        )
        self._stop: asyncio.Event | None = None
        self._ticks = 0
        self._ops: dict[str, Handler] = {
            "hello": self.op_hello,
            "ping": self.op_ping,
            "node.info": self.op_node_info,
            "node.stats": self.op_node_stats,
            "cluster.nodes": self.op_cluster_nodes,
            "cluster.map": self.op_cluster_map,
            "cluster.whois": self.op_cluster_whois,
            "map.set": self.op_map_set,
            "map.off": self.op_map_off,
            "flags.get": self.op_flags_get,
            "flags.set": self.op_flags_set,
            "procs.list": self.op_procs_list,
            "proc.lock": self.op_proc_lock,
            "events.subscribe": self.op_events_subscribe,
            "events.unsubscribe": self.op_events_unsubscribe,
        }
        self._ops.update(self.job_ops.table())
        self._ops.update(ProcCtl(node=self, scope=self.scope, jobs=self.jobs, peers=self.peers,
                                 pool=self.job_pool).table())  # fmt: skip
        missing = set(protocol.OPS) - set(self._ops)
        assert not missing, f"operations without a handler: {missing}"

    # lifecycle ---------------------------------------------------------------------------

    @property
    def node_id(self) -> int:
        """This node's ID (NodeView, for the balancer and the job operations)."""
        return self.membership.node_id

    def request_stop(self) -> None:
        """Signal-safe: only sets a flag the main loop waits on."""
        if self._stop is not None:
            self._stop.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        """SIGTERM, SIGINT and SIGHUP all stop cleanly (leave datagram, socket and PID file removed).
        SIGHUP does not reload: the socket, state directory and UDP port cannot change under live
        clients and jobs; a closed terminal of a foreground agent sends it too."""
        if self._stop is not None and not self._stop.is_set():
            log.info("%s received: stopping%s", sig.name,
                     " (SIGHUP stops the agent; restart it to read a changed configuration)"
                     if sig == signal.SIGHUP else "")  # fmt: skip
        self.request_stop()

    def _criu_path(self) -> str | None:
        status = self.criu.status
        return status.path if status.ok else None

    def _peer_address(self, node: int) -> str | None:
        info = self.nodes_snapshot.get(node)
        if info is not None and info.address:
            return info.address
        peers = self.membership.peers.get(node)
        return peers[0] if peers else None

    def publish_threadsafe(self, name: str, data: dict[str, Any]) -> None:
        """publish() from any thread (migrations and the job watcher run in worker threads)."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            self.publish(name, data)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed while we stopped
                self._loop.call_soon_threadsafe(self.publish, name, data)

    def _snapshot_nodes(self) -> dict[int, NodeInfo]:
        self.nodes_snapshot = {n.id: n for n in self.gossip.nodes(self.self_info())}
        return self.nodes_snapshot

    def fresh_nodes(self) -> dict[int, NodeInfo]:
        """The cluster table right now, from any thread (the gossip table lives on the loop)."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            return self._snapshot_nodes()
        fut: concurrent.futures.Future[dict[int, NodeInfo]] = concurrent.futures.Future()

        def take() -> None:
            try:
                fut.set_result(self._snapshot_nodes())
            except Exception as exc:  # pragma: no cover - defensive
                fut.set_exception(exc)

        try:
            loop.call_soon_threadsafe(take)
            return fut.result(timeout=5)
        except (RuntimeError, concurrent.futures.TimeoutError):
            return self.nodes_snapshot

    async def _job_loop(self) -> None:
        loop = asyncio.get_running_loop()
        host_check: asyncio.Future[None] | None = None
        next_host_check = 0.0
        while True:
            await asyncio.sleep(JOB_TICK)
            try:  # an agent without jobs: no thread hop (two wake-ups of the loop) 5 times a second
                if self.jobs.has_work():
                    await loop.run_in_executor(self.watch_pool, self.jobs.tick)
            except Exception:
                log.exception("job watcher failed")
            # a job's hosting node gone down or back (a peer call, seconds over a new link): in a
            # thread of its own, so the watcher's output relay never waits for it
            if (host_check is None or host_check.done()) and time.monotonic() >= next_host_check:
                next_host_check = time.monotonic() + HOST_CHECK
                host_check = loop.run_in_executor(None, self._check_hosts, dict(self.nodes_snapshot))
            try:  # soon after a job starts or arrives; non-blocking: the links open in the background
                self.source_side.warm_links(self.nodes_snapshot)
            except Exception:
                log.exception("warming up peer links failed")

    def _check_hosts(self, nodes: dict[int, NodeInfo]) -> None:
        """Jobs whose hosting node, and arrivals whose source node, went down (a machine that died)."""
        try:
            self.jobs.hosts.check(nodes, frozenset(self.jobs.migrating))
        except Exception:
            log.exception("checking the nodes that host our jobs failed")
        try:
            self.target_side.abort_orphans(nodes)
        except Exception:
            log.exception("checking arrivals from nodes that went down failed")

    async def _expel_on_stop(self) -> None:
        """openMosix: a node halted gracefully sends its guests home first."""
        me = self.membership.node_id
        if not any(j.where == me and j.home != me and j.state == "running" for j in self.jobstore.all()):
            return
        log.info("stopping: sending guest jobs away first")
        loop = asyncio.get_running_loop()
        try:
            report = await asyncio.wait_for(
                loop.run_in_executor(self.job_pool, self.job_ops.expel_all), EXPEL_ON_STOP_TIMEOUT
            )
            log.info("%s", report["message"])
        except TimeoutError:
            log.error("guests did not all leave within %.0f s; stopping anyway", EXPEL_ON_STOP_TIMEOUT)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        with contextlib.suppress(OSError):
            os.chdir("/")  # a daemon's cwd must live in its own mount namespace (CRIU mounts /proc there)
        if not become_subreaper():
            log.warning("cannot become a child subreaper; jobs restored here cannot be waited for directly")
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        # first: refuses to start when another agent serves the socket; but no request is answered
        # before the first measurement, so no client ever sees a node with 0 bytes of memory
        await self.server.start(serving=False)
        try:
            self.gossip.configure(self.membership, loop)
        except BaseException:
            await self.server.stop()
            raise
        try:
            self.sample = await loop.run_in_executor(self.worker, self.sampler.sample, self.flags)
            await self.server.serve()
            loop.run_in_executor(None, self.criu.check)
            m = self.membership
            log.info(
                "omview agent %s: node %d at %s (%s), %d known peers, socket %s, scope %s, speed %d",
                __version__, m.node_id, m.address, m.mode, len(self.gossip.peers()), self.cfg.socket,
                self.cfg.process_scope, self.flags.speed,
            )  # fmt: skip
            self.faults.check_at_start()
            self.gossip.tick(self.self_info().to_dict())  # announce to every known peer right away
            self._snapshot_nodes()
            ticker = asyncio.create_task(self._tick_loop())
            jobtick = asyncio.create_task(self._job_loop())
            loop.run_in_executor(self.job_pool, self.source_side.recover)
            await self._stop.wait()
            await self._expel_on_stop()
            log.info("stopping: telling the cluster this node leaves")
            for task in (ticker, jobtick):
                task.cancel()
            await asyncio.gather(ticker, jobtick, return_exceptions=True)
            self.gossip.announce_leaving()
        finally:
            await self.server.stop()
            self.gossip.close()
            self.worker.shutdown(wait=False, cancel_futures=True)
            self.watch_pool.shutdown(wait=False, cancel_futures=True)
            self.job_pool.shutdown(wait=False, cancel_futures=True)
            self.peers.close()
        log.info("stopped")

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += 1.0
            delay = next_at - loop.time()
            if delay < 0:  # we fell behind (suspended VM, overloaded host): do not catch up in a burst
                next_at = loop.time()
                delay = 0.0
            await asyncio.sleep(delay)
            try:
                self.sample = await loop.run_in_executor(self.worker, self.sampler.sample, self.flags)
                self._ticks += 1
                if self._ticks % LOCK_PRUNE_EVERY == 0:
                    self._prune_locks()
            except Exception:
                log.exception("sampling failed; keeping the previous measurement")
            if self.sample is not None:  # guests' programs to their home nodes (a peer call: not here)
                loop.run_in_executor(self.job_pool, self._report_stats, self.sample.cpu)
            try:
                self.gossip.tick(self.self_info().to_dict())
                self._snapshot_nodes()
            except Exception:
                log.exception("gossip tick failed")
            self.balancer.tick()

    def _report_stats(self, cpu: dict[tuple[int, int], float]) -> None:
        try:
            self.stats_reporter.report(cpu)
        except Exception:
            log.exception("reporting guest jobs' stats to their home nodes failed")

    def _prune_locks(self) -> None:
        if self.sample is None or not self.locks:
            return
        alive = self.locks & self.sample.live
        if alive != self.locks:
            self.locks = alive
            try:
                self.store.save_locks(self.locks)
            except OSError as exc:
                log.error("cannot save process locks: %s", exc)

    def publish(self, name: str, data: dict[str, Any]) -> None:
        if name in ("node.up", "node.down", "node.joined"):
            log.info("%s: node %s (%s)%s", name, data.get("node"), data.get("address"),
                     f", {data['reason']}" if "reason" in data else "")  # fmt: skip
        if name.startswith("node.") and self._loop is not None:
            self._snapshot_nodes()  # migrations and launches must not see a node down that just came up
        owner: int | None = None
        if name in OWNER_ONLY_EVENTS or name not in EVENTS:  # an event nobody classified: root only
            job = self.jobstore.get(str(data.get("job"))) if name in OWNER_ONLY_EVENTS else None
            owner = job.uid if job is not None else 0
        self.server.publish(name, data, owner=owner)

    # records -----------------------------------------------------------------------------

    def self_info(self) -> NodeInfo:
        s, f, m = self.sample, self.flags, self.membership
        return NodeInfo(
            id=m.node_id,
            address=m.address,
            status="up",
            hostname=self.hostname,
            load=s.load if s else 0,
            speed=f.speed,
            cpus=s.cpus if s else self.sampler.cpu_count(),
            tmem=s.tmem if s else 0,
            mem=s.mem if s else 0,
            rmem=s.rmem if s else 0,
            util=s.util if s else 0,
            age=0.0,
            block=f.block,
            quiet=f.quiet,
            stay=f.stay,
            protocol=protocol.PROTOCOL_VERSION,
            version=__version__,
        )

    def map_reply(self) -> dict[str, Any]:
        m = self.membership
        if m.mode == "map":
            entries = [e.to_dict() for e in m.entries]
        elif m.mode == "discovery":
            rows = {m.node_id: m.address}
            rows.update({e.id: e.address for e in self.gossip.table.entries.values()})
            entries = [MapEntry(n, a, 1).to_dict() for n, a in sorted(rows.items())]
        else:
            entries = []
        return {"node": m.node_id, "mode": m.mode, "entries": entries, "source": m.source}

    # dispatch ----------------------------------------------------------------------------

    async def dispatch(self, conn: Connection, req: Request) -> Any:
        return await self._ops[req.op](conn, req.args)

    async def op_hello(self, conn: Connection, args: dict[str, Any]) -> Any:
        if args["protocol"] != protocol.PROTOCOL_VERSION:
            raise OpFault(
                FaultCode.VERSION_MISMATCH,
                f"client speaks protocol {args['protocol']}, this agent (omview {__version__}) speaks protocol "
                f"{protocol.PROTOCOL_VERSION}; install the same omview version on both sides",
            )
        conn.handshaken = True
        conn.client = args.get("client", "")
        return {
            "protocol": protocol.PROTOCOL_VERSION,
            "agent": __version__,
            "node": self.membership.node_id,
            "uid": conn.uid,
            "hostname": self.hostname,
            "features": list(protocol.FEATURES),
        }

    async def op_ping(self, conn: Connection, args: dict[str, Any]) -> Any:
        return {"pong": True, "time": time.time()}

    async def op_node_info(self, conn: Connection, args: dict[str, Any]) -> Any:
        info = self.self_info().to_dict()
        info.update(
            mode=self.membership.mode,
            uptime=round(time.monotonic() - self.started, 1),
            scope=self.cfg.process_scope,
            criu=self.criu.status.to_dict(),
            warnings=list(self.warnings),
        )
        return info

    async def op_node_stats(self, conn: Connection, args: dict[str, Any]) -> Any:
        s = self.sample
        return {
            "node": self.membership.node_id,
            "uptime": round(time.monotonic() - self.started, 1),
            "gossip": dict(self.gossip.stats),
            "server": {**self.server.stats, "clients": len(self.server.conns)},
            "sampler": {
                "method": self.sampler.method,
                "duration_ms": s.duration_ms if s else 0.0,
                "processes": s.processes if s else 0,
                "demand": s.demand if s else 0.0,
            },
            "boot": self.gossip.boot,
            "seq": self.gossip.seq,
        }

    async def op_cluster_nodes(self, conn: Connection, args: dict[str, Any]) -> Any:
        return [n.to_dict() for n in self.gossip.nodes(self.self_info())]

    async def op_cluster_map(self, conn: Connection, args: dict[str, Any]) -> Any:
        return self.map_reply()

    async def op_cluster_whois(self, conn: Connection, args: dict[str, Any]) -> Any:
        query = args["query"].strip()
        if not query:
            raise OpFault(
                FaultCode.BAD_ARGUMENT,
                "cluster.whois: query must be a node ID, an IPv4 address or a host name",
            )
        nodes = {n.id: n for n in self.gossip.nodes(self.self_info())}
        m = self.membership

        def addresses(node: int) -> list[str]:
            if m.mode == "map" and node in m.peers:
                return list(m.peers[node])
            return [nodes[node].address]

        found: int | None = None
        low = query.lower()
        if low.startswith("0x"):
            try:
                found = int(low, 16)
            except ValueError:
                found = None
        elif query.isdigit():
            found = int(query)
        else:
            try:
                ipaddress.IPv4Address(query)
                found = next((n for n in nodes if query in addresses(n)), None)
            except ValueError:
                found = next(
                    (n for n, info in nodes.items() if info.hostname and info.hostname.lower() == low), None
                )
                if found is None and m.mode == "map":
                    found = next(
                        (e.base for e in m.entries if e.address.lower() == low and not e.alias), None
                    ) or next((e.base for e in m.entries if e.address.lower() == low), None)
        if found is None or found not in nodes:
            known = ", ".join(str(n) for n in sorted(nodes)) or "none"
            raise OpFault(
                FaultCode.NO_SUCH_NODE, f"no node {query!r} in this cluster (known node IDs: {known})"
            )
        info = nodes[found]
        return {
            "id": found,
            "node": found,
            "address": info.address,
            "addresses": addresses(found),
            "hostname": info.hostname,
            "status": info.status,
        }

    async def op_map_set(self, conn: Connection, args: dict[str, Any]) -> Any:
        source = args.get("source") or "map.set"
        raw = args["entries"]
        loop = asyncio.get_running_loop()
        entries: list[MapEntry] = []
        try:
            if raw:
                entries = membership.entries_from_wire(raw, source=source)
                new = await loop.run_in_executor(
                    None,
                    lambda: membership.from_map(
                        entries, source=source, cfg=self.cfg, prefer_address=self.membership.address
                    ),
                )
            else:
                # an empty map means "back to what agent.toml says" (rejoin after setpe -off)
                new = await loop.run_in_executor(None, membership.configured, self.cfg)
            self.gossip.configure(new, loop)
        except ConfigError as exc:
            raise OpFault(FaultCode.BAD_ARGUMENT, str(exc)) from None
        try:
            if entries:
                self.store.save_map(entries, source)
            else:
                self.store.clear_map()
        except OSError as exc:
            log.error("cannot persist the map: %s", exc)
            raise OpFault(
                FaultCode.INTERNAL, f"the map is active but could not be saved in {self.cfg.state_dir}: {exc}"
            ) from None
        self.membership = new
        self.warnings = membership.address_warnings(self.hostname, new.address)
        reply = self.map_reply()
        log.info("map changed by uid %d: mode %s, %d entries (from %s); I am node %d", conn.uid, new.mode,
                 len(reply["entries"]), source, new.node_id)  # fmt: skip
        self.publish("map.changed", reply)
        self.gossip.tick(self.self_info().to_dict())
        return reply

    async def op_map_off(self, conn: Connection, args: dict[str, Any]) -> Any:
        if self.membership.mode != "off":
            self.gossip.announce_leaving()
            off = Membership("off", self.membership.node_id, self.membership.address, source="setpe -off")
            self.gossip.configure(off, asyncio.get_running_loop())
            self.membership = off
            log.info("left the cluster (map.off by uid %d)", conn.uid)
            self.publish("map.changed", self.map_reply())
        return self.map_reply()

    async def op_flags_get(self, conn: Connection, args: dict[str, Any]) -> Any:
        return self.flags.to_dict()

    async def op_flags_set(self, conn: Connection, args: dict[str, Any]) -> Any:
        if not args:
            names = ", ".join(Flags().to_dict())
            raise OpFault(FaultCode.BAD_ARGUMENT, f"flags.set needs at least one flag ({names})")
        try:
            values: dict[str, Any] = {name: validate_flag(name, value) for name, value in args.items()}
        except FlagError as exc:
            raise OpFault(FaultCode.BAD_ARGUMENT, f"flags.set: {exc}") from None
        old = self.flags
        new = replace(old, **values)
        changed = [name for name in values if getattr(old, name) != getattr(new, name)]
        if changed:
            try:
                self.store.save_flags(new)
            except OSError as exc:
                log.error("cannot save flags: %s", exc)
                raise OpFault(
                    FaultCode.INTERNAL,
                    f"cannot save the flags in {self.cfg.state_dir}: {exc}; nothing changed",
                ) from None
            self.flags = new
            log.info(
                "flags changed by uid %d: %s", conn.uid, ", ".join(f"{n}={getattr(new, n)}" for n in changed)
            )
            self.publish(
                "flags.changed", {"node": self.membership.node_id, "changed": changed, "flags": new.to_dict()}
            )
        return new.to_dict()

    async def _in_worker(self, fn: Any, *a: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *a)

    async def op_procs_list(self, conn: Connection, args: dict[str, Any]) -> Any:
        pid = args.get("pid")
        cpu = self.sample.cpu if self.sample else {}
        table = bool(args.get("table"))

        def listing() -> tuple[int, Any]:
            procs = self._grouped(self._away_rows(self._with_jobs(self._pid_reasons(self.lister.list(
                node_id=self.membership.node_id, cpu=cpu, locks=frozenset(self.locks), pid=pid,
            ))), pid), helpers=pid is not None or bool(args.get("helpers")))  # fmt: skip
            # the rows too in the worker, not on the event loop (5,000 rows: 10-25 ms of Python)
            # table: the compact form (model/cluster.py proc_table), what the GUI asks for
            return len(procs), proc_table(procs) if table else [process_row(p) for p in procs]

        count, rows = await self._in_worker(listing)
        if pid is not None and not count:
            raise OpFault(FaultCode.NO_SUCH_PROCESS, f"no process {pid} on node {self.membership.node_id}")
        return rows

    def _pid_reasons(self, procs: list[ProcessInfo]) -> list[ProcessInfo]:
        """A process outside a PID namespace of its own moves only where all its PIDs are free: say
        which PID is taken on the next node up after this one, from that node's last answer to one
        batched peer.proc.check (peers/pidcheck.py: never waited for here, refreshed in the background;
        the migration itself checks the target afresh, so a late or stale reason costs nothing)."""
        checks = dict(self.lister.pid_checks)
        me = self.membership.node_id
        if not checks:
            return procs
        # the table as of the last tick, not fresh_nodes(): that is a round trip through the event loop
        # for every listing, and which node is asked may well lag a second
        others = sorted(n for n, info in self.nodes_snapshot.items() if n != me and info.up and not info.block)
        if not others:
            return procs
        # the next ID up, wrapping: each node is asked by one other, not all by the lowest (every SSH
        # session and bridge of the cluster would land on that one node)
        node = next((n for n in others if n > me), others[0])
        answer = self.pid_check.answer(node, frozenset(p for pids in checks.values() for p in pids))
        if answer is None:
            return procs
        now = time.monotonic()
        out = []
        for p in procs:
            why = "" if p.cantmove or p.pid not in checks else pidcheck.reason(answer, checks[p.pid], now)
            out.append(replace(p, cantmove=why) if why else p)
        return out

    def _away_rows(self, procs: list[ProcessInfo], pid: int | None) -> list[ProcessInfo]:
        """Adopted processes of this node running elsewhere have no deputy here: a row from the record."""
        me = self.membership.node_id
        have = {p.pid for p in procs}
        for job in self.jobstore.all():
            if not (job.adopted and job.home == me and job.where != me and job.state == "running"):
                continue
            if job.home_pid in have or (pid is not None and pid != job.home_pid):
                continue
            got = self.jobs.away.shown(job.id, job.where)  # its program, as its host reported it
            st, age = got if got is not None else ({}, -1.0)
            procs.append(ProcessInfo(
                pid=job.home_pid, ppid=0, uid=job.uid, user=self.lister.user(job.uid), state=st.get("state", "R"),
                nice=st.get("nice", 0), cpu=st.get("cpu", 0.0), rss=st.get("rss", 0), threads=st.get("threads", 1),
                name=os.path.basename(job.argv[0])[:15] if job.argv else "?",
                cmdline=tuple(job.argv), home=me, where=job.where, lock=job.lock, nmigs=job.nmigs,
                cantmove="" if not job.lock else f"locked to node {job.where}", job=job.id, stats_age=age,
            ))  # fmt: skip
        return procs

    def _grouped(self, procs: list[ProcessInfo], *, helpers: bool) -> list[ProcessInfo]:
        """A mosrun job as one row, its plumbing marked (and left out unless asked): jobs/rows.py."""
        starters = {jid: p.pid for jid, p in list(self.jobs.procs.items())}
        return group_jobs(procs, self.jobstore.all(), starters, self.membership.node_id, helpers=helpers,
                          away=self.jobs.away.shown)  # fmt: skip

    def _with_jobs(self, procs: list[ProcessInfo]) -> list[ProcessInfo]:
        """Job fields for job tasks and deputies: home, where (N#), lock, nmigs, the job id."""
        tasks = self.jobs.local_tasks()
        if not tasks:
            return procs
        me = self.membership.node_id
        # what CRIU would dump: the job's tasks here, not the deputy (mosrun at home)
        dumped: dict[str, list[int]] = {}
        for pid, task_job in tasks.items():
            if not (task_job.home == me and task_job.home_pid == pid and not task_job.adopted):
                dumped.setdefault(task_job.id, []).append(pid)
        reasons: dict[str, str] = {}
        out = []
        for p in procs:
            job = tasks.get(p.pid)
            if job is None:
                out.append(p)
                continue
            deputy = job.home == me and job.home_pid == p.pid and job.where != me
            if not deputy and not job.lock and job.id not in reasons:
                reasons[job.id] = movable.job_reason(job.uid, job.gid, dumped.get(job.id, ()))
            out.append(replace(
                p, job=job.id, home=job.home, where=job.where if deputy else me, lock=job.lock, nmigs=job.nmigs,
                cantmove=f"locked to node {job.where}" if job.lock else "" if deputy else reasons[job.id],
            ))  # fmt: skip
        return out

    async def op_proc_lock(self, conn: Connection, args: dict[str, Any]) -> Any:
        pid, lock = args["pid"], args["lock"]
        node = self.membership.node_id
        job = await self._in_worker(self.jobs.job_of_pid, pid) if pid > 0 else None
        if job is not None:
            if conn.uid != 0 and job.uid != conn.uid:
                raise OpFault(
                    FaultCode.PERMISSION_DENIED,
                    f"job {job.id} belongs to uid {job.uid}; you (uid {conn.uid}) may only lock your own processes",
                )
            await asyncio.get_running_loop().run_in_executor(self.job_pool, self.jobs.set_lock, job.id, lock)
            procs = await self._in_worker(lambda: self._with_jobs(self.lister.list(
                node_id=node, cpu={}, locks=frozenset(self.locks), pid=pid)))  # fmt: skip
            if not procs:
                raise OpFault(FaultCode.NO_SUCH_PROCESS, f"process {pid} ended meanwhile")
            return procs[0].to_dict()

        def look() -> tuple[Any, int | None]:
            if pid <= 0 or not self.scope.contains(pid):
                return None, None
            return read_stat(pid), real_uid(pid)

        st, uid = await self._in_worker(look)
        if st is None or uid is None:
            raise OpFault(FaultCode.NO_SUCH_PROCESS, f"no process {pid} on node {node}")
        if conn.uid != 0 and uid != conn.uid:
            raise OpFault(
                FaultCode.PERMISSION_DENIED,
                f"process {pid} belongs to uid {uid}; you (uid {conn.uid}) may only lock your own processes",
            )
        before = set(self.locks)
        if lock:
            self.locks.add(st.key)
        else:
            self.locks.discard(st.key)
        if self.locks != before:
            try:
                self.store.save_locks(self.locks)
            except OSError as exc:
                self.locks = before
                raise OpFault(
                    FaultCode.INTERNAL, f"cannot save the lock in {self.cfg.state_dir}: {exc}"
                ) from None
        cpu = self.sample.cpu if self.sample else {}
        procs = await self._in_worker(
            lambda: self.lister.list(node_id=node, cpu=cpu, locks=frozenset(self.locks), pid=pid)
        )
        if not procs:
            raise OpFault(FaultCode.NO_SUCH_PROCESS, f"process {pid} ended meanwhile")
        return procs[0].to_dict()

    async def op_events_subscribe(self, conn: Connection, args: dict[str, Any]) -> Any:
        topics = args.get("topics")
        if topics is None:
            topics = ["*"]
        if len(topics) > 64 or not all(isinstance(t, str) and t.strip() for t in topics):
            raise OpFault(
                FaultCode.BAD_ARGUMENT, "events.subscribe: topics must be a list of event names or prefixes"
            )
        conn.topics = [t.strip() for t in topics]
        return {"topics": conn.topics, "events": list(EVENTS)}

    async def op_events_unsubscribe(self, conn: Connection, args: dict[str, Any]) -> Any:
        conn.topics = None
        return {"topics": []}
