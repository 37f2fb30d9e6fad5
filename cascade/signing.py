"""Signatures on cascaded entries: Ed25519 over canonical JSON, so every node, whatever
its store, signs and verifies the same bytes."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from yunnao.registry.hashing import canonical_json


def sign(key: Ed25519PrivateKey, payload: Any) -> str:
    """The base64url signature of ``payload``'s canonical JSON."""
    return base64.urlsafe_b64encode(key.sign(canonical_json(payload))).decode().rstrip("=")


def verify(public_key: Ed25519PublicKey, payload: Any, signature: str) -> bool:
    """Whether ``signature`` is ``public_key``'s signature of ``payload``."""
    try:
        return verify_bytes(public_key, canonical_json(payload), signature)
    except ValueError:  # e.g. a lone surrogate, which has no UTF-8
        return False


_verifiers: dict[bytes, VerifyKey] = {}


def _verifier(public_key: Ed25519PublicKey) -> VerifyKey:
    raw = public_key.public_bytes_raw()
    found = _verifiers.get(raw)
    if found is None:
        if len(_verifiers) > 1000:  # node keys: a few; never a cache a peer can grow
            _verifiers.clear()
        found = _verifiers[raw] = VerifyKey(raw)
    return found


def verify_bytes(public_key: Ed25519PublicKey, data: bytes, signature: str) -> bool:
    """Whether ``signature`` is ``public_key``'s signature of ``data``, checked by
    libsodium (PyNaCl): about twice as fast as OpenSSL here, and at least as strict (it
    also refuses small-order or non-canonical keys and points, which an honest signer
    never makes), so what it accepts OpenSSL accepts too."""
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        if len(raw) != 64:
            return False
        _verifier(public_key).verify(data, raw)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


# What a feed item's origin signs: every member but the signature, in canonical order.
SIGNED_MEMBERS = ("at", "content_hash", "entity", "entry", "key", "op", "origin", "origin_seq")
_MEMBERS = frozenset((*SIGNED_MEMBERS, "signature"))


def signed_bytes(item: dict[str, Any]) -> tuple[bytes, bytes]:
    """The canonical JSON of feed ``item`` without its signature (what its origin
    signs) and of its entry (what its content hash is of), the entry written once: the
    first holds the second as it stands alone. An item with other members than a feed
    item's is written the general way. Raises ValueError for text with no UTF-8."""
    entry = canonical_json(item["entry"])
    if item.keys() != _MEMBERS:
        return canonical_json({k: v for k, v in item.items() if k != "signature"}), entry
    parts = (
        b'"%s":%s' % (name.encode(), entry if name == "entry" else canonical_json(item[name]))
        for name in SIGNED_MEMBERS
    )
    return b"{" + b",".join(parts) + b"}", entry


def item_checks(item: dict[str, Any], signature_key: Ed25519PublicKey) -> bool:
    """Whether feed ``item``'s entry has its content hash and the item is signed with
    ``signature_key``."""
    try:
        data, entry = signed_bytes(item)
    except ValueError:  # e.g. a lone surrogate
        return False
    if hashlib.sha256(entry).hexdigest() != item["content_hash"]:
        return False
    return verify_bytes(signature_key, data, item["signature"])
