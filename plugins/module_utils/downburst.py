# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""downburst, the one place that knows it: where the executable is, what its
meta-data and user-data say, its command lines and how it reports errors.

Real downburst merges each ``--meta-data`` file into its own meta-data with
``yaml.safe_load`` + ``dict.update`` (so our ``public-keys`` replace the list
it reads from the vpshost user's ``~/.ssh/id_rsa.pub``), parses sizes with its
``dehumanize`` units and puts ``cpus`` into its domain template as a number.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.teuthology.lab.plugins.module_utils.host_keys import DEFAULT_TYPES

# Where teuthology looks for a downburst checkout, after PATH.
CHECKOUT_SUBPATH = "src/downburst/virtualenv/bin/downburst"
FALLBACK_HOMES = ("/home/ubuntu", "/home/teuthology")
DEFAULT_URI = "qemu:///system"
# downburst's dehumanize units.
_SIZE_RE = re.compile(r"^\s*[\d.]+\s*(B|kB|MB|GB|TB|PB|EB|ZB|YB|KiB|MiB|GiB|TiB|PiB|EiB|ZiB|YiB|k|K|M|G|T)?\s*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\Z")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_URI_RE = re.compile(r"^[a-z][a-z0-9+]*://[A-Za-z0-9._@:/?=&%-]*\Z")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}\Z")
# libvirt's client configuration, where uri_aliases live (playbooks/libvirt_aliases.yml writes them):
# root's is the system's (libvirt reads no other for uid 0), a user's under ~/.config (older libvirt: ~/.libvirt).
ROOT_LIBVIRT_CONF = "/etc/libvirt/libvirt.conf"
LIBVIRT_CONF_FILES = ("~/.config/libvirt/libvirt.conf", "~/.libvirt/libvirt.conf")
_ALIAS_ENTRY_RE = re.compile(r'"([A-Za-z0-9_.-]+)=([^"]+)"')
# Where a running create says which process group to end (end_running_create).
CREATES_DIR = "~/.cache/teuthology-lab/downburst"
# What real downburst's stderr says when a create fails because the VM exists.
_EXISTS_RE = re.compile(r"exists", re.IGNORECASE)
_NO_VM_RE = re.compile(r"No virtual machine found", re.IGNORECASE)


class DownburstError(Exception):
    """Bad input or an executable that cannot be found."""


def shortname(node_name: str) -> str:
    """The VM's name: the node name up to its first dot, as teuthology does."""
    short = node_name.split(".", 1)[0]
    if not _NAME_RE.match(short):
        raise DownburstError(f"name: {node_name!r} does not start with a valid VM name (letters, digits, '-', '_')")
    return short


def check_uri(uri: str) -> str:
    """A libvirt URI, or a URI alias (a name, as teuthology gives ``-c``)."""
    if not (_URI_RE.match(uri) or _NAME_RE.match(uri)):
        raise DownburstError(f"libvirt_uri: {uri!r} is not a libvirt URI (e.g. qemu:///system) or URI alias")
    return uri


def check_size(what: str, size: str) -> str:
    if not _SIZE_RE.match(str(size)):
        raise DownburstError(f"{what}: {size!r} is not a size downburst reads (e.g. 3.8G, 100G, 512M)")
    return str(size).strip()


def check_retries(retries: int) -> int:
    if retries < 0:
        raise DownburstError(f"retries: {retries} is negative; give 0 (never destroy a leftover VM) or more")
    return retries


def checkout_candidates(home: str) -> list[str]:
    """The downburst checkouts teuthology looks at, in order."""
    candidates = [os.path.join(home, CHECKOUT_SUBPATH), *(os.path.join(h, CHECKOUT_SUBPATH) for h in FALLBACK_HOMES)]
    return list(dict.fromkeys(candidates))


def find_executable(explicit: str | None, which: Callable[[str], str | None], home: str) -> tuple[str, list[str]]:
    """The downburst to run, and every place looked at: ``explicit``, else
    ``downburst`` on PATH, else the checkouts under ``home``, /home/ubuntu
    and /home/teuthology."""
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit, [explicit]
        raise DownburstError(f"executable: {explicit} is not an executable file")
    searched = ["downburst on PATH"]
    found = which("downburst")
    if found:
        return found, searched
    for candidate in checkout_candidates(home):
        searched.append(candidate)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate, searched
    raise DownburstError(f"downburst not found; looked at: {', '.join(searched)}")


def check_user(user: str) -> str:
    if not _USER_RE.match(user or ""):
        raise DownburstError(f"user: {user!r} is not a user name (lowercase letters, digits, '_', '-')")
    return user


def libvirt_conf_files(home: str, root: bool) -> list[str]:
    """Where libvirt's client reads uri_aliases for this user."""
    return [ROOT_LIBVIRT_CONF] if root else [os.path.join(home, path.removeprefix("~/")) for path in LIBVIRT_CONF_FILES]


def libvirt_alias(alias: str, home: str, root: bool = False) -> str:
    """The URI that ``alias`` stands for in the user's libvirt client
    configuration (``uri_aliases``), as ``virsh -c ALIAS`` and downburst resolve it."""
    check_uri(alias)
    files = libvirt_conf_files(home, root)
    for path in files:
        try:
            with open(path, encoding="utf-8") as conf:
                text = conf.read()
        except OSError:
            continue
        aliases = text.split("uri_aliases", 1)[1] if "uri_aliases" in text else ""
        for name, uri in _ALIAS_ENTRY_RE.findall(aliases.split("]", 1)[0]):
            if name == alias:
                return uri
    raise DownburstError(
        f"libvirt_uri: no uri_aliases entry {alias!r} in {' or '.join(files)} (playbooks/libvirt_aliases.yml writes them)"
    )


def meta_data(
    *,
    hostname: str,
    os_type: str | None,
    os_version: str | None,
    arch: str | None,
    mac_address: str | None,
    network: str,
    cpus: int,
    ram: str,
    disk_size: str,
    additional_disks: int,
    additional_disks_size: str,
    public_keys: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """downburst's meta-data for a node, in the types downburst parses; its
    ``local-hostname`` is the node's name (FQDN), as teuthology gives it."""
    if not _HOSTNAME_RE.match(hostname):
        raise DownburstError(f"name: {hostname!r} is not a host name")
    settings: dict[str, Any] = {
        "cpus": int(cpus),
        "ram": check_size("ram", ram),
        "disk-size": check_size("disk_size", disk_size),
        "additional-disks": int(additional_disks),
        "additional-disks-size": check_size("additional_disks_size", additional_disks_size),
    }
    for key, what, value in (("distro", "os_type", os_type), ("distroversion", "os_version", os_version), ("arch", "arch", arch)):
        if value:
            if not _TOKEN_RE.match(value):
                raise DownburstError(f"{what}: {value!r} is not valid")
            settings[key] = value
    if mac_address:
        settings["networks"] = [{"source": network, "mac": mac_address}]
    if settings["cpus"] < 1 or settings["additional-disks"] < 0:
        raise DownburstError("cpus must be at least 1 and additional_disks at least 0")
    data: dict[str, Any] = {
        "local-hostname": hostname,
        "public-keys": [key.strip() for key in public_keys if key.strip()],
        "downburst": settings,
    }
    for key, value in (extra or {}).items():
        # Extra settings go into downburst's section; other top-level keys are meta-data of their own.
        if key == "downburst" and isinstance(value, dict):
            settings.update(value)
        else:
            data[key] = value
    return data


def user_data(user: str, host_keys: dict[str, dict[str, str]] | None) -> dict[str, Any]:
    """cloud-config as teuthology's: the default user is ``user`` (it gets the
    meta-data's public keys and sudo), the host name resolves to the FQDN; and,
    with ``host_keys`` ({type: {private, public}}), the guest serves exactly
    those keys and no type cloud-init would make itself."""
    config: dict[str, Any] = {"user": check_user(user), "manage_etc_hosts": True}
    if not host_keys:
        return config
    ssh_keys = {}
    for key_type, pair in host_keys.items():
        if key_type not in DEFAULT_TYPES:
            raise DownburstError(f"host_keys: {key_type!r} is not one of {', '.join(DEFAULT_TYPES)}")
        ssh_keys[f"{key_type}_private"] = pair["private"]
        ssh_keys[f"{key_type}_public"] = pair["public"].strip()
    return {**config, "ssh_deletekeys": True, "ssh_keys": ssh_keys}


def meta_data_text(meta: dict[str, Any]) -> str:
    # JSON is YAML: downburst reads it, and the vpshost needs no YAML library.
    return json.dumps(meta, indent=2) + "\n"


def user_data_text(user: dict[str, Any]) -> str:
    """A ``#cloud-config`` document (downburst passes a non-archive user-data file on as one part)."""
    return "#cloud-config\n" + json.dumps(user, indent=2) + "\n"


def memory_file(name: str, text: str) -> int:
    """``text`` in an anonymous file in memory: a descriptor N that a child process is given
    (``pass_fds``) and opens as ``/dev/fd/N``. It is never on disk, and it is gone once the
    last process holding it has ended, even one that was killed."""
    fd = os.memfd_create(name)
    with os.fdopen(fd, "w", closefd=False) as f:
        f.write(text)
    return fd


def run_downburst(argv: list[str], pass_fds: tuple[int, ...] = (), record: str | None = None) -> tuple[int, str]:
    """Run downburst in a process group of its own; (exit code, standard
    error). With ``record`` (a file, see create_record), the process group is
    written there while it runs, so that an unlock can end this create."""
    proc = subprocess.Popen(  # pylint: disable=consider-using-with  # waited for below, or ended by another run
        argv, pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    if record:
        _write_record(record, {"pgid": proc.pid, "started": _start_time(proc.pid), "argv": argv})
    try:
        _out, err = proc.communicate()
    finally:
        if record and os.path.exists(record):
            os.unlink(record)
    return proc.returncode, err.decode(errors="replace")


def create_record(home: str, uri: str, name: str) -> str:
    """The file where the create of VM ``name`` on ``uri`` names its process group."""
    return os.path.join(home, CREATES_DIR.removeprefix("~/"), f"{re.sub(r'[^A-Za-z0-9._-]', '_', uri)}.{name}.json")


def end_running_create(record: str, grace: float = 10.0) -> bool:
    """End the create recorded in ``record`` if it still runs (SIGTERM to its
    process group, SIGKILL after ``grace`` seconds); True if one was ended.
    A record whose process is gone, or is another process now, is removed."""
    try:
        with open(record, encoding="utf-8") as f:
            running = json.load(f)
        pgid, started = int(running["pgid"]), running["started"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    ended = False
    if _start_time(pgid) == started:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            ended = True
            deadline = time.monotonic() + wait
            while _start_time(pgid) == started and time.monotonic() < deadline:
                time.sleep(0.2)
            if _start_time(pgid) != started:
                break
    if os.path.exists(record):
        os.unlink(record)
    return ended


def _start_time(pid: int) -> str | None:
    """The process's start time (so that a reused pid is not taken for it), or None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def _write_record(path: str, content: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f)


def create_argv(executable: str, uri: str, name: str, meta_file: str, user_file: str, fetch_default_key: bool) -> list[str]:
    argv = [executable, "-c", check_uri(uri), "create", "--wait"]
    if not fetch_default_key:
        argv.append("--nokey")
    return [*argv, f"--meta-data={meta_file}", f"--user-data={user_file}", name]


def destroy_argv(executable: str, uri: str, name: str) -> list[str]:
    # -v: downburst says "No virtual machine found" only at debug level.
    return [executable, "-v", "-c", check_uri(uri), "destroy", name]


@dataclass
class CreateOutcome:
    """What a create came to, with the destroys of leftover VMs it took."""

    creates: int  # how many creates ran
    rc: int  # exit code of the last command run
    stderr: str  # its standard error
    argv: list[str]  # the last command run: the create, or the destroy of a leftover that failed
    leftover_kept: bool = False  # a create found a leftover VM and destroying it failed

    def error(self, name: str) -> str:
        """The failure in words (``rc`` is not 0): downburst's own error lines, and what failed."""
        errors = " ".join(error_lines(self.stderr))
        if self.leftover_kept:
            return (f"downburst create found a leftover VM {name}, and destroying it failed (exit {self.rc}): {errors}"
                    f" (command: {shlex.join(self.argv)})")
        return f"downburst create failed (exit {self.rc}): {errors}"


def create_with_retries(run: Callable[[list[str]], tuple[int, str]], create: list[str], destroy: list[str], retries: int) -> CreateOutcome:
    """Run ``create``; while it finds a leftover VM of that name, ``destroy`` it and create again,
    at most ``retries`` times (checked with check_retries), as teuthology does. ``run`` runs an
    argument vector and returns its exit code and standard error."""
    for attempt in range(1, retries + 1):
        rc, err = run(create)
        if rc == 0 or not says_exists(err):
            return CreateOutcome(attempt, rc, err, create)
        rc, err = run(destroy)
        if rc != 0:
            return CreateOutcome(attempt, rc, err, destroy, leftover_kept=True)
    rc, err = run(create)  # the last try: a leftover found now is reported as the create's failure
    return CreateOutcome(retries + 1, rc, err, create)


def says_exists(stderr: str) -> bool:
    """Did a create fail because a VM of that name is already there?"""
    return any(_EXISTS_RE.search(line) for line in error_lines(stderr))


def was_absent(stderr: str) -> bool:
    """Did a destroy find no VM?"""
    return bool(_NO_VM_RE.search(stderr))


def error_lines(stderr: str) -> list[str]:
    """downburst's own error report: its ERROR lines, else the last lines."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:") or "Error" in line.split(":", 1)[0]]
    return errors or lines[-5:]
