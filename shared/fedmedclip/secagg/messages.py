"""Typed messages of the four phases, as they would travel over the hub's REST API.

Every message names its round and its phase, and every message a site sends names the site,
so the hub can refuse a message from another round (a replay) or for another phase before
looking at its contents. Binary fields are base64 in JSON.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Binary fields are raw bytes in Python and base64 in JSON, both ways.
_CONFIG = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")


class Phase(StrEnum):
    """The hub's phases, in order; ``done`` and ``failed`` are final."""

    advertise = "advertise"
    share = "share"
    upload = "upload"
    unmask = "unmask"
    done = "done"
    failed = "failed"


class _Message(BaseModel):
    model_config = _CONFIG

    round_id: str = Field(min_length=1, max_length=128)


class _SiteMessage(_Message):
    client_id: str = Field(min_length=1, max_length=128)


class AdvertiseKeys(_SiteMessage):
    """Phase 1, site -> hub: two fresh X25519 public keys (share encryption, mask agreement)."""

    phase: Literal[Phase.advertise] = Phase.advertise
    cipher_key: bytes = Field(min_length=32, max_length=32)
    mask_key: bytes = Field(min_length=32, max_length=32)


class KeyDirectory(_Message):
    """Hub -> every site: the public keys of every site that advertised."""

    phase: Literal[Phase.advertise] = Phase.advertise
    keys: dict[str, AdvertiseKeys]


class EncryptedShare(BaseModel):
    """One site's shares (mask-key and self-mask seed) for one neighbour, sealed for it."""

    model_config = _CONFIG

    sender: str
    recipient: str
    sealed: bytes = Field(max_length=256)


class ShareKeys(_SiteMessage):
    """Phase 2, site -> hub: a sealed share for each neighbour, for the hub to forward."""

    phase: Literal[Phase.share] = Phase.share
    shares: list[EncryptedShare]


class ShareInbox(_Message):
    """Hub -> one site: the sealed shares its neighbours sent it (they define who is in)."""

    phase: Literal[Phase.share] = Phase.share
    recipient: str
    shares: list[EncryptedShare]


class MaskedInput(_SiteMessage):
    """Phase 3, site -> hub: the masked fixed-point vector (little-endian ring elements)."""

    phase: Literal[Phase.upload] = Phase.upload
    masked: bytes


class UnmaskRequest(_Message):
    """Hub -> surviving sites: who uploaded and who dropped after sharing keys."""

    phase: Literal[Phase.unmask] = Phase.unmask
    survivors: list[str]
    dropped: list[str]


class RevealedShare(BaseModel):
    """A Shamir share of a neighbour's secret: ``index`` is its x-coordinate."""

    model_config = _CONFIG

    owner: str
    index: int = Field(ge=1, le=65535)
    share: bytes = Field(min_length=32, max_length=32)


class UnmaskResponse(_SiteMessage):
    """Phase 4, site -> hub: self-mask seed shares of survivors, mask-key shares of dropouts."""

    phase: Literal[Phase.unmask] = Phase.unmask
    seed_shares: list[RevealedShare]
    key_shares: list[RevealedShare]
