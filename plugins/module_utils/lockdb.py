# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lock database: its schema, its migrations and the lock rules.

Every module, the inventory plugin and the benchmarks go through ``Lab``;
nothing else writes SQL. Nodes leave this file as plain dicts with the
fields of ``NODE_FIELDS`` (datetimes as ISO 8601 strings in UTC).

Atomicity: every public method runs in one transaction. On SQLite a write
transaction takes the database's write lock up front (``BEGIN IMMEDIATE``),
so writers run one after the other. On PostgreSQL a request for ``count``
nodes that does not count nodes already held first tries, without waiting,
the first type's free nodes no other transaction holds (``SKIP LOCKED``):
enough of them meet the request by the first type. Otherwise (too few, or an
idempotent request) it takes a transaction-level advisory lock per requested
machine type (in a fixed order), so such requests for the same type run one
after the other, each reading the pool after the previous one committed, and
rows that another transaction holds for a moment are waited for, not skipped.
So, on both databases, as
tests/test_concurrency.py proves under load: no node is ever locked twice; a
request that the free pool can satisfy is not refused; with several machine
types the first one that can satisfy the whole request wins; identical
idempotent requests made at once converge on ``count`` nodes.
"""

from __future__ import annotations

import collections
import datetime as dt
import getpass
import json
import os
import re
import socket
import traceback
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from ansible_collections.teuthology.lab.plugins.module_utils.downburst import DownburstError, shortname
from ansible_collections.teuthology.lab.plugins.module_utils.host_keys import (
    HOST_RE,
    HostKeyError,
    normalize_host_keys,
)

try:
    import psycopg
except ImportError:
    _DRIVER_ERRORS: tuple[type[Exception], ...] = ()
else:
    # The lock path runs some statements on psycopg's own cursor (_DriverStatement).
    _DRIVER_ERRORS = (psycopg.Error,)

try:
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc
except ImportError:
    HAS_SQLALCHEMY = False
    SQLALCHEMY_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_SQLALCHEMY = True
    SQLALCHEMY_IMPORT_ERROR = None

DB_ENV = "TEUTHOLOGY_LAB_DB"
OWNER_ENV = "TEUTHOLOGY_LAB_OWNER"
DEFAULT_DB_PATH = "~/.local/share/teuthology-lab/lab.db"
SCHEMA_VERSION = 4
SQLITE_BUSY_TIMEOUT = 60.0
# Transactions that PostgreSQL aborts under contention and that are safe to re-run:
# serialisation failure, deadlock, and a unique violation (two callers adding one
# new node: the re-run finds the winner's row).
_PG_RETRY_CODES = frozenset({"40001", "40P01", "23505"})
_MAX_ATTEMPTS = 5
# pg_advisory_xact_lock(int, int) key spaces: the schema's creator, and lockers per machine type.
_SCHEMA_LOCK = (7310012, 0)
_TYPE_LOCK_SPACE = 7310013

NODE_FIELDS = (
    "name",
    "machine_type",
    "arch",
    "os_type",
    "os_version",
    "up",
    "locked",
    "locked_by",
    "locked_since",
    "description",
    "vpshost",
    "ssh_pub_key",
    "mac_address",
    "ssh_host",
    "ssh_port",
    "lease_expires",
    "lock_token",
    "vm_state",
    "vm_job",
    "vm_since",
)
# The fields an admin sets with teuthology.lab.node (locked_since and lock_token
# follow locked, vm_since follows vm_state).
SETTABLE_FIELDS = tuple(f for f in NODE_FIELDS if f not in ("name", "locked_since", "lock_token", "vm_since"))
# What a VM slot's VM is doing (none: no VM); set by the downburst role as it goes.
VM_STATES = ("creating", "running", "destroying", "failed")

_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*\Z")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
_LOCK_TOKEN_RE = re.compile(r"^[0-9a-f]{32}\Z")
_LEASE_RE = re.compile(r"^\s*(\d{1,12})\s*([smhdw]?)\s*\Z")
_LEASE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_LEASE = dt.timedelta(days=366)
_MAX_TOKEN = 255
_MAX_DESCRIPTION = 4096
_URL_SCHEMES = ("sqlite", "postgresql")


class LabError(Exception):
    """An error for the user: bad input, a refused request, an unreachable
    database. Raised before anything is committed, so nothing changed."""


# What kind of refusal, for callers that answer each differently (the lock
# server's HTTP statuses); the message is the same as a plain LabError's.


class NodeNotFound(LabError):
    """A named node is not in the lab."""


class NodeExists(LabError):
    """A node to add is in the lab already."""


class LockConflict(LabError):
    """A node's lock state forbids the request: locked by another owner (or
    with another description), down, or not locked."""


class DatabaseUnavailable(LabError):
    """The database failed the transaction (unreachable, or aborting it each
    time it was tried); the message names it with its password masked."""


class Shortfall(LabError):
    """Fewer nodes free than requested: ``available`` of ``requested``, for
    the machine type that came closest."""

    def __init__(self, message: str, requested: int, available: int) -> None:
        super().__init__(message)
        self.requested = requested
        self.available = available


class _Retry(Exception):
    """PostgreSQL aborted a transaction (deadlock, serialisation): run it again."""


# ---------------------------------------------------------------- validation


def check_token(what: str, value: str, pattern: re.Pattern[str] = _TOKEN_RE) -> str:
    """Names, machine types, OS names: letters, digits, '.', '-', '_'."""
    if not isinstance(value, str) or not value or len(value) > _MAX_TOKEN or not pattern.match(value):
        allowed = "letters, digits, '.', '-', '_'"
        if pattern is _OWNER_RE:
            allowed += ", '@', '+'"
        elif pattern is HOST_RE:
            allowed += ", ':'"
        raise LabError(f"{what}: {value!r} is not valid (use {allowed}; no whitespace, quotes or shell characters)")
    return value


def check_owner(value: str) -> str:
    return check_token("owner", value, _OWNER_RE)


def check_description(value: str) -> str:
    if len(value) > _MAX_DESCRIPTION or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise LabError(f"description: {value[:80]!r} is not valid (one line of at most {_MAX_DESCRIPTION} printable characters)")
    return value


def split_list(what: str, value: str | Sequence[str] | None) -> list[str]:
    """A list given as a YAML list or as a comma-separated string (AWX surveys)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    out = [str(item).strip() for item in items if str(item).strip()]
    return [check_token(what, item) for item in dict.fromkeys(out)]


def parse_lease(value: str | int | None) -> int | None:
    """``30m``, ``4h``, ``2d``, ``1w`` or plain seconds -> seconds, at most a year."""
    if value is None or value == "":
        return None
    match = _LEASE_RE.match(str(value))
    seconds = int(match.group(1)) * _LEASE_UNITS[match.group(2)] if match else 0
    if seconds <= 0:
        raise LabError(f"lease: {value!r} is not a duration (e.g. 3600, 30m, 4h, 2d, 1w)")
    if seconds > MAX_LEASE.total_seconds():
        raise LabError(f"lease: {value!r} is longer than the longest lease, {MAX_LEASE.days} days")
    return seconds


def default_owner() -> str:
    """``TEUTHOLOGY_LAB_OWNER``, else USER@HOSTNAME as teuthology does."""
    return os.environ.get(OWNER_ENV) or f"{getpass.getuser()}@{socket.gethostname()}"


def resolve_db_url(db: str | None) -> str:
    """The database URL: ``db``, else ``TEUTHOLOGY_LAB_DB``, else the embedded SQLite file.

    ``db`` / ``TEUTHOLOGY_LAB_DB`` may instead be the absolute path of a file
    that holds the URL: what AWX's credential type injects, so that the
    password is in no job's environment (ansible-runner records that). Such
    a file must hold exactly one URL; errors name the file, never its content.
    """
    given = db or os.environ.get(DB_ENV)
    if not given:
        return "sqlite:///" + os.path.expanduser(DEFAULT_DB_PATH)
    if "://" in given:
        return given
    if not (os.path.isabs(given) and os.path.isfile(given)):
        raise LabError(f"db: {mask_url(given)!r} is neither a database URL nor the absolute path of a file holding one")
    try:
        with open(given, encoding="utf-8") as url_file:
            url = url_file.read(64 * 1024).strip()
    except (OSError, UnicodeDecodeError) as error:
        raise LabError(f"db: cannot read the database URL from {given}: {error.__class__.__name__}") from None
    if not _is_one_url(url):
        raise LabError(f"db: file {given} does not hold exactly one database URL (sqlite:/// or postgresql+psycopg://)")
    return url


def _is_one_url(text: str) -> bool:
    """One line, no whitespace, a URL SQLAlchemy parses, of a database we use."""
    if not text or any(c.isspace() for c in text):
        return False
    try:
        url = sa.engine.make_url(text)
    except (sa_exc.ArgumentError, ValueError):
        return False
    return url.get_backend_name() in _URL_SCHEMES


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, fit for messages."""
    return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", url)


def _scrub(message: str, url: str) -> str:
    """Remove the URL's password from a driver's message, whatever it quoted."""
    password = sa.engine.make_url(url).password if "://" in url else None
    message = message.replace(url, mask_url(url))
    return message.replace(str(password), "***") if password else message


def _iso(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC).isoformat()
    return value


def _utcnow() -> dt.datetime:
    # Stored naive in UTC: SQLite keeps no offset, and both databases must agree.
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _parse_time(what: str, value: str | dt.datetime) -> dt.datetime:
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise LabError(f"{what}: {value!r} is not an ISO 8601 time (e.g. 2026-11-25T14:00:00Z)") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


_TIME_FIELDS = ("locked_since", "lease_expires", "vm_since")
# What a lock sets and an unlock clears.
_LOCK_FIELDS = ("locked", "locked_by", "description", "lease_expires")


def node_dict(row: Any) -> dict[str, Any]:
    """A database row as the node dict every piece of the collection passes on."""
    node = {field: getattr(row, field) for field in NODE_FIELDS}
    for field in _TIME_FIELDS:
        node[field] = _iso(node[field])
    return node


def new_lock_token() -> str:
    return uuid.uuid4().hex


def _type_lock_key(machine_type: str) -> int:
    """A stable int4 for a machine type's advisory lock (collisions only serialise more)."""
    return (zlib.crc32(machine_type.encode()) ^ 0x80000000) - 0x80000000


# ---------------------------------------------------------------- schema

if HAS_SQLALCHEMY:
    metadata = sa.MetaData()
    # Prefixed names: a shared PostgreSQL database may hold other applications'
    # tables (paddles' own is called ``nodes``).
    nodes = sa.Table(
        "lab_nodes",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("machine_type", sa.String(255), nullable=False),
        sa.Column("arch", sa.String(255)),
        sa.Column("os_type", sa.String(255)),
        sa.Column("os_version", sa.String(255)),
        sa.Column("up", sa.Boolean, nullable=False),
        sa.Column("locked", sa.Boolean, nullable=False),
        sa.Column("locked_by", sa.String(255)),
        sa.Column("locked_since", sa.DateTime),
        sa.Column("description", sa.Text),
        sa.Column("vpshost", sa.String(255)),
        sa.Column("ssh_pub_key", sa.Text),
        sa.Column("mac_address", sa.String(17)),
        sa.Column("ssh_host", sa.String(255)),
        sa.Column("ssh_port", sa.Integer),
        sa.Column("lease_expires", sa.DateTime),
        # A lock's identity: new with every lock, gone with the unlock. A run's writes
        # about its slot name it, so that a stale run cannot touch a new holder's slot.
        sa.Column("lock_token", sa.String(32)),
        sa.Column("vm_state", sa.String(16)),
        sa.Column("vm_job", sa.String(255)),  # where the create runs: the vpshost's async job id
        sa.Column("vm_since", sa.DateTime),
        # A type's nodes in name order: the next free ones without a sort. No column that a
        # lock or an unlock changes is indexed, so that on PostgreSQL those updates are HOT
        # (no index entry to write, old row versions pruned in place): a third more lock
        # cycles a second under contention than with `locked` and `locked_by` indexed.
        sa.Index("ix_lab_nodes_type", "machine_type", "name"),
    )
    events = sa.Table(
        "lab_events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        # The node's name, not a foreign key: history outlives removed nodes.
        sa.Column("node", sa.String(255), nullable=False, index=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("time", sa.DateTime, nullable=False),
        sa.Column("details", sa.JSON),
    )
    lab_schema = sa.Table("lab_schema", metadata, sa.Column("version", sa.Integer, nullable=False))


def _migrate_to_2(conn: Any) -> None:
    """Version 1 named its tables ``nodes`` and ``events``: prefix them, and on
    PostgreSQL every relation that came with them (keys, sequences, indexes),
    whose names share the table's namespace."""
    conn.execute(sa.text("ALTER TABLE nodes RENAME TO lab_nodes"))
    conn.execute(sa.text("ALTER TABLE events RENAME TO lab_events"))
    if conn.dialect.name == "postgresql":
        renames = {
            "nodes_pkey": "lab_nodes_pkey",
            "nodes_name_key": "lab_nodes_name_key",
            "events_pkey": "lab_events_pkey",
        }
        for old, new in renames.items():
            table = "lab_nodes" if old.startswith("nodes") else "lab_events"
            conn.execute(sa.text(f"ALTER TABLE {table} RENAME CONSTRAINT {old} TO {new}"))
        for old in ("nodes_id_seq", "events_id_seq"):
            conn.execute(sa.text(f"ALTER SEQUENCE {old} RENAME TO lab_{old}"))
    # SQLite cannot rename an index: make the new ones (version 2's), drop the old.
    for old, new, columns in (
        ("ix_nodes_pool", "ix_lab_nodes_pool", "lab_nodes (machine_type, locked, up, name)"),
        ("ix_nodes_locked_by", "ix_lab_nodes_locked_by", "lab_nodes (locked_by)"),
        ("ix_events_node", "ix_lab_events_node", "lab_events (node)"),
    ):
        conn.execute(sa.text(f"DROP INDEX {old}"))
        conn.execute(sa.text(f"CREATE INDEX {new} ON {columns}"))


def _migrate_to_3(conn: Any) -> None:
    """Version 3 gives each lock a token and records the VM's state; locks
    taken before it get a token of their own."""
    for column in ("lock_token", "vm_state", "vm_job", "vm_since"):
        ddl = nodes.c[column].type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE lab_nodes ADD COLUMN {column} {ddl}"))
    for (node_id,) in conn.execute(sa.select(nodes.c.id).where(nodes.c.locked.is_(True))).all():
        conn.execute(nodes.update().where(nodes.c.id == node_id).values(lock_token=new_lock_token()))


def _migrate_to_4(conn: Any) -> None:
    """Version 4 indexes no column that a lock or an unlock changes."""
    conn.execute(sa.text("DROP INDEX ix_lab_nodes_pool"))
    conn.execute(sa.text("DROP INDEX ix_lab_nodes_locked_by"))
    conn.execute(sa.text("CREATE INDEX ix_lab_nodes_type ON lab_nodes (machine_type, name)"))


# Migrations from version N-1 to N, applied in order to an existing database
# (a new database is created at SCHEMA_VERSION directly): each makes exactly
# version N, whatever the tables above become later. Add a function and raise
# SCHEMA_VERSION when the tables above change.
MIGRATIONS: dict[int, Callable[[Any], None]] = {2: _migrate_to_2, 3: _migrate_to_3, 4: _migrate_to_4}


class _Statements:
    """The lock rules' statements for one dialect, built once with bind
    parameters. Filters a request may leave out are ``:param IS NULL OR
    column = :param``. On PostgreSQL, lists are arrays (``= ANY(:ids)``) so
    that each statement has one text whatever the list's length, and the
    history rides on the UPDATE as a CTE: one statement, one round trip."""

    def __init__(self, dialect: str) -> None:
        from sqlalchemy.dialects.postgresql import ARRAY, JSON

        def param(name: str, column: Any) -> Any:
            return sa.bindparam(name, type_=column.type)

        def optional_equal(name: str, column: Any) -> Any:
            return sa.or_(param(name, column).is_(None), column == param(name, column))

        def one_of(name: str, column: Any) -> Any:
            if dialect == "postgresql":
                return column == sa.any_(sa.bindparam(name, type_=ARRAY(column.type)))
            return column.in_(sa.bindparam(name, expanding=True))

        ids = one_of("ids", nodes.c.id)
        self.type_lock = sa.select(sa.func.pg_advisory_xact_lock(_TYPE_LOCK_SPACE, sa.bindparam("key", type_=sa.Integer)))
        self.known_types = sa.select(nodes.c.machine_type).where(one_of("types", nodes.c.machine_type)).distinct()
        self.named = sa.select(nodes).where(one_of("names", nodes.c.name)).order_by(nodes.c.name)
        self.named_for_update = self.named.with_for_update()
        self.owned_for_update = (
            sa.select(nodes)
            .where(nodes.c.locked.is_(True), nodes.c.locked_by == param("owner", nodes.c.locked_by))
            .order_by(nodes.c.name)
            .with_for_update()
        )
        self.held = (
            sa.select(nodes)
            .where(
                nodes.c.locked.is_(True),
                nodes.c.locked_by == param("owner", nodes.c.locked_by),
                nodes.c.description == param("description", nodes.c.description),
                one_of("types", nodes.c.machine_type),
            )
            .order_by(nodes.c.name)
            .with_for_update()
        )
        # What taking a candidate needs of it; fewer columns, less to read.
        self.free = (
            sa.select(nodes.c.id, nodes.c.name, nodes.c.machine_type, nodes.c.os_type, nodes.c.os_version)
            .where(
                nodes.c.machine_type == param("machine_type", nodes.c.machine_type),
                nodes.c.up.is_(True),
                nodes.c.locked.is_(False),
                # A free slot whose VM is not gone yet (the reaper destroying it) is not handed out.
                nodes.c.vm_state.is_(None),
                *(optional_equal(field, nodes.c[field]) for field in ("arch", "os_type", "os_version")),
            )
            .order_by(nodes.c.name)
            .limit(sa.bindparam("need", type_=sa.Integer))
            .with_for_update()
        )
        # For a VM slot the OS asked for is what to install next, not a filter.
        new_os = {
            field: sa.case(
                (nodes.c.machine_type == "vps", sa.func.coalesce(param(f"lock_{field}", nodes.c[field]), nodes.c[field])),
                else_=nodes.c[field],
            )
            for field in ("os_type", "os_version")
        }
        lock = nodes.update().values(
            locked=True,
            locked_by=param("lock_owner", nodes.c.locked_by),
            locked_since=param("lock_since", nodes.c.locked_since),
            description=param("lock_description", nodes.c.description),
            lease_expires=param("lock_lease", nodes.c.lease_expires),
            lock_token=param("lock_token", nodes.c.lock_token),
            **new_os,
        )
        self.lock = lock.where(ids)
        release = nodes.update().values(
            locked=False, locked_by=None, locked_since=None, description=None, lease_expires=None, lock_token=None
        )
        self.release = release.where(ids)
        self.extend = nodes.update().where(ids).values(lease_expires=param("new_lease", nodes.c.lease_expires))
        self.by_id = sa.select(nodes).where(ids)
        self.record = events.insert()
        self.returning_update = {update: update.returning(*nodes.c) for update in (self.lock, self.release, self.extend)}
        if dialect == "postgresql":
            # Take ``need`` free nodes, or none if fewer are free, in one statement,
            # returning the OS they had; waiting for rows others hold, or skipping them.
            def take(skip_locked: bool) -> Any:
                candidates = (
                    self.free.with_for_update(skip_locked=skip_locked)
                    .with_only_columns(nodes.c.id, nodes.c.os_type.label("old_os_type"), nodes.c.os_version.label("old_os_version"))
                    .cte("candidates")
                )
                enough = sa.select(sa.func.count()).select_from(candidates).scalar_subquery() == sa.bindparam("need", type_=sa.Integer)
                return (
                    lock.where(nodes.c.id == candidates.c.id, enough)
                    .returning(*nodes.c, candidates.c.old_os_type, candidates.c.old_os_version)
                )

            self.take = {skip: take(skip) for skip in (False, True)}
            # Events of one action and actor, many nodes: one statement, the nodes and
            # details as one JSON array ([{"node": ..., "details": {...}}, ...]).
            event = sa.func.json_array_elements(sa.bindparam("events", type_=sa.Text).cast(JSON)).table_valued("value").render_derived()
            self.record_many = events.insert().from_select(
                ["node", "action", "actor", "time", "details"],
                sa.select(
                    event.c.value.op("->>")("node"),
                    sa.bindparam("event_action", type_=events.c.action.type),
                    sa.bindparam("event_actor", type_=events.c.actor.type),
                    sa.bindparam("event_time", type_=sa.DateTime),
                    event.c.value.op("->")("details"),
                ),
            )
            # An unlock's UPDATE and its history in one statement.
            self.release_recorded = self.record_many.add_cte(self.release.cte("released"))
            # An owner's unlock of nodes it holds, checked, released and recorded in one
            # statement: all of them, or none if any is unknown or not held by the owner.
            # Returns the nodes as they were.
            named = self.named_for_update.cte("named")
            all_held = (
                sa.select(sa.func.count() == sa.bindparam("name_count", type_=sa.Integer))
                .where(named.c.locked.is_(True), named.c.locked_by == param("owner", nodes.c.locked_by))
                .scalar_subquery()
            )
            released = release.where(nodes.c.id == named.c.id, all_held).returning(*named.c).cte("released")
            recorded = events.insert().from_select(
                ["node", "action", "actor", "time", "details"],
                sa.select(
                    released.c.name,
                    sa.literal("unlock", type_=events.c.action.type),
                    param("owner", events.c.actor),
                    sa.bindparam("event_time", type_=sa.DateTime),
                    sa.bindparam("event_details", type_=sa.Text).cast(JSON),
                ),
            )
            self.release_held = sa.select(released).add_cte(recorded.cte("recorded"))

            # A take whose events all have the same details (no OS to change): one
            # statement, so that the type's lock is held for one round trip.
            def take_recorded(skip_locked: bool) -> Any:
                taken = self.take[skip_locked].cte("taken")
                recorded = events.insert().from_select(
                    ["node", "action", "actor", "time", "details"],
                    sa.select(
                        taken.c.name,
                        sa.bindparam("event_action", type_=events.c.action.type),
                        sa.bindparam("event_actor", type_=events.c.actor.type),
                        sa.bindparam("event_time", type_=sa.DateTime),
                        sa.bindparam("event_details", type_=sa.Text).cast(JSON),
                    ),
                )
                return sa.select(taken).add_cte(recorded.cte("recorded"))

            self.take_recorded = {skip: take_recorded(skip) for skip in (False, True)}


_STATEMENTS: dict[str, _Statements] = {}


def _statements(dialect: str) -> _Statements:
    if dialect not in _STATEMENTS:
        _STATEMENTS[dialect] = _Statements(dialect)
    return _STATEMENTS[dialect]


class _DriverStatement:
    """A statement compiled once for PostgreSQL and run on the driver's own
    cursor: the lock path's statements are so small that SQLAlchemy's result
    and parameter handling cost more than the database's work. Rows come
    back as named tuples of the statement's columns."""

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.defaults = dict(compiled.params)
        described = statement.column_descriptions if isinstance(statement, sa.Select) else statement.returning_column_descriptions
        columns = [column["name"] for column in described]
        self.row = collections.namedtuple("Row", columns, rename=True) if columns else None  # type: ignore[misc]

    def run(self, driver_connection: Any, params: dict[str, Any]) -> list[Any]:
        with driver_connection.cursor() as cursor:
            cursor.execute(self.sql, {**self.defaults, **params}, prepare=True)
            return [self.row._make(values) for values in cursor.fetchall()] if self.row else []


# ---------------------------------------------------------------- engine


def _sqlite_engine(url: Any, text: str, create: bool) -> Any:
    path = url.database
    if not path or path == ":memory:":
        raise LabError(f"db: {mask_url(text)!r} names no file; use sqlite:////absolute/path/lab.db")
    path = os.path.abspath(os.path.expanduser(path))
    directory = os.path.dirname(path)
    if not create and not os.path.isfile(path):
        raise LabError(f"db: no lab database at {path}; lock or add a node to create it")
    if path == os.path.expanduser(DEFAULT_DB_PATH):
        os.makedirs(directory, exist_ok=True)
    elif not os.path.isdir(directory):
        raise LabError(f"db: directory {directory} of {mask_url(text)!r} does not exist")
    engine = sa.create_engine(url.set(database=path), connect_args={"timeout": SQLITE_BUSY_TIMEOUT})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("lab_write") else "BEGIN")

    return engine


def create_engine(text: str, create: bool = True) -> Any:
    """An engine for a SQLAlchemy URL (SQLite or PostgreSQL), or a LabError.
    Unless ``create``, a SQLite file that does not exist is an error."""
    try:
        url = sa.engine.make_url(text)
    except sa_exc.ArgumentError:
        raise LabError(
            f"db: {mask_url(text)!r} is not a database URL "
            "(e.g. sqlite:////var/lib/lab.db or postgresql+psycopg://user:password@host/lab)"
        ) from None
    backend = url.get_backend_name()
    try:
        if backend == "sqlite":
            return _sqlite_engine(url, text, create)
        if backend == "postgresql":
            return sa.create_engine(url, connect_args={"connect_timeout": 10})
    except (sa_exc.NoSuchModuleError, ImportError) as error:
        raise LabError(f"db: no driver for {mask_url(text)!r}: {error}") from None
    raise LabError(f"db: {mask_url(text)!r}: unsupported database {backend!r}; use sqlite:/// or postgresql+psycopg://")


# ---------------------------------------------------------------- the lab

_T = TypeVar("_T")


class Lab:
    """The lock database behind one URL. ``check_mode`` rolls every write back.

    Unless ``create``, a database that does not exist yet (no SQLite file, or
    no lab tables in PostgreSQL) is an error rather than made: what read-only
    callers and check mode want, so that a typo in a path lists an error, not
    an empty lab. Check mode never creates one.

    One connection is kept for the handle's life (a pool checkout per
    transaction costs more than the statements of a lock). Not thread-safe:
    one ``Lab`` per thread or process.
    """

    def __init__(self, db: str | None = None, *, check_mode: bool = False, create: bool = True) -> None:
        self.url = resolve_db_url(db)
        self.check_mode = check_mode
        create = create and not check_mode
        self.engine = create_engine(self.url, create=create)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        # UPDATE ... RETURNING needs SQLite 3.35; older SQLite (EL9's) re-reads the rows instead.
        self.returning = bool(self.engine.dialect.update_returning)
        self.sql = _statements(self.engine.dialect.name)
        self._driver_statements: dict[Any, _DriverStatement] = {}
        self._conn: Any = None
        self._conn_options: dict[str, Any] = {}
        self._known_types: set[str] = set()
        if not self._run(self._schema_is_current, write=False):
            if not create and not self._run(self._has_schema, write=False):
                raise LabError(f"db: no lab database at {mask_url(self.url)} (no lab tables); lock or add a node to create it")
            self._run(self._ensure_schema, keep=True)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()

    # -- transactions

    def _run(self, fn: Callable[[Any], _T], write: bool = True, keep: bool = False, one_write: bool = False) -> _T:
        """Run ``fn(conn)`` in one transaction (rolled back in check mode unless
        ``keep``), re-running it if PostgreSQL aborted it for contention.
        ``one_write``: ``fn`` changes the database in at most one statement, which
        is then its own transaction on PostgreSQL outside check mode (no BEGIN
        and COMMIT round trips)."""
        reason = ""
        for _attempt in range(_MAX_ATTEMPTS):
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self.engine.connect()
                    self._conn_options = {}
                if self.is_postgres:
                    # A read is one statement: no transaction to begin and end around it. The
                    # lock rules rely on READ COMMITTED's fresh snapshot per statement.
                    autocommit = not write or (one_write and not self.check_mode)
                    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT" if autocommit else "READ COMMITTED"}
                else:
                    options = {"lab_write": write}  # read by the engine's "begin" listener
                if options != self._conn_options:
                    # Set on the kept connection (SQLAlchemy 2 changes it in place) only when
                    # they change: setting an isolation level costs a driver call each time.
                    self._conn.execution_options(**options)
                    self._conn_options = options
                conn = self._conn
                with conn.begin() as tx:
                    result = fn(conn)
                    if self.check_mode and write and not keep:
                        tx.rollback()
                return result
            except (sa_exc.DBAPIError, *_DRIVER_ERRORS) as error:
                driver_error = getattr(error, "orig", error)
                message = _scrub(str(driver_error), self.url)
                self._drop_lost_connection(error)
                if getattr(driver_error, "sqlstate", None) not in _PG_RETRY_CODES:
                    raise DatabaseUnavailable(f"db: cannot use database {mask_url(self.url)}: {message}") from None
                reason = message
        raise DatabaseUnavailable(f"db: {mask_url(self.url)} aborted the transaction {_MAX_ATTEMPTS} times: {reason}")

    def _drop_lost_connection(self, error: Exception) -> None:
        """After a lost connection (server restart, network), the next call connects anew."""
        if self._conn is None:
            return
        lost = getattr(error, "connection_invalidated", False) or self._conn.invalidated
        if not lost and self.is_postgres and not self._conn.closed:
            lost = bool(getattr(self._conn.connection.driver_connection, "broken", False))
        if lost:
            self._conn.invalidate()
            self._conn = None

    def _rows(self, conn: Any, statement: Any, params: dict[str, Any]) -> list[Any]:
        """Run one of ``self.sql``'s statements; its rows (none for a bare UPDATE)."""
        if self.is_postgres:
            driver_statement = self._driver_statements.get(statement)
            if driver_statement is None:
                driver_statement = self._driver_statements[statement] = _DriverStatement(statement, self.engine.dialect)
            return driver_statement.run(conn.connection.driver_connection, params)
        result = conn.execute(statement, params)
        return result.all() if result.returns_rows else []

    def _has_schema(self, conn: Any) -> bool:
        return sa.inspect(conn).has_table("lab_schema")

    def _schema_is_current(self, conn: Any) -> bool:
        return self._has_schema(conn) and conn.execute(sa.select(lab_schema.c.version)).scalar_one() == SCHEMA_VERSION

    def _ensure_schema(self, conn: Any) -> None:
        if self.is_postgres:
            # One creator at a time.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(*_SCHEMA_LOCK)))
        if not self._has_schema(conn):
            metadata.create_all(conn)
            conn.execute(lab_schema.insert().values(version=SCHEMA_VERSION))
            return
        version = conn.execute(sa.select(lab_schema.c.version)).scalar_one()
        if version > SCHEMA_VERSION:
            raise LabError(
                f"db: {mask_url(self.url)} has schema version {version}, newer than this collection's "
                f"{SCHEMA_VERSION}: upgrade teuthology.lab"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[step](conn)
            conn.execute(lab_schema.update().values(version=step))

    def _record(self, conn: Any, rows: Iterable[dict[str, Any]]) -> None:
        """Append history rows (node, action, actor, details), all at one time."""
        rows = list(rows)
        if not rows:
            return
        now = _utcnow()
        if not self.is_postgres:
            conn.execute(self.sql.record, [{"time": now, **row} for row in rows])
            return
        for (action, actor), batch in _batches(rows):
            self._rows(conn, self.sql.record_many, _events_params(action, actor, batch, now))

    def _select_names(self, conn: Any, names: Sequence[str]) -> list[Any]:
        """The named nodes, row-locked in name order; unknown names are an error."""
        rows = self._rows(conn, self.sql.named_for_update, {"names": list(names)})
        missing = sorted(set(names) - {row.name for row in rows})
        if missing:
            raise NodeNotFound(f"names: unknown node{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        return rows

    def _update(self, conn: Any, update: Any, params: dict[str, Any]) -> list[Any]:
        """Run one of ``self.sql``'s UPDATEs; the rows as updated, with
        RETURNING where the database has it, else (SQLite before 3.35) read again."""
        if self.is_postgres:
            return self._rows(conn, self.sql.returning_update[update], params)
        if self.returning:
            return conn.execute(self.sql.returning_update[update], params).all()
        conn.execute(update, params)
        return conn.execute(self.sql.by_id, {"ids": params["ids"]}).all()

    # -- locking

    def lock(
        self,
        *,
        owner: str,
        names: Sequence[str] | None = None,
        count: int | None = None,
        machine_types: Sequence[str] | None = None,
        arch: str | None = None,
        os_type: str | None = None,
        os_version: str | None = None,
        description: str | None = None,
        lease: str | int | None = None,
        extend_only: bool = False,
        top_up: bool = True,
    ) -> Locked:
        """Lock ``names``, or ``count`` free nodes of the first of
        ``machine_types`` that has them all. Locking ``names`` the owner holds
        with a ``lease`` extends their lease; ``extend_only`` requires every
        name to be held already (it extends, and locks nothing).

        With ``count`` and a ``description``, the nodes the owner already
        holds with that description count toward ``count`` unless ``top_up``
        is false: then every request takes ``count`` free nodes (paddles'
        ``lock_many``, whose callers ask again for what they still miss)."""
        check_owner(owner)
        for what, value in (("arch", arch), ("os_type", os_type), ("os_version", os_version)):
            if value is not None:
                check_token(what, value)
        if description is not None:
            check_description(description)
        request = _LockRequest(owner, arch, os_type, os_version, description, parse_lease(lease))
        if extend_only and not (names and request.lease_seconds):
            raise LabError("extend: needs names and a lease")
        if names:
            names = split_list("names", names)
            if count is not None or machine_types:
                raise LabError("names: give either names, or count with machine_type, not both")
            return self._run(lambda conn: self._lock_names(conn, names, request, extend_only))
        if count is None or not machine_types:
            raise LabError("lock needs names, or count with machine_type")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise LabError(f"count: {count!r} is not a number of nodes (at least 1)")
        types = split_list("machine_type", machine_types)
        counts_held = request.description is not None and top_up
        if self.is_postgres and not counts_held:
            # First, without waiting for anyone: the first type's free nodes that no other
            # transaction holds (SKIP LOCKED). If they are enough, the request is met by the
            # first type, as the rules want; if not, the careful way of _lock_count decides.
            taken = self._run(
                lambda conn: self._take_unheld(conn, count, types, request),
                one_write=not request.may_change_os(types[0]),
            )
            if taken:
                return Locked([row.name for row in taken], _by_name(taken), [])
        return self._run(lambda conn: self._lock_count(conn, count, types, request, counts_held))

    def _lock_names(self, conn: Any, names: list[str], request: _LockRequest, extend_only: bool = False) -> Locked:
        rows = self._select_names(conn, names)
        for row in rows:
            if row.locked and row.locked_by != request.owner:
                raise LockConflict(f"names: node {row.name} is locked by {row.locked_by}")
            if extend_only and not row.locked:
                raise LockConflict(f"names: node {row.name} is not locked by {request.owner}: only a held lock is extended")
            if not row.locked and not row.up:
                raise LockConflict(f"names: node {row.name} is down")
            if not row.locked and row.vm_state:
                raise LockConflict(f"names: node {row.name} is free but its VM is {row.vm_state} (playbooks/reap.yml cleans it up)")
            mismatch = request.mismatch(row)
            if mismatch:
                raise LabError(f"names: node {row.name} {mismatch}")
        # A VM the owner holds with another OS than the one asked for is locked
        # again for that OS: a VM to reinstall, not one already held.
        held = [row for row in rows if row.locked and not request.os_differs(row)]
        held_ids = {row.id for row in held}
        taken = self._take(conn, [row for row in rows if row.id not in held_ids], request)
        extended = self._extend(conn, held, request) if request.lease_seconds else []
        extended_ids = {row.id for row in extended}
        held = [row for row in held if row.id not in extended_ids]
        return Locked([row.name for row in taken], _by_name([*held, *extended, *taken]), [row.name for row in extended])

    def _extend(self, conn: Any, rows: Sequence[Any], request: _LockRequest) -> list[Any]:
        """A new lease, from now, for held rows; returns them as updated."""
        if not rows:
            return []
        new_lease = _utcnow() + dt.timedelta(seconds=request.lease_seconds or 0)
        history = [
            {"node": row.name, "action": "extend", "actor": request.owner,
             "details": {"lease_expires": [_iso(row.lease_expires), _iso(new_lease)]}}
            for row in rows
        ]
        self._record(conn, history)
        return self._update(conn, self.sql.extend, {"ids": [row.id for row in rows], "new_lease": new_lease})

    def _take_unheld(self, conn: Any, count: int, types: list[str], request: _LockRequest) -> list[Any]:
        """``count`` free nodes of the first type that no other transaction holds, or none."""
        self._check_known_types(conn, types, count)
        return self._take_free(conn, types[0], count, request, skip_locked=True)

    def _lock_count(self, conn: Any, count: int, types: list[str], request: _LockRequest, counts_held: bool) -> Locked:
        """``counts_held``: the owner's nodes with the request's description count toward ``count``."""
        self._check_known_types(conn, types, count)
        if self.is_postgres:
            # Lockers of a type one after the other, each reading the pool as the
            # previous one left it; a fixed order, so that no two wait for each other.
            for key in sorted({_type_lock_key(t) for t in types}):
                self._rows(conn, self.sql.type_lock, {"key": key})
        held = self._held(conn, types, request) if counts_held else {}
        shortfalls = []
        for machine_type in types:
            have = held.get(machine_type, [])
            if len(have) >= count:
                return Locked([], _by_name(have), [])
            need = count - len(have)
            # If short, the rows waited for may have been taken meanwhile (a lock by
            # name, an admin): a second statement sees every commit made since.
            taken = self._take_free(conn, machine_type, need, request) or self._take_free(conn, machine_type, need, request)
            if taken:
                return Locked([row.name for row in taken], _by_name([*have, *taken]), [])
            shortfalls.append((machine_type, need, len(have), len(self._free(conn, machine_type, need, request))))
        raise Shortfall(
            "; ".join(_shortfall_message(*shortfall, request) for shortfall in shortfalls),
            requested=count,
            available=max(shortfall[2] + shortfall[3] for shortfall in shortfalls),  # held + free
        )

    def _free(self, conn: Any, machine_type: str, need: int, request: _LockRequest) -> list[Any]:
        """Up to ``need`` free nodes of the type, row-locked in name order;
        rows another transaction holds are waited for, then re-checked."""
        return self._rows(conn, self.sql.free, {"machine_type": machine_type, "need": need, **request.filters(machine_type)})

    def _take_free(self, conn: Any, machine_type: str, need: int, request: _LockRequest, skip_locked: bool = False) -> list[Any]:
        """Lock ``need`` free nodes of the type for the request, or none if
        fewer are free; returns them as updated. On PostgreSQL one statement,
        which waits for rows other transactions hold, or skips them."""
        if not self.is_postgres:
            candidates = self._free(conn, machine_type, need, request)
            return self._take(conn, candidates, request) if len(candidates) == need else []
        params = {"machine_type": machine_type, "need": need, **request.filters(machine_type), **self._lock_params(request)}
        if request.may_change_os(machine_type):
            taken = self._rows(conn, self.sql.take[skip_locked], params)
            self._record(conn, self._lock_history(taken, request, params, "old_os_type", "old_os_version"))
            return taken
        details = json.dumps(self._lock_details(request, params))
        events = {"event_action": "lock", "event_actor": request.owner, "event_time": _utcnow(), "event_details": details}
        return self._rows(conn, self.sql.take_recorded[skip_locked], {**params, **events})

    def _check_known_types(self, conn: Any, types: list[str], count: int) -> None:
        """Every type must have nodes. Types seen once are remembered: a type
        that later loses its nodes only means none are free."""
        unseen = [t for t in types if t not in self._known_types]
        if unseen:
            self._known_types.update(row.machine_type for row in self._rows(conn, self.sql.known_types, {"types": unseen}))
        unknown = [t for t in types if t not in self._known_types]
        if unknown:
            raise Shortfall(f"machine_type: no nodes of type {', '.join(unknown)} in the lab", requested=count, available=0)

    def _held(self, conn: Any, types: list[str], request: _LockRequest) -> dict[str, list[Any]]:
        """The owner's nodes with this description that meet the request, by type."""
        rows = self._rows(conn, self.sql.held, {"owner": request.owner, "description": request.description, "types": types})
        held: dict[str, list[Any]] = {}
        for row in rows:
            if not request.mismatch(row) and not request.os_differs(row):
                held.setdefault(row.machine_type, []).append(row)
        return held

    def _take(self, conn: Any, rows: Sequence[Any], request: _LockRequest) -> list[Any]:
        """Lock these rows for the request; returns them as updated."""
        if not rows:
            return []
        params = {"ids": [row.id for row in rows], **self._lock_params(request)}
        self._record(conn, self._lock_history(rows, request, params, "os_type", "os_version"))
        return self._update(conn, self.sql.lock, params)

    @staticmethod
    def _lock_params(request: _LockRequest) -> dict[str, Any]:
        now = _utcnow()
        return {
            "lock_owner": request.owner,
            "lock_since": now,
            "lock_description": request.description,
            "lock_lease": now + dt.timedelta(seconds=request.lease_seconds) if request.lease_seconds else None,
            "lock_os_type": request.os_type,
            "lock_os_version": request.os_version,
            "lock_token": new_lock_token(),
        }

    @staticmethod
    def _lock_details(request: _LockRequest, params: dict[str, Any]) -> dict[str, Any]:
        """What every ``lock`` event of a request says (its OS changes aside)."""
        return {"description": request.description, "lease_expires": _iso(params["lock_lease"])}

    @staticmethod
    def _lock_history(
        rows: Sequence[Any], request: _LockRequest, params: dict[str, Any], old_os_type: str, old_os_version: str
    ) -> list[dict[str, Any]]:
        """The ``lock`` events of these rows, with the OS fields the lock changed
        (the rows' OS before the lock is in the attributes named)."""
        details = Lab._lock_details(request, params)
        return [
            {
                "node": row.name,
                "action": "lock",
                "actor": request.owner,
                "details": {**details, **request.os_changes(row.machine_type, getattr(row, old_os_type), getattr(row, old_os_version))},
            }
            for row in rows
        ]

    def _nodes(self, conn: Any, names: Iterable[str]) -> list[dict[str, Any]]:
        return _by_name(conn.execute(sa.select(nodes).where(nodes.c.name.in_(list(names)))).all())

    def unlock(
        self,
        *,
        owner: str,
        names: Sequence[str] | None = None,
        all_nodes: bool = False,
        force: bool = False,
        lock_tokens: dict[str, str] | None = None,
        description: str | None = None,
        require_locked: bool = False,
    ) -> tuple[bool, list[dict[str, Any]]]:
        """Unlock ``names`` (or every node ``owner`` holds) in one transaction.
        Returns (changed, the unlocked nodes as they were before). With
        ``lock_tokens`` ({name: token}), each named node must still hold that
        lock: if any was unlocked or locked again since, nothing is unlocked.

        A ``description`` must be the locked node's own (teuthology's scheduled
        jobs share one owner; the description, a job's archive path, tells
        them apart). With ``require_locked`` a named node that is not locked
        is refused instead of left as it is."""
        check_owner(owner)
        names = split_list("names", names)
        if bool(names) == bool(all_nodes):
            raise LabError("names: give either names or all: true (not both, not neither)")
        tokens = {check_token("lock_tokens", name): check_lock_token(token) for name, token in (lock_tokens or {}).items()}
        if set(tokens) - set(names):
            raise LabError(f"lock_tokens: {', '.join(sorted(set(tokens) - set(names)))} not among names")

        if self.is_postgres and names and not (all_nodes or force or tokens or description is not None):
            # The common case first, one statement (its own transaction): the owner
            # unlocks nodes it holds. If any is not, the checks below say why.
            params = {"names": names, "name_count": len(set(names)), "owner": owner, "event_time": _utcnow(),
                      "event_details": json.dumps(_unlock_details(owner, owner, force=False))}
            released = self._run(lambda conn: self._rows(conn, self.sql.release_held, params), one_write=True)
            if released:
                return True, [node_dict(row) for row in released]

        def unlock_in(conn: Any) -> tuple[bool, list[dict[str, Any]]]:
            rows = self._rows(conn, self.sql.owned_for_update, {"owner": owner}) if all_nodes else self._select_names(conn, names)
            for row in rows:
                if row.name in tokens:
                    _check_lock_held(row.name, row, tokens[row.name])
                if require_locked and not row.locked:
                    raise LockConflict(f"names: node {row.name} is not locked")
            held = [row for row in rows if row.locked]
            for row in held:
                if row.locked_by != owner and not force:
                    raise LockConflict(f"names: node {row.name} is locked by {row.locked_by}, not {owner} (force: true unlocks it)")
                if description is not None and row.description != description and not force:
                    raise LockConflict(f"names: node {row.name} is locked with description {row.description!r}, not {description!r}")
            self._release(conn, held, owner, force)
            return bool(held), [node_dict(row) for row in held]

        return self._run(unlock_in)

    def _release(self, conn: Any, rows: Sequence[Any], actor: str, force: bool) -> None:
        if not rows:
            return
        history = [_unlock_event(row, actor, force) for row in rows]
        ids = {"ids": [row.id for row in rows]}
        if self.is_postgres:
            self._rows(conn, self.sql.release_recorded, {**ids, **_events_params("unlock", actor, history, _utcnow())})
            return
        self._record(conn, history)
        self._update(conn, self.sql.release, ids)

    # -- administration

    def set_node(
        self,
        name: str,
        fields: dict[str, Any],
        *,
        actor: str,
        note: str | None = None,
        lock_token: str | None = None,
        create: bool = True,
        update: bool = True,
        keep_lock: bool = False,
        locked_since: str | dt.datetime | None = None,
    ) -> tuple[bool, dict[str, Any] | None, dict[str, Any]]:
        """Create node ``name`` or update the given fields (``None`` leaves a
        field alone, ``""`` clears it); ``note`` adds a history row of its own
        (why a node went down, say). Returns (changed, before, after).

        A run writing about the slot it locked (keys, notes, up/down, VM state)
        names its ``lock_token``: if the slot was unlocked or locked again
        since, nothing changes and the error says the lock changed. Without a
        token it is an admin's write, recorded as such (``admin: true``).

        Unless ``create``, a node not in the lab is an error (NodeNotFound);
        unless ``update``, a node in the lab is (NodeExists). With
        ``keep_lock``, a node that is locked keeps its lock whatever the
        lock fields given say (an import never unlocks nor takes over a
        lock). A node this call locks is locked since ``locked_since``
        (default: now)."""
        check_token("name", name)
        check_owner(actor)
        values = _node_values(fields)
        if lock_token is not None:
            check_lock_token(lock_token)
        since = _parse_time("locked_since", locked_since) if locked_since is not None else None
        signed = {"lock_token": lock_token} if lock_token else {"admin": True}
        notes = [{"node": name, "action": "note", "actor": actor, "details": {"note": check_description(note), **signed}}] if note else []

        def set_in(conn: Any) -> tuple[bool, dict[str, Any] | None, dict[str, Any]]:
            row = conn.execute(sa.select(nodes).where(nodes.c.name == name).with_for_update()).first()
            if row is None and not create:
                raise NodeNotFound(f"name: unknown node {name}")
            if row is not None and not update:
                raise NodeExists(f"name: node {name} already exists")
            if lock_token is not None:
                _check_lock_held(name, row, lock_token)
            if row is None:
                if not values.get("machine_type"):
                    raise LabError(f"machine_type: required to add node {name}")
                new = {"up": True, "locked": False, **values}
                if new["locked"]:
                    new.setdefault("locked_since", since or _utcnow())
                    new["lock_token"] = new_lock_token()
                if new.get("vm_state"):
                    new["vm_since"] = _utcnow()
                _check_lock_fields(name, new)
                self._check_vm_name(conn, name, new.get("vpshost"))
                # Two callers adding one name at once: the loser's insert is a unique
                # violation on PostgreSQL, and the re-run (_run) finds the winner's row.
                conn.execute(nodes.insert().values(name=name, **new))
                details = {k: _iso(v) for k, v in new.items() if v is not None}
                self._record(conn, [{"node": name, "action": "add", "actor": actor, "details": details}, *notes])
                return True, None, self._nodes(conn, [name])[0]
            before = node_dict(row)
            kept = _LOCK_FIELDS if keep_lock and row.locked else ()
            changes = {k: v for k, v in values.items() if getattr(row, k) != v and k not in kept}
            if "locked" in changes:
                changes["locked_since"] = (since or _utcnow()) if changes["locked"] else None
                changes["lock_token"] = new_lock_token() if changes["locked"] else None
                if not changes["locked"]:
                    changes.update(locked_by=None, description=None, lease_expires=None)
            if "vm_state" in changes:
                changes["vm_since"] = _utcnow()
            if not changes:
                self._record(conn, notes)
                return bool(notes), before, before
            _check_lock_fields(name, {**row._asdict(), **changes})
            if "vpshost" in changes:
                self._check_vm_name(conn, name, changes["vpshost"])
            conn.execute(nodes.update().where(nodes.c.id == row.id).values(**changes))
            self._record(conn, [*notes, *_change_events(name, actor, before, changes, signed)])
            return True, before, self._nodes(conn, [name])[0]

        return self._run(set_in)

    def _check_vm_name(self, conn: Any, name: str, vpshost: str | None) -> None:
        """A VM slot's VM is named by the slot's short name, and downburst destroy
        deletes every volume of its vpshost whose name starts with that name: no
        slot's short name on one vpshost may start with another's."""
        if not vpshost:
            return
        try:
            mine = shortname(name)
        except DownburstError as error:
            raise LabError(str(error)) from None
        others = conn.execute(sa.select(nodes.c.name).where(nodes.c.vpshost == vpshost, nodes.c.name != name)).scalars()
        for other in others:
            theirs = other.split(".", 1)[0]
            if mine.startswith(theirs) or theirs.startswith(mine):
                raise LabError(
                    f"name: the VM names {mine} ({name}) and {theirs} ({other}) on vpshost {vpshost} collide: downburst "
                    f"destroy of one deletes the volumes of the other (those whose names start with its name)"
                )

    def remove_node(self, name: str, *, actor: str, force: bool = False) -> tuple[bool, dict[str, Any] | None]:
        check_token("name", name)
        check_owner(actor)

        def remove_in(conn: Any) -> tuple[bool, dict[str, Any] | None]:
            row = conn.execute(sa.select(nodes).where(nodes.c.name == name).with_for_update()).first()
            if row is None:
                return False, None
            if row.locked and not force:
                raise LockConflict(f"name: node {name} is locked by {row.locked_by}; unlock it first or use force: true")
            conn.execute(nodes.delete().where(nodes.c.id == row.id))
            unlocked = [_unlock_event(row, actor, force)] if row.locked else []
            self._record(conn, [*unlocked, {"node": name, "action": "remove", "actor": actor, "details": {"locked_by": row.locked_by}}])
            return True, node_dict(row)

        return self._run(remove_in)

    # -- the reaper

    def claim_for_reaping(
        self, name: str, *, actor: str, lock_token: str | None, vm_state: str | None, reason: str
    ) -> dict[str, Any] | None:
        """Mark the VM of node ``name`` as being destroyed by the reaper, if the
        node is still as the reaper found it: the same lock (``lock_token``,
        None for a free slot) and the same ``vm_state``. Returns the node as
        claimed, or None if it changed meanwhile (nothing is changed then). A
        claimed free slot is not handed out (the lock rules take only slots
        without a VM state) until its VM is gone."""
        check_token("name", name)
        check_owner(actor)
        if lock_token is not None:
            check_lock_token(lock_token)
        details = {"step": "destroy", "reason": check_description(reason)}

        def claim_in(conn: Any) -> dict[str, Any] | None:
            row = conn.execute(sa.select(nodes).where(nodes.c.name == name).with_for_update()).first()
            if row is None or row.lock_token != lock_token or row.vm_state != (vm_state or None):
                return None
            conn.execute(nodes.update().where(nodes.c.id == row.id).values(vm_state="destroying", vm_since=_utcnow()))
            self._record(conn, [{"node": name, "action": "reap", "actor": actor, "details": details}])
            return self._nodes(conn, [name])[0]

        return self._run(claim_in)

    def release_reaped(self, reaped: dict[str, str], *, actor: str, reason: dict[str, str]) -> list[dict[str, Any]]:
        """Unlock nodes whose VMs the reaper destroyed ({name: lock token}),
        each only if it still holds that lock; history events ``reap`` (why)
        and ``unlock``. Returns the unlocked nodes as they were before."""
        check_owner(actor)
        tokens = {check_token("names", name): check_lock_token(token) for name, token in reaped.items()}

        def release_in(conn: Any) -> list[dict[str, Any]]:
            rows = [row for row in self._select_names(conn, sorted(tokens)) if row.locked and row.lock_token == tokens[row.name]]
            self._record(
                conn,
                (
                    {"node": row.name, "action": "reap", "actor": actor,
                     "details": {"step": "unlock", "reason": check_description(reason[row.name]), "locked_by": row.locked_by}}
                    for row in rows
                ),
            )
            self._release(conn, rows, actor, force=True)
            return [node_dict(row) for row in rows]

        return self._run(release_in) if tokens else []

    # -- queries

    def query(
        self,
        *,
        names: Sequence[str] | None = None,
        machine_types: Sequence[str] | str | None = None,
        locked: bool | None = None,
        owner: str | None = None,
        up: bool | None = None,
        vpshost: str | None = None,
        description: str | None = None,
        expired: bool | None = None,
        vm_states: Sequence[str] | None = None,
        os_type: str | None = None,
        os_version: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Nodes matching every filter given (``None`` matches anything), by name,
        the first ``limit`` of them if given. ``description`` matches a
        case-sensitive substring, on both databases. ``expired``: locked
        nodes whose lease has ended (or the others). ``vm_states``: VM states
        to match, ``none`` for slots without a VM."""
        filtered = any((machine_types, owner, vpshost, description, vm_states, os_type, os_version)) or limit is not None
        if names and not filtered and locked is None and up is None and expired is None:
            named = split_list("names", names)  # a lock server's read-back: the prebuilt statement
            return self._run(lambda conn: [node_dict(row) for row in self._rows(conn, self.sql.named, {"names": named})], write=False)
        conditions = []
        if names:
            conditions.append(nodes.c.name.in_(split_list("names", names)))
        if machine_types:
            conditions.append(nodes.c.machine_type.in_(split_list("machine_type", machine_types)))
        if locked is not None:
            conditions.append(nodes.c.locked.is_(locked))
        if owner:
            conditions.append(nodes.c.locked_by == check_owner(owner))
        if up is not None:
            conditions.append(nodes.c.up.is_(up))
        if vpshost:
            conditions.append(nodes.c.vpshost == check_token("vpshost", vpshost, HOST_RE))
        if description:
            # LIKE folds case on SQLite and not on PostgreSQL; these two find the
            # exact substring on each, with no wildcard to escape.
            position = sa.func.strpos if self.is_postgres else sa.func.instr
            conditions.append(position(nodes.c.description, check_description(description)) > 0)
        if expired is not None:
            ended = sa.and_(nodes.c.locked.is_(True), nodes.c.lease_expires <= _utcnow())
            conditions.append(ended if expired else sa.not_(ended))
        if vm_states:
            wanted = split_list("vm_states", vm_states)
            for state in wanted:
                if state != "none" and state not in VM_STATES:
                    raise LabError(f"vm_states: {state!r} is not a VM state ({', '.join(VM_STATES)}, none)")
            matches = [nodes.c.vm_state.in_([w for w in wanted if w != "none"])]
            if "none" in wanted:
                matches.append(nodes.c.vm_state.is_(None))
            conditions.append(sa.or_(*matches))
        for field, value in (("os_type", os_type), ("os_version", os_version)):
            if value:
                conditions.append(nodes.c[field] == check_token(field, value))
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise LabError(f"limit: {limit!r} is not a number of nodes")
        statement = sa.select(nodes).where(*conditions).order_by(nodes.c.name).limit(limit)
        return self._run(lambda conn: [node_dict(row) for row in conn.execute(statement)], write=False)

    def history(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Events, oldest first, of ``names`` (every node when None)."""
        query = sa.select(events).order_by(events.c.id)
        if names:
            query = query.where(events.c.node.in_(split_list("names", names)))
        return self._run(
            lambda conn: [{k: _iso(v) for k, v in row._mapping.items() if k != "id"} for row in conn.execute(query)],
            write=False,
        )


def _batches(rows: Iterable[dict[str, Any]]) -> Iterable[tuple[tuple[str, str], list[dict[str, Any]]]]:
    """History rows grouped by (action, actor), in order of first appearance."""
    batches: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        batches.setdefault((row["action"], row["actor"]), []).append(row)
    return batches.items()


def _events_params(action: str, actor: str, rows: Sequence[dict[str, Any]], now: dt.datetime) -> dict[str, Any]:
    """PostgreSQL's record_many parameters for history rows of one action and actor."""
    nodes_details = [{"node": row["node"], "details": row["details"]} for row in rows]
    return {"events": json.dumps(nodes_details), "event_action": action, "event_actor": actor, "event_time": now}


def _by_name(rows: Iterable[Any]) -> list[dict[str, Any]]:
    return sorted((node_dict(row) for row in rows), key=lambda node: node["name"])


def _unlock_details(locked_by: str, actor: str, force: bool) -> dict[str, Any]:
    return {"locked_by": locked_by, "forced": force and locked_by != actor}


def _unlock_event(row: Any, actor: str, force: bool) -> dict[str, Any]:
    return {"node": row.name, "action": "unlock", "actor": actor, "details": _unlock_details(row.locked_by, actor, force)}


def summarize(node_list: Iterable[dict[str, Any]], now: dt.datetime | None = None) -> dict[str, dict[str, int]]:
    """Per machine_type counts of total / up / locked / free (``teuthology-lock
    --summary``; free: what a lock can take, up, unlocked and without a VM
    state), locks whose lease has ended (``expired``), and VMs per state."""
    now = (now or _utcnow()).replace(tzinfo=dt.UTC)
    summary: dict[str, dict[str, int]] = {}
    for node in node_list:
        counts = summary.setdefault(
            node["machine_type"], {"total": 0, "up": 0, "locked": 0, "free": 0, "expired": 0, **dict.fromkeys(VM_STATES, 0)}
        )
        counts["total"] += 1
        counts["up"] += bool(node["up"])
        counts["locked"] += bool(node["locked"])
        counts["free"] += bool(node["up"] and not node["locked"] and not node.get("vm_state"))
        counts["expired"] += bool(node["locked"] and node["lease_expires"] and dt.datetime.fromisoformat(node["lease_expires"]) <= now)
        if node.get("vm_state"):
            counts[node["vm_state"]] += 1
    return dict(sorted(summary.items()))


class Locked(NamedTuple):
    """What a lock call did."""

    newly_locked: list[str]  # the names it locked (VMs to install)
    nodes: list[dict[str, Any]]  # every requested node the owner now holds
    extended: list[str]  # the names whose lease it extended


@dataclass(frozen=True)
class _LockRequest:
    """Who locks, for what, and which nodes qualify."""

    owner: str
    arch: str | None
    os_type: str | None
    os_version: str | None
    description: str | None
    lease_seconds: int | None

    def _wanted(self, machine_type: str) -> list[tuple[str, str]]:
        wanted = [("arch", self.arch)]
        if machine_type != "vps":
            wanted += [("os_type", self.os_type), ("os_version", self.os_version)]
        return [(field, value) for field, value in wanted if value is not None]

    def filters(self, machine_type: str) -> dict[str, str | None]:
        """The free statement's optional filters: None leaves a field unfiltered."""
        return {"arch": None, "os_type": None, "os_version": None, **dict(self._wanted(machine_type))}

    def mismatch(self, row: Any) -> str | None:
        for field, value in self._wanted(row.machine_type):
            actual = getattr(row, field)
            if actual != value:
                return f"has {field} {actual}, not {value}" if actual is not None else f"has no {field}, not {value}"
        return None

    def os_changes(self, machine_type: str, os_type: str | None, os_version: str | None) -> dict[str, list[str | None]]:
        """For a VM slot with this OS recorded, the OS fields this request changes: {field: [old, new]}."""
        if machine_type != "vps":
            return {}
        old = {"os_type": os_type, "os_version": os_version}
        return {
            field: [old[field], wanted]
            for field, wanted in (("os_type", self.os_type), ("os_version", self.os_version))
            if wanted and old[field] != wanted
        }

    def may_change_os(self, machine_type: str) -> bool:
        """Can this request change the recorded OS of a node of this type?"""
        return machine_type == "vps" and bool(self.os_type or self.os_version)

    def os_differs(self, row: Any) -> bool:
        """A held VM whose recorded OS is not the one asked for."""
        return bool(self.os_changes(row.machine_type, row.os_type, row.os_version))


def _shortfall_message(machine_type: str, need: int, have: int, free: int, request: _LockRequest) -> str:
    held = f" ({have} already held by {request.owner} with this description)" if have else ""
    return f"requested {need} {machine_type} node{'s' if need > 1 else ''}, {free} free{held}"


def check_node_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The node fields as ``set_node`` would store them, validated, changing
    nothing: to check a whole batch before writing any of it."""
    return _node_values(fields)


def _node_values(fields: dict[str, Any]) -> dict[str, Any]:
    """Validate the node fields an admin passed; ``""`` becomes NULL."""
    values: dict[str, Any] = {}
    for field, value in fields.items():
        if field not in SETTABLE_FIELDS:
            raise LabError(f"{field}: not a node field ({', '.join(SETTABLE_FIELDS)})")
        if value is None:
            continue
        if value == "":
            if field in ("machine_type", "up", "locked"):
                raise LabError(f"{field}: cannot be empty")
            values[field] = None
            continue
        values[field] = _node_value(field, value)
    return values


def _node_value(field: str, value: Any) -> Any:
    if field in ("up", "locked"):
        if not isinstance(value, bool):
            raise LabError(f"{field}: {value!r} is not a boolean")
        return value
    if field == "ssh_port":
        if isinstance(value, bool) or not str(value).isdigit() or not 1 <= int(value) <= 65535:
            raise LabError(f"ssh_port: {value!r} is not a TCP port (1-65535)")
        return int(value)
    if field == "ssh_pub_key":
        try:
            return normalize_host_keys(str(value))
        except HostKeyError as error:
            raise LabError(f"ssh_pub_key: {error}") from None
    if field == "mac_address":
        mac = str(value).lower()
        if not _MAC_RE.match(mac):
            raise LabError(f"mac_address: {value!r} is not a MAC address (e.g. 52:54:00:12:34:56)")
        return mac
    if field == "lease_expires":
        return _parse_time(field, value)
    if field == "description":
        return check_description(str(value))
    if field == "locked_by":
        return check_owner(str(value))
    if field in ("vpshost", "ssh_host"):
        return check_token(field, str(value), HOST_RE)
    if field == "vm_state" and value not in VM_STATES:
        raise LabError(f"vm_state: {value!r} is not a VM state ({', '.join(VM_STATES)}, or empty for none)")
    return check_token(field, str(value))


def check_lock_token(value: str) -> str:
    if not isinstance(value, str) or not _LOCK_TOKEN_RE.match(value):
        raise LabError(f"lock_token: {value!r} is not a lock token (32 hexadecimal digits, from the node's lock)")
    return value


def _check_lock_held(name: str, row: Any, lock_token: str) -> None:
    """The run that holds ``lock_token`` still holds the node's lock."""
    if row is None:
        raise LabError(f"names: unknown node {name}")
    if not row.locked or row.lock_token != lock_token:
        now = f"locked by {row.locked_by} since {_iso(row.locked_since)}" if row.locked else "free"
        raise LabError(f"lock_token: the lock on {name} changed (it is {now}): it was unlocked or locked again since; nothing changed")


def _check_lock_fields(name: str, row: dict[str, Any]) -> None:
    if row.get("locked") and not row.get("locked_by"):
        raise LabError(f"locked_by: node {name} cannot be locked without locked_by")
    if not row.get("locked") and row.get("locked_by"):
        raise LabError(f"locked: node {name} has locked_by {row['locked_by']} but is not locked")


def _change_events(
    name: str, actor: str, before: dict[str, Any], changes: dict[str, Any], signed: dict[str, Any]
) -> list[dict[str, Any]]:
    """One history row per kind of change: up/down, lock/unlock, key, VM
    state, other fields; each signed by the lock token or as an admin's."""
    rows = []
    rest = dict(changes)
    rest.pop("vm_since", None)
    if "up" in rest:
        rows.append({"action": "up" if rest.pop("up") else "down", "details": {}})
    if "locked" in rest:
        locked = rest.pop("locked")
        rest.pop("locked_since", None)
        rest.pop("lock_token", None)
        holder = rest.get("locked_by") if locked else before["locked_by"]
        rows.append({"action": "lock" if locked else "unlock", "details": {"locked_by": holder}})
    if "ssh_pub_key" in rest:
        rows.append({"action": "key", "details": {"old": before["ssh_pub_key"], "new": rest.pop("ssh_pub_key")}})
    if "vm_state" in rest:
        vm = {"vm_state": [before["vm_state"], rest.pop("vm_state")]}
        if "vm_job" in rest:
            vm["vm_job"] = [before["vm_job"], rest.pop("vm_job")]
        rows.append({"action": "vm", "details": vm})
    if rest:
        rows.append({"action": "update", "details": {k: [before[k], _iso(v)] for k, v in rest.items()}})
    return [{"node": name, "actor": actor, **row, "details": {**row["details"], **signed}} for row in rows]
