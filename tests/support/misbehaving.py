"""Lock servers that misbehave, each in one way a test guards against: the
real app, with one request answered wrongly. Served like the real one
(``make lock-server LOCK_SERVER_APP='support.misbehaving:create_app("FLAW")'``)
by tests/test_lock_server_misbehaving.py, which shows that each check
fails against its flaw. Several flaws are paddles' own.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
from collections.abc import Callable, Iterable
from typing import Any

from ansible_collections.teuthology.lab.plugins.module_utils.lock_server import create_app as create_real_app
from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import Lab, LabError

Answer = tuple[str, list[tuple[str, str]], bytes]
_labs: dict[int, Lab] = {}


def _lab() -> Lab:
    """One per worker process, like the real app's."""
    if os.getpid() not in _labs:
        _labs[os.getpid()] = Lab()
    return _labs[os.getpid()]


def _json(status: str, body: Any) -> Answer:
    return status, [("Content-Type", "application/json")], json.dumps(body).encode()


def _body(environ: dict[str, Any]) -> dict[str, Any]:
    """The JSON body, left in place for the real app."""
    raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.input"] = io.BytesIO(raw)
    return json.loads(raw)


def _call(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> tuple[str, bytes]:
    """The real app's status and body."""
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        captured["status"] = status

    body = b"".join(app(environ, start_response))
    return captured["status"], body


def _is(environ: dict[str, Any], method: str, pattern: str) -> bool:
    return environ["REQUEST_METHOD"] == method and re.fullmatch(pattern, environ["PATH_INFO"]) is not None


# Each flaw: (environ, the real app) -> its own answer, or None to let the real app answer.


def phantom(environ, app):
    """lock_many answers with free nodes without locking them (paddles' lost updates)."""
    if not _is(environ, "POST", "/nodes/lock_many/"):
        return None
    body = _body(environ)
    free = _lab().query(machine_types=body["machine_type"].split("|"), locked=False, up=True, limit=int(body["count"]))
    if len(free) < body["count"]:
        return _json("503 Service Unavailable", {"message": f"only {len(free)} nodes available"})
    return _json("200 OK", [{**node, "locked": True, "locked_by": body["locked_by"], "vm_host": None, "is_vm": False} for node in free])


def refuse_sometimes(environ, app):
    """lock_many refuses one request in ten that the pool could satisfy."""
    if _is(environ, "POST", "/nodes/lock_many/") and random.random() < 0.1:
        return _json("503 Service Unavailable", {"message": "only 0 nodes available"})
    return None


def leaky_unlock(environ, app):
    """unlock_many says every node is unlocked, but keeps the last one locked."""
    if not _is(environ, "POST", "/nodes/unlock_many/"):
        return None
    body = _body(environ)
    if len(body["names"]) > 1:
        _lab().unlock(owner=body["locked_by"], names=body["names"][:-1])
    return _json("200 OK", [{"name": name, "locked": False, "locked_by": None} for name in body["names"]])


def per_node_unlock(environ, app):
    """unlock_many commits node by node up to the first refusal (paddles)."""
    if not _is(environ, "POST", "/nodes/unlock_many/"):
        return None
    body = _body(environ)
    for name in body["names"]:
        try:
            _lab().unlock(owner=body["locked_by"], names=[name], require_locked=True)
        except LabError as error:
            return _json("403 Forbidden", {"message": str(error)})
    return _json("200 OK", [])


def put_applies_locked_by(environ, app):
    """PUT /nodes/NAME/ rewrites another owner's locked_by (paddles)."""
    match = re.fullmatch(r"/nodes/([^/]+)/", environ["PATH_INFO"])
    if environ["REQUEST_METHOD"] != "PUT" or not match:
        return None
    body = _body(environ)
    if "locked_by" not in body or "locked" in body:
        return None
    _lab().set_node(match.group(1), {"locked_by": body.get("locked_by")}, actor="mallory@evil")
    return _json("200 OK", {})


def put_unknown_200(environ, app):
    """PUT /nodes/NAME/ of an unknown node answers 200 (teuthology's update_inventory creates it only on a 404)."""
    match = re.fullmatch(r"/nodes/([^/]+)/", environ["PATH_INFO"])
    if environ["REQUEST_METHOD"] == "PUT" and match and not _lab().query(names=[match.group(1)]):
        return _json("200 OK", {})
    return None


def content_type_required(environ, app):
    """Bodies are read only when sent as application/json (teuthology sends some without a Content-Type)."""
    if environ["REQUEST_METHOD"] in ("PUT", "POST") and environ.get("CONTENT_TYPE") != "application/json":
        return _json("400 Bad Request", {"message": "unsupported media type"})
    return None


def slash_required(environ, app):
    """/nodes/NAME/lock without its slash is not found."""
    if re.fullmatch(r"/nodes/[^/]+/lock", environ["PATH_INFO"]):
        return _json("404 Not Found", {"message": "not found"})
    return None


def ignore_filters(environ, app):
    """GET /nodes/ ignores up= and locked=."""
    query = environ.get("QUERY_STRING", "")
    environ["QUERY_STRING"] = "&".join(p for p in query.split("&") if not p.startswith(("up=", "locked=")))
    return None


def _rewrite(match: Callable[[dict[str, Any]], bool], change: Callable[[str, Any], tuple[str, Any]]):
    def flaw(environ, app):
        if not match(environ):
            return None
        status, body = _call(app, environ)
        new_status, new_body = change(status, json.loads(body))
        return _json(new_status, new_body)

    return flaw


def _each_node(fix: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[str, Any], tuple[str, Any]]:
    def change(status: str, body: Any) -> tuple[str, Any]:
        if isinstance(body, list):
            return status, [fix(node) for node in body]
        return status, fix(body) if "locked_since" in body else body

    return change


def _iso(paddles_time: str) -> str:
    return paddles_time.replace(" ", "T") + "+00:00"


def _gets(environ: dict[str, Any]) -> bool:
    return environ["REQUEST_METHOD"] == "GET"


FLAWS: dict[str, Callable[[dict[str, Any], Any], Answer | None]] = {
    "phantom": phantom,
    "refuse_sometimes": refuse_sometimes,
    "leaky_unlock": leaky_unlock,
    "per_node_unlock": per_node_unlock,
    "put_applies_locked_by": put_applies_locked_by,
    "put_unknown_200": put_unknown_200,
    "content_type_required": content_type_required,
    "slash_required": slash_required,
    "ignore_filters": ignore_filters,
    # locked_since in ISO 8601 (T, offset): teuthology's strptime fails on it.
    "iso_time": _rewrite(_gets, _each_node(lambda n: {**n, "locked_since": n["locked_since"] and _iso(n["locked_since"])})),
    # vm_host as the host's name, not its object: teuthology reads vm_host['name'].
    "flat_vm_host": _rewrite(_gets, _each_node(lambda n: {**n, "vm_host": n["vm_host"] and n["vm_host"]["name"]})),
    # A refusal of another owner's unlock as 409: teuthology retries it.
    "conflict_409": _rewrite(lambda e: e["REQUEST_METHOD"] == "PUT",
                             lambda status, body: ("409 Conflict" if status.startswith("403") else status, body)),
    # Not a flaw but paddles' own way: a node created without "up" is listed with up null (the importer's input).
    "paddles_null_up": _rewrite(_gets, _each_node(lambda n: {**n, "up": n["up"] or None})),
    # Too few nodes as a 500.
    "shortfall_500": _rewrite(lambda e: _is(e, "POST", "/nodes/lock_many/"),
                              lambda status, body: ("500 Internal Server Error" if status.startswith("503") else status, body)),
}


def create_app(flaw: str) -> Callable[..., Iterable[bytes]]:
    real = create_real_app()
    misbehave = FLAWS[flaw]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        answer = misbehave(environ, real)
        if answer is None:
            return real(environ, start_response)
        status, headers, body = answer
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    return app
