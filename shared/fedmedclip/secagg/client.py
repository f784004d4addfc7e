"""One site's side of a secure-aggregation round (Bonawitz et al., CCS 2017, with SecAgg+).

A site keeps two fresh X25519 key pairs and a fresh self-mask seed per round. It shares its
mask private key and its seed among its neighbours (Shamir, ``threshold`` of ``degree``) and
uploads ``x + PRG(seed) + sum over neighbours v of +-PRG(k_uv)``, where ``k_uv`` is the key it
agrees with ``v`` (``+`` when its name sorts first). Pairwise masks cancel in the sum; the
hub removes the self-masks with seeds rebuilt from the survivors, and the pairwise masks of
sites that dropped after sharing with their rebuilt keys. A site never reveals both the seed
and the key of one neighbour, so the hub never learns a single site's ``x``.

Trust model: honest-but-curious hub and sites (no signatures or consistency round; site
identity comes from the transport, mutual TLS in the services).
"""

from __future__ import annotations

import os
import struct

import numpy as np
from cryptography.exceptions import InvalidTag

from fedmedclip.secagg import bounds, crypto
from fedmedclip.secagg.errors import ProtocolViolation
from fedmedclip.secagg.messages import (
    AdvertiseKeys,
    EncryptedShare,
    KeyDirectory,
    MaskedInput,
    RevealedShare,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fedmedclip.secagg.params import RoundParams
from fedmedclip.secagg.shamir import SECRET_BYTES, split_secret

_INDEX = struct.Struct(">H")


def _usable(keys: AdvertiseKeys) -> bool:
    """Whether both of a site's advertised keys can be agreed with."""
    try:
        crypto.check_public_key(keys.cipher_key)
        crypto.check_public_key(keys.mask_key)
    except ValueError:
        return False
    return True


def pairwise_sign(owner: str, peer: str) -> int:
    """+1 when ``owner`` adds the pair's mask, -1 when it subtracts it."""
    return 1 if owner < peer else -1


class SecAggClient:
    """State of one site through the four phases; each method is called once, in order."""

    def __init__(self, client_id: str, params: RoundParams) -> None:
        if client_id not in params.clients:
            raise ValueError(f"{client_id!r} is not a site of round {params.round_id}")
        self.client_id = client_id
        self.params = params
        self._cipher_key = crypto.new_private_key()
        self._mask_key = crypto.new_private_key()
        self._seed = os.urandom(SECRET_BYTES)
        self._directory: dict[str, AdvertiseKeys] = {}
        self._held: dict[str, tuple[int, bytes, bytes]] = {}  # owner -> (index, key, seed)
        self._excluded: set[str] = set()  # advertised keys no agreement can use
        self._masked_with: tuple[str, ...] = ()
        self._step = 0

    def _advance(self, expected: int, name: str) -> None:
        if self._step != expected:
            raise ProtocolViolation(f"{self.client_id}: {name} called out of order")
        self._step += 1

    def _check_round(self, round_id: str) -> None:
        if round_id != self.params.round_id:
            raise ProtocolViolation(
                f"message for round {round_id!r}, this is round {self.params.round_id!r}"
            )

    def advertise(self) -> AdvertiseKeys:
        self._advance(0, "advertise")
        return AdvertiseKeys(
            round_id=self.params.round_id,
            client_id=self.client_id,
            cipher_key=crypto.public_bytes(self._cipher_key),
            mask_key=crypto.public_bytes(self._mask_key),
        )

    def share_keys(self, directory: KeyDirectory) -> ShareKeys:
        """Seal a share of the mask key and of the seed for each neighbour that advertised.

        A neighbour whose advertised key no key agreement can use (the hub should have
        refused it) is left out, as if it had not advertised: the round goes on without it
        as long as ``threshold`` neighbours are left.
        """
        self._advance(1, "share_keys")
        self._check_round(directory.round_id)
        own = directory.keys.get(self.client_id)
        if own is None or own.mask_key != crypto.public_bytes(self._mask_key):
            raise ProtocolViolation("the key directory does not hold this site's own keys")
        self._directory = {name: keys for name, keys in directory.keys.items() if _usable(keys)}
        self._excluded = set(directory.keys) - set(self._directory)
        peers = [v for v in self.params.neighbours[self.client_id] if v in self._directory]
        if len(peers) < self.params.threshold:
            raise ProtocolViolation(
                f"only {len(peers)} neighbours advertised keys, threshold is "
                f"{self.params.threshold}"
            )
        count = len(self.params.neighbours[self.client_id])
        threshold = self.params.threshold
        key_shares = split_secret(crypto.private_bytes(self._mask_key), threshold, count)
        seed_shares = split_secret(self._seed, threshold, count)
        shares = []
        positions = {v: i for i, v in enumerate(self.params.neighbours[self.client_id])}
        for v in peers:
            index, key_share = key_shares[positions[v]]
            _, seed_share = seed_shares[positions[v]]
            plaintext = _INDEX.pack(index) + key_share + seed_share
            key = self._channel_key(v)
            shares.append(
                EncryptedShare(
                    sender=self.client_id,
                    recipient=v,
                    sealed=crypto.seal(key, plaintext, self.params.round_id, self.client_id, v),
                )
            )
        return ShareKeys(round_id=self.params.round_id, client_id=self.client_id, shares=shares)

    def _channel_key(self, peer: str) -> bytes:
        return crypto.pair_key(
            self._cipher_key,
            self._directory[peer].cipher_key,
            "share",
            self.params.round_id,
            self.client_id,
            peer,
        )

    def _pair_seed(self, peer: str) -> bytes:
        return crypto.pair_key(
            self._mask_key,
            self._directory[peer].mask_key,
            "mask",
            self.params.round_id,
            self.client_id,
            peer,
        )

    def masked_input(self, inbox: ShareInbox, values: np.ndarray, weight: int) -> MaskedInput:
        """Keep the neighbours' shares and upload ``[weight * values, weight]`` under masks.

        The hub's sum is then ``(sum of weight * values, sum of weights)``: the weighted mean
        without any site's weight in the clear. ``values`` and ``weight`` are first clipped
        to the round's bounds, which the hub checks on the sum.
        """
        self._advance(2, "masked_input")
        self._check_round(inbox.round_id)
        if inbox.recipient != self.client_id:
            raise ProtocolViolation(f"share inbox for {inbox.recipient!r}, not this site")
        neighbours = set(self.params.neighbours[self.client_id])
        for item in inbox.shares:
            if item.sender in self._excluded:
                continue  # this site shared nothing with it and masks nothing with it
            if item.recipient != self.client_id or item.sender not in neighbours:
                raise ProtocolViolation(f"unexpected share from {item.sender!r}")
            if item.sender in self._held or item.sender not in self._directory:
                raise ProtocolViolation(f"repeated or unannounced share from {item.sender!r}")
            try:
                plain = crypto.unseal(
                    self._channel_key(item.sender),
                    item.sealed,
                    self.params.round_id,
                    item.sender,
                    self.client_id,
                )
            except InvalidTag as exc:
                raise ProtocolViolation(f"share from {item.sender!r} fails to decrypt") from exc
            (index,) = _INDEX.unpack(plain[: _INDEX.size])
            body = plain[_INDEX.size :]
            self._held[item.sender] = (index, body[:SECRET_BYTES], body[SECRET_BYTES:])
        self._masked_with = tuple(sorted(self._held))
        if len(self._masked_with) < self.params.threshold:
            raise ProtocolViolation(
                f"only {len(self._masked_with)} neighbours shared keys, threshold is "
                f"{self.params.threshold}"
            )
        fixed = self.params.fixed_point
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size != self.params.dimension:
            raise ValueError(
                f"update has {values.size} values, round expects {self.params.dimension}"
            )
        values = bounds.clip_values(values, self.params.norm_bound)
        weight = bounds.clip_weight(weight, self.params.max_weight)
        vector = fixed.encode(values * float(weight), weight, max_summands=len(self.params.clients))
        vector += crypto.expand_mask(self._seed, self.params.length, fixed.dtype)
        for peer in self._masked_with:
            mask = crypto.expand_mask(self._pair_seed(peer), self.params.length, fixed.dtype)
            if pairwise_sign(self.client_id, peer) > 0:
                vector += mask
            else:
                vector -= mask
        return MaskedInput(
            round_id=self.params.round_id,
            client_id=self.client_id,
            masked=vector.astype(np.dtype(fixed.dtype).newbyteorder("<")).tobytes(),
        )

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Reveal seed shares of surviving neighbours and key shares of dropped ones, never
        both for one neighbour."""
        self._advance(3, "unmask")
        self._check_round(request.round_id)
        survivors, dropped = set(request.survivors), set(request.dropped)
        if survivors & dropped:
            raise ProtocolViolation("a site is listed both as survivor and as dropped")
        if self.client_id not in survivors:
            raise ProtocolViolation("this site uploaded but is not listed as a survivor")
        if len(survivors) < self.params.threshold:
            raise ProtocolViolation(
                f"only {len(survivors)} survivors, threshold is {self.params.threshold}"
            )
        seed_shares, key_shares = [], []
        for owner in self._masked_with:
            index, key_share, seed_share = self._held[owner]
            if owner in survivors:
                seed_shares.append(RevealedShare(owner=owner, index=index, share=seed_share))
            elif owner in dropped:
                key_shares.append(RevealedShare(owner=owner, index=index, share=key_share))
            else:
                raise ProtocolViolation(f"neighbour {owner!r} is neither survivor nor dropped")
        return UnmaskResponse(
            round_id=self.params.round_id,
            client_id=self.client_id,
            seed_shares=seed_shares,
            key_shares=key_shares,
        )
