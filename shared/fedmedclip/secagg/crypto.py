"""The primitives the protocol composes, all from the ``cryptography`` package.

- X25519 key agreement, then HKDF-SHA256 bound to the round and the pair, gives each pair of
  sites a shared key that nobody else (the hub included) can compute. A public key of small
  order (all zeros, or one of the other points of order 1, 2, 4 or 8 and their non-canonical
  encodings) gives every peer the all-zero secret, which ``cryptography`` refuses; such a key
  is refused where it arrives (:func:`check_public_key`).
- AES-256-GCM encrypts the Shamir shares one site sends another through the hub; the round
  and both names are authenticated data, so a share cannot be replayed into another round or
  re-addressed.
- AES-256-CTR keystream under a one-use key is the pseudo-random generator that expands a
  32-byte seed into a mask vector. Each key masks exactly one vector, so the zero nonce is
  never reused under a key.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

KEY_BYTES = 32
NONCE_BYTES = 12
_DOMAIN = b"fedmedclip-secagg/v1/"


def new_private_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def private_from_bytes(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


_PROBE = X25519PrivateKey.generate()
"""Any scalar will do: X25519 clamps scalars to multiples of 8, so the exchange with a point
of small order gives the all-zero secret for every private key, this one included."""


def check_public_key(raw: bytes) -> None:
    """Raise ``ValueError`` naming the problem if no peer can agree a key with ``raw``.

    The test is the agreement itself (one scalar multiplication), so it refuses exactly the
    keys every later :func:`pair_key` with them would fail on, whatever their encoding.
    """
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError as exc:
        raise ValueError(
            "is not a usable X25519 public key (a point of small order: every key agreed "
            "with it would be all zeros)"
        ) from exc


def pair_key(
    private: X25519PrivateKey, peer_public: bytes, purpose: str, round_id: str, a: str, b: str
) -> bytes:
    """A 32-byte key only the two sites ``a`` and ``b`` share, for one purpose in one round."""
    secret = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    low, high = sorted((a, b))
    info = b"\x00".join(x.encode() for x in (purpose, round_id, low, high))
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=_DOMAIN + info).derive(secret)


def _aad(round_id: str, sender: str, recipient: str) -> bytes:
    return b"\x00".join(x.encode() for x in ("share", round_id, sender, recipient))


def seal(key: bytes, plaintext: bytes, round_id: str, sender: str, recipient: str) -> bytes:
    """``nonce || AES-GCM ciphertext`` of a share bound to its round, sender and recipient."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _aad(round_id, sender, recipient))


def unseal(key: bytes, sealed: bytes, round_id: str, sender: str, recipient: str) -> bytes:
    """Decrypt ``seal``'s output; raises ``cryptography.exceptions.InvalidTag`` if tampered."""
    nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    return AESGCM(key).decrypt(nonce, body, _aad(round_id, sender, recipient))


def expand_mask(seed: bytes, length: int, dtype: type[np.unsignedinteger]) -> np.ndarray:
    """``length`` uniform ring elements from a 32-byte one-use seed (AES-256-CTR keystream)."""
    n_bytes = length * np.dtype(dtype).itemsize
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(n_bytes)) + encryptor.finalize()
    return np.frombuffer(stream, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
