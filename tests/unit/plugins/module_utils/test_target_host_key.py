# Copyright: teuthology.lab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_keys.target_host_key: the one key a teuthology target gets."""

from __future__ import annotations

import base64
import struct

import pytest

from ansible_collections.teuthology.lab.plugins.module_utils.host_keys import (
    KNOWN_KEY_TYPES,
    TARGET_KEY_PREFERENCE,
    HostKeyError,
    normalize_host_keys,
    target_host_key,
)


def key(key_type: str, fill: int = 0) -> str:
    blob = struct.pack(">I", len(key_type)) + key_type.encode() + struct.pack(">I", 32) + bytes([fill]) * 32
    return f"{key_type} {base64.b64encode(blob).decode()}"


ED25519 = key("ssh-ed25519")
ECDSA = key("ecdsa-sha2-nistp256")
ECDSA384 = key("ecdsa-sha2-nistp384")
RSA = key("ssh-rsa")


def test_ed25519_first_whatever_else_is_recorded():
    for keys in ([ED25519, ECDSA, RSA], [RSA, ED25519], [ED25519, ECDSA]):
        assert target_host_key(normalize_host_keys("\n".join(keys))) == ED25519
    # Not normalized (another order, a comment): the same choice.
    assert target_host_key(f"{RSA} root@vpm001\n{ED25519} root@vpm001\n") == ED25519


def test_then_ecdsa_then_rsa():
    assert target_host_key("\n".join([RSA, ECDSA384, ECDSA])) == ECDSA
    assert target_host_key("\n".join([RSA, ECDSA384])) == ECDSA384
    assert target_host_key(RSA) == RSA


def test_of_two_keys_of_a_type_the_first_in_sorted_order():
    first, second = sorted([key("ssh-ed25519", 1), key("ssh-ed25519", 2)])
    assert target_host_key(f"{second}\n{first}") == first


def test_every_known_type_has_a_place():
    assert set(TARGET_KEY_PREFERENCE) == KNOWN_KEY_TYPES
    assert len(TARGET_KEY_PREFERENCE) == len(KNOWN_KEY_TYPES)
    assert TARGET_KEY_PREFERENCE[0] == "ssh-ed25519"


@pytest.mark.parametrize("empty", [None, "", " \n"])
def test_no_key_is_none(empty):
    assert target_host_key(empty) is None


def test_an_invalid_key_is_an_error():
    with pytest.raises(HostKeyError, match="not a known SSH key type"):
        target_host_key(f"{ED25519}\nssh-foo AAAA")
