"""Minimal writer for cpio "newc" archives, the format Linux unpacks as initramfs.

Written in Python (rather than calling cpio(1)) so entries get uid 0 and device
nodes like /dev/console without needing root privileges or fakeroot.
"""

from __future__ import annotations

import stat
from typing import BinaryIO


class NewcWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), nlink: int = 1) -> None:
        name_b = name.lstrip("/").encode() + b"\0"
        fields = [self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0]
        self._ino += 1
        header = b"070701" + b"".join(b"%08x" % f for f in fields)
        self._out.write(header + name_b + b"\0" * (-(len(header) + len(name_b)) % 4))
        self._out.write(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def close(self) -> None:
        """Write the trailer; the caller closes the underlying stream."""
        self._entry("TRAILER!!!", 0, nlink=1)
