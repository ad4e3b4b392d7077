"""Programs run in a private mount namespace with some files or directories
of the test's bound over the machine's own (ssh's ~/.ssh, libvirt's
/etc/libvirt/libvirt.conf), so that a test's configuration is what the real
program reads and the machine's files are neither read nor changed."""

from __future__ import annotations

from pathlib import Path


def in_private_mounts(binds: dict[Path, Path], argv: list) -> list[str]:
    """argv, run with each key bound over its value (which must exist) in a mount namespace of its own."""
    script = 'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 1; shift 2; done; shift; exec "$@"'
    pairs = [str(path) for source, target in binds.items() for path in (source, target)]
    return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh", *pairs, "--", *map(str, argv)]
