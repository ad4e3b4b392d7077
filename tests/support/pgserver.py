"""A real PostgreSQL server in a temporary directory on a free loopback port.

initdb refuses to run as root, so as root the server runs as the
``postgres`` user that Debian's postgresql package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid

PASSWORD = "s3cret-" + uuid.uuid4().hex[:12]
USER = "lab"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if not initdb:
        raise RuntimeError("PostgreSQL server binaries not found: install Debian's postgresql package (make test does)")
    return os.path.dirname(os.path.realpath(initdb))


class PostgresServer:
    """initdb + pg_ctl start; ``url(db)`` gives a SQLAlchemy URL with a password."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.tmp = tempfile.mkdtemp(prefix="tlab-pg-")
        self.datadir = os.path.join(self.tmp, "data")
        self.port = free_port()
        self._runas: list[str] = []
        if os.geteuid() == 0:
            self._runas = ["runuser", "-u", "postgres", "--"]
            entry = pwd.getpwnam("postgres")
            os.chown(self.tmp, entry.pw_uid, entry.pw_gid)
        os.chmod(self.tmp, 0o755)

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._runas, *argv], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        pwfile = os.path.join(self.tmp, "pwfile")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        if self._runas:
            shutil.chown(pwfile, "postgres")
        self._run(
            f"{self.bindir}/initdb", "-D", self.datadir, "-U", USER, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync",
        )
        os.unlink(pwfile)
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.tmp} "
            "-c fsync=off -c max_connections=200 -c shared_buffers=64MB"
        )
        self._run(f"{self.bindir}/pg_ctl", "-D", self.datadir, "-o", options, "-l", os.path.join(self.tmp, "log"), "-w", "start")
        return self

    def stop(self) -> None:
        if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            self._run(f"{self.bindir}/pg_ctl", "-D", self.datadir, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.tmp, ignore_errors=True)

    def url(self, database: str = "postgres", password: str | None = PASSWORD) -> str:
        auth = f"{USER}:{password}" if password else USER
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = name or "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
