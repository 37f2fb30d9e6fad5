"""Signatures on cascaded entries: Ed25519 over canonical JSON, so every node, whatever
its store, signs and verifies the same bytes."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from yunnao.registry.hashing import canonical_json


def sign(key: Ed25519PrivateKey, payload: Any) -> str:
    """The base64url signature of ``payload``'s canonical JSON."""
    return base64.urlsafe_b64encode(key.sign(canonical_json(payload))).decode().rstrip("=")


def verify(public_key: Ed25519PublicKey, payload: Any, signature: str) -> bool:
    """Whether ``signature`` is ``public_key``'s signature of ``payload``."""
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        public_key.verify(raw, canonical_json(payload))
    except (InvalidSignature, ValueError):
        return False
    return True
