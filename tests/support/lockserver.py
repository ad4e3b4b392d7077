"""The lock server as a user runs it (``make lock-server BIND=127.0.0.1:PORT``,
the database in ``TEUTHOLOGY_LAB_DB``), and a client of its paddles API that
sends teuthology's own request bodies (without a Content-Type where
teuthology sends none) over one keep-alive connection; ``serve`` gives both
with the database's ``Lab``, and runs teuthology's own client code against
the server (``Served.teuthology``).

``LockServer(db, app=...)`` serves another WSGI app instead, through the
same gunicorn command line (``make lock-server LOCK_SERVER_APP=...``): how the
tests show that each of them fails against a server that misbehaves.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from support.ansible_run import REPO, SUPPORT
from support.pgserver import free_port
from support.teuthology_venv import run_teuthology

START_TIMEOUT = 120  # make deps (a no-op once done) and gunicorn's boot

# Before anything else: teuthology patches the standard library with gevent when imported.
PRELUDE = """\
import teuthology
import argparse, json, sys, time
from teuthology.lock import ops, query
ops.stop_node = lambda name, status=None: None  # powers off or SSHes into a machine: there is none here
args = json.load(sys.stdin)
out = {}
"""


class LockServer:
    """``make lock-server`` on a free loopback port, stopped with SIGTERM."""

    def __init__(self, db_url: str, *, app: str | None = None, workers: int | None = None) -> None:
        self.db_url = db_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.app = app
        self.workers = workers
        self.log = tempfile.NamedTemporaryFile(prefix="tlab-lock-server-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LockServer:
        argv = ["make", "--no-print-directory", "lock-server", f"BIND=127.0.0.1:{self.port}"]
        if self.app:
            argv.append(f"LOCK_SERVER_APP={self.app}")
        if self.workers:
            argv.append(f"LOCK_SERVER_WORKERS={self.workers}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEUTHOLOGY_LAB_", "MAKE"))}
        env["TEUTHOLOGY_LAB_DB"] = self.db_url
        if self.app:
            env["PYTHONPATH"] = str(SUPPORT.parent)  # the app is one of tests/support's
        # A process group of its own, as a shell gives a foreground job: Ctrl-C (interrupt) reaches make and gunicorn.
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"make lock-server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with PaddlesClient(self.url) as client:
                    client.request("GET", "/nodes/machine_types/")  # any answer: gunicorn serves the app
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the lock server did not answer in {START_TIMEOUT} s:\n{self.output()}")

    def stop(self, interrupt: bool = False) -> int | None:
        """SIGTERM to make (which passes it on to gunicorn), or with ``interrupt``
        SIGINT to the whole group, as Ctrl-C does; make's exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if interrupt:
                os.killpg(self.proc.pid, signal.SIGINT)
            else:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def output(self) -> str:
        with open(self.log.name, errors="replace") as log:
            return log.read()

    def __enter__(self) -> LockServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        os.unlink(self.log.name)


class PaddlesClient:
    """paddles' /nodes/ API over one kept-alive HTTP/1.1 connection, with the
    request bodies and headers of teuthology/lock/ops.py and query.py.

    A few lines of HTTP/1.1 on a socket rather than http.client: the load's 16
    client processes share two CPUs with the server they measure, and
    http.client spends four times the CPU per request (its header parsing).
    The server's answers always carry a Content-Length (Falcon sets it)."""

    def __init__(self, url: str, timeout: float = 120) -> None:
        parsed = urlsplit(url)
        self.address = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.prefix = parsed.path.rstrip("/")
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = b""

    def request(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> tuple[int, Any]:
        """(status, the JSON answer, or the text when it is not JSON)."""
        data = json.dumps(body).encode() if body is not None and not isinstance(body, (str, bytes)) else body
        data = data.encode() if isinstance(data, str) else data
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self.address[0]}:{self.address[1]}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        if data is not None:
            head += f"Content-Length: {len(data)}\r\n"
        message = head.encode() + b"\r\n" + (data or b"")
        reused = self.sock is not None
        try:
            status, text = self._exchange(message)
        except (ConnectionError, EOFError):
            if not reused:
                raise
            self.close()  # the server closed the idle connection before reading this request: send it again
            status, text = self._exchange(message)
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text.decode(errors="replace")

    def _exchange(self, message: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=self.timeout)
            self.buffer = b""
        self.sock.sendall(message)
        while b"\r\n\r\n" not in self.buffer:
            self._receive()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._receive()
        text, self.buffer = self.buffer[:length], self.buffer[length:]
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(status_line.split(" ", 2)[1]), text

    def _receive(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.buffer += chunk

    # teuthology.lock.ops.lock_many: Content-Type application/json
    def lock_many(self, owner: str, count: int, machine_type: str, description: str | None, **filters: str) -> tuple[int, Any]:
        body = {"locked_by": owner, "count": count, "machine_type": machine_type, "description": description, **filters}
        return self.request("POST", "/nodes/lock_many/", body, "application/json")

    # teuthology.lock.query.get_status: no body
    def get_status(self, name: str) -> tuple[int, Any]:
        return self.request("GET", f"/nodes/{name}/")

    # teuthology.lock.ops.unlock_many: Content-Type application/json
    def unlock_many(self, names: list[str], owner: str) -> tuple[int, Any]:
        return self.request("POST", "/nodes/unlock_many/", {"locked_by": owner, "names": names}, "application/json")

    # teuthology.lock.ops.lock_one / unlock_one: requests.put(uri, json.dumps(...)), no Content-Type
    def lock_one(self, name: str, owner: str, description: str | None, locked: bool = True) -> tuple[int, Any]:
        body = {"name": name, "locked": locked, "locked_by": owner, "description": description}
        return self.request("PUT", f"/nodes/{name}/lock/", json.dumps(body))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> PaddlesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Served:
    """A lock server on a lab database, and that database's Lab for seeding and checking."""

    url: str
    lab: Any
    server: LockServer

    def client(self) -> PaddlesClient:
        return PaddlesClient(self.url)

    def teuthology(self, code: str, **args: Any) -> dict[str, Any]:
        """Run ``code`` with teuthology's lock_server pointing at this server; it fills ``out``."""
        config = {"lock_server": self.url, "results_server": "http://127.0.0.1:9/"}
        return run_teuthology(PRELUDE + textwrap.dedent(code) + "\nprint(json.dumps(out))", args, config=config)


def serve(db_url: str, app: str | None = None) -> Iterator[Served]:
    """A Served for the database at db_url (created on the way), stopped at the end."""
    from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab

    lab = Lab(db_url)
    try:
        with LockServer(db_url, app=app) as server:
            yield Served(server.url, lab, server)
    finally:
        lab.close()
