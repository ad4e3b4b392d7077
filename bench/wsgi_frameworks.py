"""What a WSGI framework costs the lock server: Falcon and Flask serving the
same three requests of teuthology's, beside a bare WSGI callable (the floor:
no router, no request object), in-process and through gunicorn.

    .venv/bin/python bench/wsgi_frameworks.py [--requests 20000] [--seconds 5]

The requests, with the features the contract needs of a framework: a GET of
/nodes/NAME/ (a path parameter with dots, beside the literal /nodes/lock_many/),
a PUT of /nodes/NAME/lock/ whose JSON body has no Content-Type (read raw,
parsed as JSON), and a 404 whose body is paddles' {"message": ...}. Each
answers a fixed node object, so that only the framework is measured.

In-process: microseconds per request, calling the app as gunicorn does (the
best of 5 runs).
Through gunicorn: requests per second of one client process on one
connection (gthread worker, keep-alive), and with sync workers (a connection
per request), on loopback.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.lockserver import PaddlesClient
from support.pgserver import free_port

NODE = {"name": "smithi001.front.sepia.ceph.com", "description": None, "up": True, "machine_type": "smithi", "is_vm": False,
        "vm_host": None, "os_type": "ubuntu", "os_version": "22.04", "arch": "x86_64", "locked": False, "locked_since": None,
        "locked_by": None, "mac_address": None, "ssh_pub_key": None}
LOCK_BODY = json.dumps({"name": NODE["name"], "locked": True, "locked_by": "alice@laptop", "description": None}).encode()
SHORT = {"name": NODE["name"], "locked": True, "locked_by": "alice@laptop", "machine_type": "smithi", "is_vm": False}
REQUESTS = [("GET", f"/nodes/{NODE['name']}/", b""), ("PUT", f"/nodes/{NODE['name']}/lock/", LOCK_BODY), ("GET", "/nodes/x/y/", b"")]


def bare_app() -> Any:
    """The floor: a WSGI callable with only what the three requests need."""
    node, short, missing = (json.dumps(body).encode() for body in (NODE, SHORT, {"message": "not found"}))

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        if path.endswith("/lock/"):
            json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
            status, body = "200 OK", short
        elif path.count("/") == 3:
            status, body = "200 OK", node
        else:
            status, body = "404 Not Found", missing
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def falcon_app() -> Any:
    import falcon

    class Node:
        def on_get(self, req: Any, resp: Any, name: str) -> None:
            resp.media = NODE

    class Lock:
        def on_put(self, req: Any, resp: Any, name: str) -> None:
            json.loads(req.bounded_stream.read())
            resp.media = SHORT

    def error_body(req: Any, resp: Any, error: Any) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.text = json.dumps({"message": error.description or error.title})

    app = falcon.App()
    app.set_error_serializer(error_body)
    app.add_route("/nodes/{name}/", Node())
    app.add_route("/nodes/{name}/lock/", Lock())
    app.add_route("/nodes/lock_many/", Lock())
    return app


def flask_app() -> Any:
    import flask

    app = flask.Flask("bench")

    @app.get("/nodes/<name>/")
    def node(name: str) -> Any:
        return NODE

    @app.put("/nodes/<name>/lock/")
    def lock(name: str) -> Any:
        json.loads(flask.request.get_data())
        return SHORT

    @app.post("/nodes/lock_many/")
    def lock_many() -> Any:
        return []

    @app.errorhandler(404)
    def not_found(error: Any) -> Any:
        return {"message": "not found"}, 404

    return app


APPS = {"bare WSGI (floor)": bare_app, "falcon": falcon_app, "flask": flask_app}


def create(name: str) -> Any:
    """The app for gunicorn: wsgi_frameworks:create("falcon")."""
    return {"bare": bare_app, "falcon": falcon_app, "flask": flask_app}[name]()


def in_process(app: Any, requests: int, repeats: int = 5) -> float:
    """Microseconds per request, the app called with a fresh environ each time;
    the best of ``repeats`` runs, as timeit reports (other work on the machine only adds)."""
    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        pass

    def environ(method: str, path: str, body: bytes) -> dict[str, Any]:
        return {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
                "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.version": (1, 0), "wsgi.multithread": False,
                "wsgi.multiprocess": True, "wsgi.run_once": False, "SCRIPT_NAME": ""}

    for method, path, body in REQUESTS:  # a warm-up, and a check that each answers
        assert b"".join(app(environ(method, path, body), start_response))
    best = float("inf")
    for _repeat in range(repeats):
        started = time.perf_counter()
        for i in range(requests):
            method, path, body = REQUESTS[i % 3]
            for _chunk in app(environ(method, path, body), start_response):
                pass
        best = min(best, time.perf_counter() - started)
    return best / requests * 1e6


def through_gunicorn(name: str, seconds: float, worker: list[str]) -> float:
    """Requests per second of one client through gunicorn (one worker)."""
    port = free_port()
    bench = str(Path(__file__).resolve().parent)
    server = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1",
                               *worker, "--no-control-socket", "--pythonpath", bench, f'wsgi_frameworks:create("{name}")'],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with PaddlesClient(f"http://127.0.0.1:{port}/") as probe:
                    probe.request("GET", REQUESTS[0][1])
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with PaddlesClient(f"http://127.0.0.1:{port}/") as client:
            done, started = 0, time.monotonic()
            while time.monotonic() - started < seconds:
                method, path, body = REQUESTS[done % 3]
                client.request(method, path, body or None)
                done += 1
            return done / (time.monotonic() - started)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="in-process requests per app (default 20000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds through gunicorn per app and worker (default 5)")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'app':<18} {'us/request':>10} {'gthread req/s':>13} {'sync req/s':>10}")
    for (label, factory), name in zip(APPS.items(), ("bare", "falcon", "flask"), strict=True):
        micros = in_process(factory(), args.requests)
        gthread = through_gunicorn(name, args.seconds, ["--worker-class", "gthread", "--threads", "1"])
        sync = through_gunicorn(name, args.seconds, [])
        print(f"{label:<18} {micros:>10.1f} {gthread:>13.0f} {sync:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
