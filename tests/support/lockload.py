"""A lock-server style load on the lock engine, and the violations it finds.

Used by tests/test_concurrency.py (correctness) and bench/lock_throughput.py
(speed). Each worker process locks ``count`` K (1..max_count) as its own
owner, reads every granted node back, and unlocks them by name, until its
time is up. With ``workers * max_count`` below the pool size every request is
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
            for (_, end, a), (start, _, b) in itertools.pairwise(spans):
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


def _worker(db_url: str, index: int, machine_types: list[str], max_count: int, seconds: float, barrier: Any, results: Any) -> None:
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab, LabError

    owner = f"load{index}@bench"
    rng = random.Random(index)
    report: dict[str, Any] = {"cycles": 0, "holds": [], "refusals": [], "phantoms": [], "wrong_type": [], "errors": []}
    lab = Lab(db_url)
    barrier.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and report["cycles"] < MAX_CYCLES:
        count = rng.randint(1, max_count)
        try:
            nodes = lab.lock(owner=owner, count=count, machine_types=machine_types).nodes
        except LabError as error:
            report["refusals"].append(str(error))
            continue
        granted = time.monotonic()
        names = [node["name"] for node in nodes]
        read_back = lab.query(names=names)
        if len(read_back) != count or any(not node["locked"] or node["locked_by"] != owner for node in read_back):
            report["phantoms"].append(f"{owner} asked for {count}, was granted {names}, read back {read_back}")
        if any(node["machine_type"] != machine_types[0] for node in nodes):
            report["wrong_type"].append(f"{owner} was granted {names} of a later type while {machine_types[0]} could satisfy")
        released = time.monotonic()
        try:
            _, unlocked = lab.unlock(owner=owner, names=names)
        except LabError as error:
            report["errors"].append(f"unlock failed: {error}")
            continue
        if sorted(node["name"] for node in unlocked) != sorted(names):
            report["errors"].append(f"{owner} unlocked {[node['name'] for node in unlocked]}, held {names}")
        report["holds"].append((owner, names, granted, released))
        report["cycles"] += 1
    lab.close()
    results.put(report)


def run_load(db_url: str, workers: int, seconds: float, machine_types: list[str], max_count: int = 3) -> LoadResult:
    """``workers`` processes doing lock / read back / unlock cycles for ``seconds``."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(db_url, i, machine_types, max_count, seconds, barrier, results))
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    result = LoadResult(seconds)
    for _ in procs:
        report = results.get(timeout=seconds + 300)
        result.cycles += report["cycles"]
        for key in ("holds", "refusals", "phantoms", "wrong_type", "errors"):
            getattr(result, key).extend(report[key])
    for proc in procs:
        proc.join(timeout=60)
        if proc.exitcode != 0:
            result.errors.append(f"worker {proc.pid} exited with {proc.exitcode}")
    return result
