# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""teuthology's ``lock_server``: paddles' ``/nodes/`` API over the lock engine.

A WSGI app (Falcon) for gunicorn, as paddles is served::

    gunicorn --pythonpath COLLECTIONS_DIR \\
      'ansible_collections.teuthology.lab.plugins.module_utils.lock_server:create_app()'

The database is named as the modules name it (``TEUTHOLOGY_LAB_DB``: a URL,
or the absolute path of a file holding one; else the embedded SQLite file).

Thin, like moto's ``responses.py`` over its ``models.py``: each responder
reads the request, makes one call to the lock engine (``Lab``, the only
place of the lock rules) and writes the answer in paddles' wire format
(``paddles.py``). Refusals map by their kind: an unknown node is 404, a lock
state that forbids the request 403 (teuthology's unlock stops retrying only
on 403), too few free nodes 503 ``only N nodes available``, a database
failure 503, bad input 400; every error body is ``{"message": ...}``.
The README's *Lock server* section says where this differs from paddles.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from typing import Any

from ansible_collections.teuthology.lab.plugins.module_utils.lockdb import (
    DatabaseUnavailable,
    Lab,
    LabError,
    LockConflict,
    NodeNotFound,
    Shortfall,
    resolve_db_url,
)
from ansible_collections.teuthology.lab.plugins.module_utils.paddles import (
    UPDATE_KEYS,
    fields_from_paddles,
    host_names,
    parse_bool,
    parse_bool_param,
    parse_count,
    short_object,
    to_paddles,
)

try:
    import falcon
except ImportError:
    HAS_FALCON = False
    FALCON_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    HAS_FALCON = True
    FALCON_IMPORT_ERROR = None

log = logging.getLogger("teuthology_lab.lock_server")

# The actor in the history of changes that carry no owner (adding, updating, removing a node).
ACTOR = "lock_server"
LOCK_MANY_FIELDS = ("count", "locked_by", "machine_type", "description")
UNLOCK_MANY_FIELDS = ("names", "locked_by")
# What a request on /nodes/NAME/lock/ (or PUT /nodes/NAME/ with "locked") may carry besides the lock.
_LOCK_REQUEST_KEYS = frozenset({"locked", "locked_by", "description"})
_DB_ERROR = "encountered a DB error; please retry"


class BadRequest(LabError):
    """Input the wire layer refuses before calling the engine (400)."""


def _status(error: LabError) -> tuple[str, str]:
    """The HTTP status and message for a refusal of the engine."""
    if isinstance(error, NodeNotFound):
        return falcon.HTTP_404, str(error)
    if isinstance(error, LockConflict):
        return falcon.HTTP_403, str(error)
    if isinstance(error, Shortfall):
        return falcon.HTTP_503, f"only {error.available} nodes available"
    if isinstance(error, DatabaseUnavailable):
        log.error("%s", error)  # the URL's password is masked by the engine
        return falcon.HTTP_503, _DB_ERROR
    return falcon.HTTP_400, str(error)


def _answer_lab_error(req: Any, resp: Any, error: LabError, params: Any) -> None:
    status, message = _status(error)
    raise falcon.HTTPError(status, description=message)


def _serialize_error(req: Any, resp: Any, error: Any) -> None:
    """paddles' error body, for every error (unknown paths and methods included)."""
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps({"message": error.description or error.title})


def _body(req: Any) -> dict[str, Any]:
    """The request body as JSON, whatever the Content-Type (teuthology sends
    some bodies without one, curl as a form)."""
    try:
        body = json.loads(req.bounded_stream.read())
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("could not decode JSON body") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str | None:
    """An optional string of a body (null or absent: None)."""
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{key}: {value!r} is not a string")
    return value


class _LabPerThread:
    """One ``Lab`` per worker (a ``Lab`` is not thread-safe), opened on the
    worker's first request: a gunicorn worker process, or each thread of one."""

    def __init__(self, db: str) -> None:
        self.db = db
        self._local = threading.local()

    def __call__(self) -> Lab:
        lab = getattr(self._local, "lab", None)
        if lab is None:
            lab = self._local.lab = Lab(self.db)
        return lab


class _Nodes:
    """The responders: each reads a request, calls the engine (a lock or an
    unlock is one call, one transaction) and answers in paddles' format."""

    def __init__(self, lab: _LabPerThread) -> None:
        self.lab = lab

    def _full(self, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """paddles' full objects, VM hosts nested."""
        hosts = host_names(nodes)
        known = {node["name"]: node for node in [*nodes, *(self.lab().query(names=sorted(hosts)) if hosts else [])]}
        return [to_paddles(node, known) for node in nodes]

    # GET /nodes/
    def list(self, req: Any, resp: Any) -> None:
        count = req.get_param("count")
        if count is not None and not (count.isascii() and count.isdigit()):
            raise BadRequest("count must be an integer")
        machine_type = req.get_param("machine_type")
        nodes = self.lab().query(
            machine_types=machine_type.split("|") if machine_type else None,
            locked=parse_bool_param("locked", req.get_param("locked", default="")),
            up=parse_bool_param("up", req.get_param("up", default="")),
            owner=req.get_param("locked_by") or None,
            os_type=req.get_param("os_type") or None,
            os_version=req.get_param("os_version") or None,
            limit=int(count) if count is not None else None,
        )
        resp.media = self._full(nodes)

    # POST /nodes/
    def create(self, req: Any, resp: Any) -> None:
        body = _body(req)
        name = body.get("name")
        if not name:
            raise BadRequest("could not find required key: 'name'")
        if "locked_since" in body:
            raise BadRequest("locked_since: set by the server when a node is locked")
        # paddles never picks a node created without "up" (null): out of the pool until marked up.
        fields = {"up": False, **fields_from_paddles(body)}
        for key in ("locked", "locked_by"):
            if body.get(key) is not None:
                fields[key] = parse_bool(key, body[key]) if key == "locked" else body[key]
        self.lab().set_node(name, fields, actor=ACTOR, update=False)
        resp.media = {}

    # GET /nodes/NAME/
    def show(self, req: Any, resp: Any, name: str) -> None:
        nodes = self.lab().query(names=[name])
        if not nodes:
            raise NodeNotFound(f"node {name} not found")
        resp.media = self._full(nodes)[0]

    # PUT /nodes/NAME/
    def update(self, req: Any, resp: Any, name: str) -> None:
        body = _body(req)
        if parse_bool("locked", body.get("locked")) is not None:
            self._lock(name, body)
        else:
            self._update(name, body)
        resp.media = {}

    def _update(self, name: str, body: dict[str, Any]) -> None:
        """Change a node's fields, never its lock (paddles lets anyone change another's locked_by here)."""
        for key in ("locked_by", "locked_since"):
            if key in body:
                raise BadRequest(f"{key}: changes only by locking or unlocking (PUT /nodes/{name}/lock/)")
        self.lab().set_node(name, fields_from_paddles(body), actor=ACTOR, create=False)

    # DELETE /nodes/NAME/
    def remove(self, req: Any, resp: Any, name: str) -> None:
        removed = self.lab().remove_node(name, actor=ACTOR)[0]
        if not removed:
            raise NodeNotFound(f"node {name} not found")
        resp.media = {}

    # PUT or POST /nodes/NAME/lock/
    def lock(self, req: Any, resp: Any, name: str) -> None:
        body = _body(req)
        if parse_bool("locked", body.get("locked")) is None:
            # paddles' "check": no lock change, the other fields applied.
            self._update(name, body)
            (node,) = self.lab().query(names=[name])
            resp.media = short_object(node, node["locked"])
            return
        resp.media = self._lock(name, body)

    def _lock(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Lock or unlock one node as the body's owner: the short object."""
        locked = parse_bool("locked", body["locked"])
        others = sorted((set(body) & UPDATE_KEYS) - _LOCK_REQUEST_KEYS)
        if others:
            raise BadRequest(f"{', '.join(others)}: not with a lock change; send them in PUT /nodes/{name}/ of their own")
        verb = "lock" if locked else "unlock"
        owner = _text(body, "locked_by")
        if not owner:
            raise BadRequest(f"Cannot {verb} without specifying locked_by")
        description = _text(body, "description")
        if locked:
            held = self.lab().lock(owner=owner, names=[name], description=description).nodes
        else:
            # paddles checks the description only when one is sent.
            held = self.lab().unlock(owner=owner, names=[name], description=description or None, require_locked=True)[1]
        return short_object(held[0], bool(locked))

    # POST /nodes/lock_many/
    def lock_many(self, req: Any, resp: Any) -> None:
        body = _body(req)
        if any(field not in body for field in LOCK_MANY_FIELDS):
            raise BadRequest(f"must pass these fields: {', '.join(LOCK_MANY_FIELDS)}")
        count = parse_count("count", body["count"])
        machine_type = _text(body, "machine_type")
        if not machine_type:
            raise BadRequest("must specify machine_type")
        owner = _text(body, "locked_by")
        if not owner:
            raise BadRequest("Cannot lock without specifying locked_by")
        # Filters only when given a value, os_version as a string (YAML may have made 22.04 a number).
        filters = {key: str(body[key]) for key in ("os_type", "os_version", "arch") if body.get(key)}
        nodes = self.lab().lock(
            owner=owner,
            count=count,
            machine_types=machine_type.split("|"),
            description=_text(body, "description"),
            top_up=False,
            **filters,
        ).nodes
        resp.media = self._full(nodes)

    # POST /nodes/unlock_many/
    def unlock_many(self, req: Any, resp: Any) -> None:
        body = _body(req)
        if set(body) != set(UNLOCK_MANY_FIELDS):
            raise BadRequest(f"must pass these fields: {', '.join(UNLOCK_MANY_FIELDS)}")
        names = body["names"]
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise BadRequest(f"names: {names!r} is not a list of node names")
        if len(set(names)) != len(names):
            raise BadRequest(f"names: {sorted({name for name in names if names.count(name) > 1})} given more than once")
        owner = _text(body, "locked_by")
        if not owner:
            raise BadRequest("Cannot unlock without specifying locked_by")
        try:
            unlocked = self.lab().unlock(owner=owner, names=names, require_locked=True)[1]
        except NodeNotFound as error:
            raise BadRequest(f"Could not find all nodes! {error}") from None
        resp.media = [short_object(node, False) for node in unlocked]

    # GET /nodes/machine_types/
    def machine_types(self, req: Any, resp: Any) -> None:
        resp.media = sorted({node["machine_type"] for node in self.lab().query()})


class _Route:
    """A resource of Falcon's: method -> responder; any other method gets
    ``refusal`` (paddles' 400 for its action URIs), or Falcon's 405."""

    def __init__(self, refusal: str | None = None, **responders: Any) -> None:
        self.refusal = refusal
        for method in ("get", "put", "post", "delete", "patch"):
            responder = responders.get(method) or (self._refuse if refusal else None)
            if responder is not None:
                setattr(self, f"on_{method}", responder)

    def _refuse(self, req: Any, resp: Any, **params: Any) -> None:
        raise BadRequest(self.refusal.format(method=req.method))  # type: ignore[union-attr]


class _ToSlash:
    """paddles' index URLs without their slash: GET is redirected (302) as
    pecan does; other methods too (308, which keeps method and body),
    where pecan fails with a 500."""

    def on_get(self, req: Any, resp: Any, **params: Any) -> None:
        raise falcon.HTTPFound(self._slashed(req))

    def _any(self, req: Any, resp: Any, **params: Any) -> None:
        raise falcon.HTTPPermanentRedirect(self._slashed(req))

    on_put = on_post = on_delete = on_patch = _any

    @staticmethod
    def _slashed(req: Any) -> str:
        return req.relative_uri.replace(req.path, req.path + "/", 1)


def create_app(db: str | None = None) -> Any:
    """The WSGI app for the lock database ``db`` (default: ``TEUTHOLOGY_LAB_DB``,
    else the embedded SQLite file). A name that is no database fails here,
    when gunicorn loads the app, not at the first request."""
    if not HAS_FALCON:
        raise LabError(f"the lock server needs Falcon (pip install falcon): {FALCON_IMPORT_ERROR}")
    url = resolve_db_url(db)
    nodes = _Nodes(_LabPerThread(url))
    app = falcon.App()
    app.add_error_handler(LabError, _answer_lab_error)
    app.set_error_serializer(_serialize_error)
    lock = _Route("this URI only supports PUT and POST requests but {method} was attempted", put=nodes.lock, post=nodes.lock)
    routes = {
        "/nodes/": _Route(get=nodes.list, post=nodes.create),
        "/nodes/{name}/": _Route(get=nodes.show, put=nodes.update, delete=nodes.remove),
        "/nodes/{name}/lock/": lock,
        "/nodes/{name}/lock": lock,
        "/nodes/machine_types/": _Route(get=nodes.machine_types),
        "/nodes": _ToSlash(),
        "/nodes/{name}": _ToSlash(),
    }
    for action, responder in (("lock_many", nodes.lock_many), ("unlock_many", nodes.unlock_many)):
        route = _Route("this URI only supports POST requests", post=responder)
        routes[f"/nodes/{action}/"] = routes[f"/nodes/{action}"] = route
    for template, resource in routes.items():
        app.add_route(template, resource)
    return app
