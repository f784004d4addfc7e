"""The hub's side of a secure-aggregation round: route messages, then unmask only the sum.

The hub holds masked vectors, which are uniform in the ring whatever the update (each carries
a self-mask only its site and its neighbours' shares can remove), and adds them up as they
arrive, so it never holds one site's unmasked update even transiently. After the upload
phase it rebuilds, from the survivors' shares, the self-mask seed of every site that
uploaded and the mask key of every site that dropped after sharing keys, and removes those
masks from the running sum. Fewer than ``threshold`` sites at any phase, or fewer than
``threshold`` shares for a secret it needs, fails the round with a reason.

Every message is checked before use: round id (a message from another round is a replay),
phase, sender (known, not yet heard from this phase) and consistency with what was announced:
keys must be usable for key agreement, and shares are taken only as many, of the kind and at
the index the neighbour graph allows, so no site can make the hub rebuild from extra shares.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from fedmedclip.secagg import bounds, crypto
from fedmedclip.secagg.client import pairwise_sign
from fedmedclip.secagg.errors import ProtocolViolation, RoundFailed
from fedmedclip.secagg.messages import (
    AdvertiseKeys,
    EncryptedShare,
    KeyDirectory,
    MaskedInput,
    Phase,
    ShareInbox,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fedmedclip.secagg.params import RoundParams
from fedmedclip.secagg.shamir import combine_shares


@dataclass(frozen=True)
class Aggregate:
    """What the round publishes: the sums of the survivors' weighted updates and weights."""

    total: np.ndarray
    weight: int
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]

    def mean(self) -> np.ndarray:
        """The weighted mean, without any site's weight ever being seen alone."""
        if self.weight <= 0:
            raise RoundFailed("the survivors' total weight is zero; there is no mean")
        return self.total / self.weight


class SecAggServer:
    """One round at the hub. Call the ``receive_*`` methods as messages arrive and ``close_*``
    when a phase's deadline passes; ``cpu_seconds`` is the hub's own processing time."""

    def __init__(self, params: RoundParams) -> None:
        self.params = params
        self.phase = Phase.advertise
        self.failure: str | None = None
        self.cpu_seconds = 0.0
        self._keys: dict[str, AdvertiseKeys] = {}
        self._outbox: dict[str, list[EncryptedShare]] = defaultdict(list)
        self._shared: set[str] = set()
        self._uploaded: set[str] = set()
        self._sum: np.ndarray | None = None
        self._responses: dict[str, UnmaskResponse] = {}

    # -- checks shared by every receive ---------------------------------------------------

    def _accept(
        self,
        message: AdvertiseKeys | ShareKeys | MaskedInput | UnmaskResponse,
        phase: Phase,
        seen: set[str] | dict,
        allowed: set[str] | tuple[str, ...],
    ) -> None:
        if message.round_id != self.params.round_id:
            raise ProtocolViolation(
                f"message for round {message.round_id!r} refused: this is round "
                f"{self.params.round_id!r} (replayed or misrouted)"
            )
        if self.phase != phase or message.phase != phase:
            raise ProtocolViolation(
                f"{message.phase} message refused: the round is in phase {self.phase}"
            )
        if message.client_id not in allowed:
            raise ProtocolViolation(f"{message.client_id!r} may not send {phase} messages")
        if message.client_id in seen:
            raise ProtocolViolation(f"repeated {phase} message from {message.client_id!r}")

    def _fail(self, reason: str) -> RoundFailed:
        self.phase = Phase.failed
        self.failure = reason
        self._sum = None
        return RoundFailed(reason)

    def _require(self, count: int, what: str) -> None:
        if count < self.params.threshold:
            raise self._fail(f"only {count} sites {what}; the threshold is {self.params.threshold}")

    # -- phase 1: keys --------------------------------------------------------------------

    def receive_advertise(self, message: AdvertiseKeys) -> None:
        """Take a site's keys, refusing one no neighbour could agree a key with: accepted,
        it would fail every honest neighbour's share phase."""
        self._accept(message, Phase.advertise, self._keys, self.params.clients)
        for name, key in (("cipher_key", message.cipher_key), ("mask_key", message.mask_key)):
            try:
                crypto.check_public_key(key)
            except ValueError as exc:
                raise ProtocolViolation(f"{name} of {message.client_id!r} {exc}") from exc
        self._keys[message.client_id] = message

    def close_advertise(self) -> KeyDirectory:
        self._require(len(self._keys), "advertised keys")
        self.phase = Phase.share
        return KeyDirectory(round_id=self.params.round_id, keys=self._keys)

    # -- phase 2: shares ------------------------------------------------------------------

    def receive_shares(self, message: ShareKeys) -> None:
        started = time.process_time()
        self._accept(message, Phase.share, self._shared, tuple(self._keys))
        sender = message.client_id
        neighbours = set(self.params.neighbours[sender]) & set(self._keys)
        recipients = [s.recipient for s in message.shares]
        if (
            any(s.sender != sender for s in message.shares)
            or set(recipients) != neighbours
            or (len(recipients) != len(neighbours))
        ):
            raise ProtocolViolation(
                f"{sender!r} must send exactly one share to each neighbour that advertised"
            )
        for share in message.shares:
            self._outbox[share.recipient].append(share)
        self._shared.add(sender)
        self.cpu_seconds += time.process_time() - started

    def close_shares(self) -> dict[str, ShareInbox]:
        self._require(len(self._shared), "shared their keys")
        self.phase = Phase.upload
        return {
            site: ShareInbox(
                round_id=self.params.round_id,
                recipient=site,
                shares=[s for s in self._outbox[site] if s.sender in self._shared],
            )
            for site in sorted(self._shared)
        }

    # -- phase 3: masked upload -----------------------------------------------------------

    def receive_masked(self, message: MaskedInput) -> None:
        started = time.process_time()
        self._accept(message, Phase.upload, self._uploaded, tuple(self._shared))
        dtype = np.dtype(self.params.fixed_point.dtype).newbyteorder("<")
        if len(message.masked) != self.params.length * dtype.itemsize:
            raise ProtocolViolation(
                f"masked vector of {len(message.masked)} bytes, expected "
                f"{self.params.length * dtype.itemsize}"
            )
        vector = np.frombuffer(message.masked, dtype=dtype).astype(self.params.fixed_point.dtype)
        self._sum = vector.copy() if self._sum is None else self._sum + vector
        self._uploaded.add(message.client_id)
        self.cpu_seconds += time.process_time() - started

    def close_upload(self) -> UnmaskRequest:
        self._require(len(self._uploaded), "uploaded a masked update")
        self.phase = Phase.unmask
        return UnmaskRequest(
            round_id=self.params.round_id,
            survivors=sorted(self._uploaded),
            dropped=sorted(self._shared - self._uploaded),
        )

    # -- phase 4: unmasking ---------------------------------------------------------------

    def receive_unmask(self, message: UnmaskResponse) -> None:
        """Take a survivor's revealed shares, only as many as the graph lets it hold.

        A holder has one share of each neighbour that shared with it, at the index the
        graph gives it among that owner's neighbours; it may reveal the seed share of an
        owner that uploaded and the key share of one that dropped, at most one per owner.
        Anything beyond is refused whole: rebuilding a secret costs time quadratic in its
        share count, so extra shares would only buy a hostile site the hub's CPU.
        """
        self._accept(message, Phase.unmask, self._responses, tuple(self._uploaded))
        holder = message.client_id
        sharers = set(self.params.neighbours[holder]) & self._shared
        asked = {"seed": sharers & self._uploaded, "key": sharers - self._uploaded}
        counts = Counter(item.owner for item in (*message.seed_shares, *message.key_shares))
        repeated = sorted(owner for owner, count in counts.items() if count > 1)
        if repeated:
            raise ProtocolViolation(
                f"{holder!r} revealed {counts[repeated[0]]} shares of {repeated[0]!r}; a site "
                "holds one share of each neighbour"
            )
        for kind, items in (("seed", message.seed_shares), ("key", message.key_shares)):
            for item in items:
                if item.owner not in asked[kind]:
                    raise ProtocolViolation(f"{kind} share of {item.owner!r} was not asked for")
                index = self.params.neighbours[item.owner].index(holder) + 1
                if item.index != index:
                    raise ProtocolViolation(
                        f"{kind} share of {item.owner!r} from {holder!r} has index "
                        f"{item.index}; the graph gives it {index}"
                    )
        self._responses[holder] = message

    def _rebuild(self, owner: str, kind: str) -> bytes:
        shares = {
            (item.index, item.share)
            for response in self._responses.values()
            for item in (response.seed_shares if kind == "seed" else response.key_shares)
            if item.owner == owner
        }
        if len(shares) < self.params.threshold:
            raise self._fail(
                f"only {len(shares)} shares of the {kind} of {owner!r} arrived; the threshold "
                f"is {self.params.threshold}"
            )
        return combine_shares(sorted(shares))

    def finish(self) -> Aggregate:
        """Remove the masks from the running sum and publish it, or fail with a reason: too
        few shares, or a sum outside the round's bounds (:func:`bounds.violation`)."""
        if self.phase != Phase.unmask:
            raise ProtocolViolation(f"cannot finish in phase {self.phase}")
        started = time.process_time()
        self._require(len(self._responses), "answered the unmasking phase")
        fixed, length = self.params.fixed_point, self.params.length
        total = self._sum
        assert total is not None  # close_upload required uploads
        for owner in sorted(self._uploaded):
            total -= crypto.expand_mask(self._rebuild(owner, "seed"), length, fixed.dtype)
        dropped = sorted(self._shared - self._uploaded)
        for owner in dropped:
            private = crypto.private_from_bytes(self._rebuild(owner, "key"))
            if crypto.public_bytes(private) != self._keys[owner].mask_key:
                raise self._fail(f"the rebuilt mask key of {owner!r} does not match its key")
            for peer in self.params.neighbours[owner]:
                if peer not in self._uploaded:
                    continue
                seed = crypto.pair_key(
                    private, self._keys[peer].mask_key, "mask", self.params.round_id, owner, peer
                )
                mask = crypto.expand_mask(seed, length, fixed.dtype)
                # ``peer`` applied pairwise_sign(peer, owner) * mask; take it back out.
                if pairwise_sign(peer, owner) > 0:
                    total -= mask
                else:
                    total += mask
        values, weight = fixed.decode_sum(total)
        broken = bounds.violation(self.params, values, weight, len(self._uploaded))
        if broken is not None:
            raise self._fail(broken)
        self._sum = None
        self.phase = Phase.done
        self.cpu_seconds += time.process_time() - started
        return Aggregate(values, weight, tuple(sorted(self._uploaded)), tuple(dropped))
