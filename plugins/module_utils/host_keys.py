# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SSH host keys: the one place that decides what a valid public host key is.

Keys recorded here end up in ``known_hosts`` data and in the arguments of a
``KnownHostsCommand``, which ssh splits into words and ``%``-expands itself
(no shell is involved), so validation is strict: a known type, a plain base64
blob, and a blob that names the same type.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import shlex
import struct
import time
from collections.abc import Callable, Sequence

KNOWN_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
_BLOB_RE = re.compile(r"^[A-Za-z0-9+/]+={0,3}\Z")
_ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
# Host names and addresses: also what may stand as one command-line argument.
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*\Z")


class HostKeyError(ValueError):
    """A host key line that is not ``TYPE BASE64 [comment]`` of a known type."""


def blob_key_type(blob: str) -> str | None:
    """The key type named inside a base64 key blob (an SSH string), or None."""
    if not _BLOB_RE.match(blob):
        return None
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 4:
        return None
    (length,) = struct.unpack(">I", raw[:4])
    if length > len(raw) - 4:
        return None
    try:
        return raw[4 : 4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None


def parse_key_line(line: str) -> tuple[str, str]:
    """Split and check one ``TYPE BASE64 [comment]`` line; return (type, blob)."""
    fields = line.split()
    if len(fields) < 2:
        raise HostKeyError(f"{line!r} is not 'TYPE BASE64 [comment]'")
    key_type, blob = fields[0], fields[1]
    if key_type not in KNOWN_KEY_TYPES:
        raise HostKeyError(f"{key_type!r} is not a known SSH key type ({', '.join(sorted(KNOWN_KEY_TYPES))})")
    named = blob_key_type(blob)
    if named is None:
        raise HostKeyError(f"the key of type {key_type} is not valid base64 key data")
    if named != key_type:
        raise HostKeyError(f"the key data says {named!r} but the line says {key_type!r}")
    return key_type, blob


def normalize_host_keys(text: str) -> str:
    """Validate one or more key lines; return them as ``TYPE BASE64`` lines.

    Comments are dropped, duplicates removed and the lines sorted, so that
    what is stored is exactly what ssh compares, and the same keys scanned
    in another order are the same text.
    """
    keys = {" ".join(parse_key_line(line)) for line in text.splitlines() if line.strip()}
    if not keys:
        raise HostKeyError("no key given")
    return "\n".join(sorted(keys))


def split_keys(text: str) -> list[tuple[str, str]]:
    """(type, blob) of each line of a recorded, normalized key text."""
    return [parse_key_line(line) for line in normalize_host_keys(text).splitlines()]


# The key a teuthology target gets, most preferred first: every known type, so the choice is total.
TARGET_KEY_PREFERENCE = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
)


def target_host_key(text: str | None) -> str | None:
    """The one ``TYPE BASE64`` line a teuthology ``targets:`` value holds, or None without a key.

    teuthology reads the value as one key (``host_key.split(' ', 1)``), so of the
    recorded keys it gets the first type of TARGET_KEY_PREFERENCE (ed25519 when
    there is one); of two keys of that type, the first in sorted order.
    """
    if not text or not text.strip():
        return None
    keys = split_keys(text)  # validated, sorted
    return " ".join(min(keys, key=lambda key: (TARGET_KEY_PREFERENCE.index(key[0]), key[1])))


# ---------------------------------------------------------------- scanning

# The host key types OpenSSH serves by default: what is scanned, and what a new VM gets.
DEFAULT_TYPES = ("ed25519", "ecdsa", "rsa")


def check_host(host: str) -> str:
    """An address that is safe as a command-line argument (never an option)."""
    if not HOST_RE.match(host or ""):
        raise HostKeyError(f"{host!r} is not a host name or address")
    return host


def keyscan_argv(host: str, port: int, timeout: int, types: tuple[str, ...] = DEFAULT_TYPES) -> list[str]:
    """The ssh-keyscan command line that asks for these key types."""
    return ["ssh-keyscan", "-T", str(timeout), "-p", str(port), "-t", ",".join(types), host]


class KeyscanError(HostKeyError):
    """The host served no key, or an invalid one."""


def scan_host_keys(
    run: Callable[[list[str]], tuple[int, str, str]],
    host: str,
    port: int,
    types: Sequence[str] = DEFAULT_TYPES,
    timeout: int = 10,
    wait: float = 0,
    attempts: int = 3,
) -> tuple[str, list[list[str]]]:
    """Every key of ``types`` the host serves, asked one type at a time:
    right after a boot, one ssh-keyscan asking for several types can stall on
    one of them until its timeout and come back without it. First, until
    ``wait`` seconds have passed, until the host answers for some type; then
    each type it has not answered for yet, ``attempts`` times at most (a type
    it does not serve answers nothing, quickly). ``run`` runs an argument
    vector and returns (exit code, stdout, stderr). Returns the normalized
    keys and the command lines run."""
    commands: list[list[str]] = []
    found: dict[str, str] = {}
    errors: list[str] = []

    def ask(key_type: str) -> None:
        argv = keyscan_argv(host, port, timeout, (key_type,))
        commands.append(argv)
        _rc, out, err = run(argv)
        if any(line and not line.startswith("#") for line in out.splitlines()):
            found[key_type] = out
        elif err.strip():
            errors.append(err.strip().splitlines()[-1])

    deadline = time.monotonic() + wait
    while not found:
        for key_type in types:
            ask(key_type)
            if found:
                break
        if not found and time.monotonic() >= deadline:
            last = f": {errors[-1]}" if errors else ""
            raise KeyscanError(f"{host} port {port} served no SSH host key (waited {wait:g} s){last}")
        if not found:
            time.sleep(1)
    for key_type in types:
        for _attempt in range(attempts):
            if key_type in found:
                break
            ask(key_type)
    try:
        return parse_keyscan("".join(found[t] for t in types if t in found)), commands
    except HostKeyError as error:
        raise KeyscanError(f"{host} port {port} served an invalid host key: {error}") from None


def parse_keyscan(output: str) -> str:
    """ssh-keyscan's ``HOST TYPE BLOB`` lines -> normalized ``TYPE BLOB`` lines.

    Comment lines (``# host:22 SSH-2.0-...``) are skipped; a line that is not
    a valid key is an error, and so is output without any key.
    """
    lines = [line.split(None, 1)[1] for line in output.splitlines() if line.strip() and not line.startswith("#") and " " in line]
    return normalize_host_keys("\n".join(lines))


def generate_host_key_pairs(types: Sequence[str] = DEFAULT_TYPES) -> dict[str, dict[str, str]]:
    """Fresh host key pairs made in memory (no file ever holds the private
    keys): ed25519, ecdsa P-256 and rsa 3072, as ssh-keygen makes them by
    default. ``{type: {"private": OpenSSH PEM, "public": "TYPE BASE64"}}``."""
    # Imported here: only the controller generates keys, and ansible-core brings cryptography there.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    makers = {
        "ed25519": ed25519.Ed25519PrivateKey.generate,
        "ecdsa": lambda: ec.generate_private_key(ec.SECP256R1()),
        "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072),
    }
    pairs = {}
    for key_type in types:
        if key_type not in makers:
            raise HostKeyError(f"{key_type!r} is not one of {', '.join(DEFAULT_TYPES)}")
        key = makers[key_type]()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        pairs[key_type] = {"private": private, "public": normalize_host_keys(public)}
    return pairs


# ---------------------------------------------------------------- pinning

# What the inventory sets per host so that ssh checks the recorded key and
# nothing else: see plugins/inventory/locks.py for the modes.


def known_hosts_lines(alias: str, keys: str) -> list[str]:
    return [f"{alias} {key_type} {blob}" for key_type, blob in split_keys(keys)]


def known_hosts_command(alias: str, keys: str) -> str:
    """A KnownHostsCommand printing the recorded keys for ``alias``.

    No shell runs it: ssh splits it into words itself (shell-like quoting),
    expands ``%`` tokens and ``${VAR}`` in every word after the program
    (``%%`` is a literal ``%``) and executes the program, which must be an
    absolute path. So it is built only from validated parts that hold no
    ``%``, ``$``, quote or blank: the alias is checked by the caller (node
    names are letters, digits, '.', '-', '_'), types come from a fixed set,
    blobs match ``^[A-Za-z0-9+/]+={0,3}$``. printf reuses its format for each
    (alias, type, blob) triple.
    """
    fields = " ".join(known_hosts_lines(alias, keys))
    return f"/usr/bin/printf '%%s %%s %%s\\n' {fields}"


def control_path(node: dict) -> str:
    """A ControlPath of its own for this node, this lock, these keys, and the
    remote user and port of the connection.

    A live ControlMaster is reused without any key check or login, and
    Ansible's default path hashes only host, port and user: a reinstalled VM
    (or another slot on the same address) would ride on the old master. The
    user and port may be overridden after the inventory is built (``-e
    ansible_user=...``), so ssh fills them in itself (``%r``, ``%p``; Ansible
    turns ``%%`` into ``%`` and ``%(directory)s`` into its control path
    directory): a run as another user never rides on root's master. The name
    stays short: a unix socket path holds at most 104-108 bytes, and ssh
    appends 17 characters to it while it creates the master.
    """
    identity = "\0".join(str(node.get(field)) for field in ("name", "locked_since", "ssh_pub_key", "ssh_host", "ssh_port"))
    return "%(directory)s/tlab-" + hashlib.sha256(identity.encode()).hexdigest()[:10] + "-%%r@%%p"


def pinned_ssh_vars(node: dict, mode: str, known_hosts_file: str | None = None) -> dict[str, object]:
    """The host variables that pin ``node``'s recorded keys (raises HostKeyError
    if they are not valid). ``known_hosts_file`` mode expects the caller to
    write ``known_hosts_lines`` of every pinned node to that file."""
    alias = node["name"]
    if not _ALIAS_RE.match(alias):
        raise HostKeyError(f"{alias!r} is not a node name that can be a HostKeyAlias")
    keys = node.get("ssh_pub_key") or ""
    # Every source of host keys is set on the command line, which beats any ssh_config
    # (ssh keeps the first value it obtains): KnownHostsCommand=none in file mode, so that
    # no configured command adds keys, and no SSHFP records from DNS in either mode.
    if mode == "known_hosts_command":
        source = f"-o UserKnownHostsFile=/dev/null -o \"KnownHostsCommand={known_hosts_command(alias, keys)}\""
    elif mode == "known_hosts_file":
        split_keys(keys)  # validate, as in the other mode
        source = f"-o UserKnownHostsFile={shlex.quote(str(known_hosts_file))} -o KnownHostsCommand=none"
    else:
        raise ValueError(f"no pinning in mode {mode!r}")
    return {
        "ansible_ssh_common_args": (
            f"-o StrictHostKeyChecking=yes -o HostKeyAlias={alias} -o GlobalKnownHostsFile=/dev/null {source} -o VerifyHostKeyDNS=no"
        ),
        "ansible_ssh_host_key_checking": True,
        "ansible_control_path": control_path(node),
    }
