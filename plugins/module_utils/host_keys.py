# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SSH host keys: the one place that decides what a valid public host key is.

Keys recorded here end up in ``known_hosts`` data and in commands that ssh
runs through a shell (``KnownHostsCommand``), so validation is strict: a
known type, a plain base64 blob, and a blob that names the same type.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct

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
_BLOB_RE = re.compile(r"^[A-Za-z0-9+/]+={0,3}$")


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

    Comments are dropped and duplicates removed (first occurrence kept), so
    what is stored is exactly what ssh compares.
    """
    keys: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key = " ".join(parse_key_line(line))
        if key not in keys:
            keys.append(key)
    if not keys:
        raise HostKeyError("no key given")
    return "\n".join(keys)
