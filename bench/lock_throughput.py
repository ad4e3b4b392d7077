"""Lock+unlock cycles per second with 1, 4 and 16 processes, on PostgreSQL
and SQLite, beside the floor measured in the same run: the rate of the
simplest single-row UPDATE transaction on the same database, same driver,
same concurrency.

    .venv/bin/python bench/lock_throughput.py [--seconds 3]

A cycle is two transactions (lock one free node by count, unlock it by
name), so a ratio of 2 would mean the lock rules cost nothing above the
database's own commit cost.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.ansible_run import collections_root
from support.pgserver import PostgresServer

sys.path.insert(0, str(collections_root()))

from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

CONCURRENCY = (1, 4, 16)
NODES = 64
MAX_OPS = 1_000_000  # a bound on every loop, besides the time


def lock_cycles(db_url: str, index: int, seconds: float, barrier, results) -> None:
    lab = Lab(db_url)
    owner = f"bench{index}@lab"
    barrier.wait()
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline and done < MAX_OPS:
        _, nodes = lab.lock(owner=owner, count=1, machine_types=["bench"])
        lab.unlock(owner=owner, names=[nodes[0]["name"]])
        done += 1
    lab.close()
    results.put(done)


def floor_updates(db_url: str, index: int, seconds: float, barrier, results) -> None:
    """One row per process, one UPDATE per transaction, raw driver connection."""
    lab = Lab(db_url)
    raw = lab.engine.raw_connection()
    param = "%s" if lab.is_postgres else "?"
    sql = f"UPDATE bench_floor SET n = n + 1 WHERE id = {param}"
    barrier.wait()
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline and done < MAX_OPS:
        cursor = raw.cursor()
        if not lab.is_postgres:
            cursor.execute("BEGIN IMMEDIATE")  # the write lock a SQLite writer needs anyway
        cursor.execute(sql, (index,))
        cursor.execute("COMMIT") if not lab.is_postgres else raw.commit()
        done += 1
    raw.close()
    lab.close()
    results.put(done)


def rate(target, db_url: str, procs: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=target, args=(db_url, i, seconds, barrier, results)) for i in range(procs)]
    for worker in workers:
        worker.start()
    total = sum(results.get(timeout=seconds + 120) for _ in workers)
    for worker in workers:
        worker.join()
    return total / seconds


def prepare(db_url: str) -> None:
    lab = Lab(db_url)
    for i in range(NODES):
        lab.set_node(f"bench{i:03d}", {"machine_type": "bench"}, actor="bench@lab")
    with lab.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE bench_floor (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        for i in range(max(CONCURRENCY)):
            conn.exec_driver_sql(f"INSERT INTO bench_floor VALUES ({i}, 0)")
    lab.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    args = parser.parse_args()
    server = PostgresServer().start()
    tmp = tempfile.mkdtemp(prefix="tlab-bench-")
    try:
        databases = {"sqlite": f"sqlite:///{tmp}/lab.db", "postgresql": server.create_database("bench")}
        print(f"{'database':<11} {'procs':>5} {'cycles/s':>10} {'floor tx/s':>11} {'floor/cycle':>12}")
        for kind, url in databases.items():
            prepare(url)
            for procs in CONCURRENCY:
                cycles = rate(lock_cycles, url, procs, args.seconds)
                floor = rate(floor_updates, url, procs, args.seconds)
                print(f"{kind:<11} {procs:>5} {cycles:>10.0f} {floor:>11.0f} {floor / cycles:>12.1f}", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
