"""A lock-server style load, on the lock engine or through the lock server,
and the violations it finds.

Used by tests/test_concurrency.py and tests/test_lock_server_load.py
(correctness), bench/lock_throughput.py and bench/lock_server_throughput.py
(speed). Each worker process locks ``count`` K (1..max_count) as its own
owner, reads every granted node back, and unlocks them by name, until its
time is up: with the engine (``EngineClient``, a ``Lab`` on the database
URL) or with paddles' API (``HttpClient``: lock_many, GET /nodes/NAME/,
unlock_many on the server's URL). With ``workers * max_count`` below the pool size every request is
satisfiable at every instant, so any refusal is a violation.

A worker stamps each hold with CLOCK_MONOTONIC (one clock for every process)
after its lock returned and before its unlock starts: an interval inside the
one the database saw. Two owners whose intervals overlap on one node is a
double allocation, whatever the database says afterwards.
"""

from __future__ import annotations

import itertools
import multiprocessing
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

MAX_CYCLES = 1_000_000  # a bound on each worker's loop, besides the time


@dataclass
class LoadResult:
    """What the workers did, and what went wrong."""

    seconds: float
    cycles: int = 0
    holds: list[tuple[str, list[str], float, float]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    phantoms: list[str] = field(default_factory=list)  # grants the read-back shows not locked by the caller
    wrong_type: list[str] = field(default_factory=list)  # grants of a later type while the first could satisfy
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds

    def double_allocations(self) -> list[str]:
        intervals: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        for owner, names, granted, released in self.holds:
            for name in names:
                intervals[name].append((granted, released, owner))
        found = []
        for name, spans in intervals.items():
            spans.sort()
            for (_start, end, a), (start, _end, b) in itertools.pairwise(spans):
                if start < end and a != b:
                    found.append(f"{name} held by {a} and {b} at once")
        return found

    def violations(self) -> dict[str, list[str]]:
        return {
            "double allocations": self.double_allocations(),
            "phantom grants": self.phantoms,
            "refusals": self.refusals,
            "wrong type": self.wrong_type,
            "errors": self.errors,
        }


def repeated_lock_events(history: list[dict[str, Any]]) -> list[str]:
    """Nodes locked while locked, or unlocked while free, in a history: each
    node's locks and unlocks must alternate, starting with a lock."""
    state: dict[str, str] = {}
    found = []
    for event in history:
        if event["action"] in ("lock", "unlock"):
            if state.get(event["node"], "unlock") == event["action"]:
                found.append(f"{event['node']}: {event['action']} twice in a row")
            state[event["node"]] = event["action"]
    return found


class Refused(Exception):
    """The lock request was refused (the engine's LabError, an HTTP error)."""


class EngineClient:
    """The load through the lock engine: a ``Lab`` on a database URL."""

    def __init__(self, db_url: str) -> None:
        from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab, LabError

        self.lab = Lab(db_url)
        self.error = LabError

    def lock(self, owner: str, count: int, machine_types: list[str]) -> list[dict[str, Any]]:
        try:
            return self.lab.lock(owner=owner, count=count, machine_types=machine_types).nodes
        except self.error as error:
            raise Refused(str(error)) from None

    def read_back(self, names: list[str]) -> list[dict[str, Any]]:
        return self.lab.query(names=names)

    def unlock(self, owner: str, names: list[str]) -> list[str]:
        try:
            return [node["name"] for node in self.lab.unlock(owner=owner, names=names)[1]]
        except self.error as error:
            raise Refused(str(error)) from None

    def close(self) -> None:
        self.lab.close()


class HttpClient:
    """The load through a lock server: teuthology's lock_many, get_status
    (one GET per granted node) and unlock_many, on one keep-alive connection."""

    def __init__(self, url: str) -> None:
        from support.lockserver import PaddlesClient

        self.client = PaddlesClient(url)

    def lock(self, owner: str, count: int, machine_types: list[str]) -> list[dict[str, Any]]:
        status, answer = self.client.lock_many(owner, count, "|".join(machine_types), f"/archive/{owner}/1")
        if status != 200:
            raise Refused(f"{status} {answer}")
        return answer

    def read_back(self, names: list[str]) -> list[dict[str, Any]]:
        read = []
        for name in names:
            status, answer = self.client.get_status(name)
            read.append(answer if status == 200 else {"name": name, "status": status, "locked": None})
        return read

    def unlock(self, owner: str, names: list[str]) -> list[str]:
        status, answer = self.client.unlock_many(names, owner)
        if status != 200:
            raise Refused(f"{status} {answer}")
        return [node["name"] for node in answer if node["locked"] is False]

    def close(self) -> None:
        self.client.close()


def _worker(client_class: Any, target: str, index: int, machine_types: list[str], max_count: int, seconds: float,
            barrier: Any, results: Any) -> None:
    owner = f"load{index}@bench"
    rng = random.Random(index)
    report: dict[str, Any] = {"cycles": 0, "holds": [], "refusals": [], "phantoms": [], "wrong_type": [], "errors": []}
    client = client_class(target)
    barrier.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and report["cycles"] < MAX_CYCLES:
        count = rng.randint(1, max_count)
        try:
            nodes = client.lock(owner, count, machine_types)
        except Refused as error:
            report["refusals"].append(str(error))
            continue
        granted = time.monotonic()
        names = [node["name"] for node in nodes]
        read_back = client.read_back(names)
        if len(read_back) != count or any(node["locked"] is not True or node["locked_by"] != owner for node in read_back):
            report["phantoms"].append(f"{owner} asked for {count}, was granted {names}, read back {read_back}")
        if any(node["machine_type"] != machine_types[0] for node in nodes):
            report["wrong_type"].append(f"{owner} was granted {names} of a later type while {machine_types[0]} could satisfy")
        released = time.monotonic()
        try:
            unlocked = client.unlock(owner, names)
        except Refused as error:
            report["errors"].append(f"unlock failed: {error}")
            continue
        if sorted(unlocked) != sorted(names):
            report["errors"].append(f"{owner} unlocked {unlocked}, held {names}")
        report["holds"].append((owner, names, granted, released))
        report["cycles"] += 1
    client.close()
    results.put(report)


def run_load(target: str, workers: int, seconds: float, machine_types: list[str], max_count: int = 3,
             client: Any = EngineClient) -> LoadResult:
    """``workers`` processes doing lock / read back / unlock cycles for
    ``seconds``, each with its own ``client(target)``: ``EngineClient`` on a
    database URL, or ``HttpClient`` on a lock server's URL."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(client, target, i, machine_types, max_count, seconds, barrier, results))
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    result = LoadResult(seconds)
    for _proc in procs:
        report = results.get(timeout=seconds + 300)
        result.cycles += report["cycles"]
        for key in ("holds", "refusals", "phantoms", "wrong_type", "errors"):
            getattr(result, key).extend(report[key])
    for proc in procs:
        proc.join(timeout=60)
        if proc.exitcode != 0:
            result.errors.append(f"worker {proc.pid} exited with {proc.exitcode}")
    return result
