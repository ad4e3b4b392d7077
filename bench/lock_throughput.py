"""Lock / read back / unlock cycles per second through the lock engine, beside
a floor measured on the same database in the same run, at 1, 4 and 16
processes, on PostgreSQL and SQLite.

    .venv/bin/python bench/lock_throughput.py [--seconds 10] [--only postgresql]

The load is a lock server's (tests/support/lockload.py): each process locks
``count`` K=1..3 free nodes of a 50-node pool as its own owner, reads every
granted node back, and unlocks them by name. The floor is the least a lock
server can do per cycle with the same driver: lock one row with
``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)`` and
unlock it by id, one transaction each, on a raw driver connection.

Every run also counts the load's correctness violations (double allocations,
grants the read-back shows not locked by the caller, refusals of satisfiable
requests): they must all be zero.
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
from support.lockload import MAX_CYCLES, run_load
from support.pgserver import PostgresServer
from support.seed import seed

sys.path.insert(0, str(collections_root()))

from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

CONCURRENCY = (1, 4, 16)
NODES = 50
FLOOR_LOCK = {
    "postgresql": "UPDATE bench_floor SET locked = true, locked_by = %s "
    "WHERE id = (SELECT id FROM bench_floor WHERE NOT locked LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id",
    # SQLite has no row locks: the writer holds the whole database (BEGIN IMMEDIATE).
    "sqlite": "UPDATE bench_floor SET locked = 1, locked_by = ? "
    "WHERE id = (SELECT id FROM bench_floor WHERE NOT locked LIMIT 1) RETURNING id",
}
FLOOR_UNLOCK = {
    "postgresql": "UPDATE bench_floor SET locked = false, locked_by = NULL WHERE id = %s",
    "sqlite": "UPDATE bench_floor SET locked = 0, locked_by = NULL WHERE id = ?",
}


def floor_cycles(db_url: str, kind: str, index: int, seconds: float, barrier, results) -> None:
    lab = Lab(db_url)
    raw = lab.engine.raw_connection()
    owner = f"floor{index}@bench"

    def transaction(sql: str, params: tuple) -> list:
        cursor = raw.cursor()
        if kind == "sqlite":
            cursor.execute("BEGIN IMMEDIATE")
        cursor.execute(sql, params)
        rows = cursor.fetchall() if cursor.description else []
        if kind == "sqlite":
            cursor.execute("COMMIT")
        else:
            raw.commit()
        return rows

    barrier.wait()
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline and done < MAX_CYCLES:
        ((node_id,),) = transaction(FLOOR_LOCK[kind], (owner,))
        transaction(FLOOR_UNLOCK[kind], (node_id,))
        done += 1
    raw.close()
    lab.close()
    results.put(done)


def floor_rate(db_url: str, kind: str, procs: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=floor_cycles, args=(db_url, kind, i, seconds, barrier, results)) for i in range(procs)]
    for worker in workers:
        worker.start()
    total = sum(results.get(timeout=seconds + 120) for _ in workers)
    for worker in workers:
        worker.join()
    return total / seconds


def prepare(db_url: str) -> None:
    lab = Lab(db_url)
    seed(lab, "bench", NODES)
    with lab.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE bench_floor (id INTEGER PRIMARY KEY, locked BOOLEAN NOT NULL, locked_by VARCHAR(255))")
        for i in range(NODES):
            conn.exec_driver_sql(f"INSERT INTO bench_floor VALUES ({i}, false, NULL)")
    lab.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement (default 10)")
    parser.add_argument("--only", choices=["postgresql", "sqlite"], help="measure one database only")
    args = parser.parse_args()
    server = PostgresServer().start()
    tmp = tempfile.mkdtemp(prefix="tlab-bench-")
    violations = 0
    try:
        databases = {"postgresql": server.create_database("bench"), "sqlite": f"sqlite:///{tmp}/lab.db"}
        print(f"{'database':<11} {'procs':>5} {'cycles/s':>9} {'floor/s':>8} {'x floor':>8} {'violations':>10}")
        for kind, url in databases.items():
            if args.only and kind != args.only:
                continue
            prepare(url)
            for procs in CONCURRENCY:
                load = run_load(url, procs, args.seconds, ["bench"])
                floor = floor_rate(url, kind, procs, args.seconds)
                found = sum(len(v) for v in load.violations().values())
                violations += found
                print(f"{kind:<11} {procs:>5} {load.rate:>9.0f} {floor:>8.0f} {floor / load.rate:>8.2f} {found:>10}", flush=True)
                for what, items in load.violations().items():
                    for item in items[:3]:
                        print(f"    {what}: {item}")
    finally:
        server.stop()
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
