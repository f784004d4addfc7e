"""The public settings of one secure-aggregation round, and its neighbour graph.

Full Bonawitz et al. (CCS 2017) pairs every site with every other one: O(n) keys, shares and
masks per site, O(n^2) work for the hub. SecAgg+ (Bell et al., CCS 2020) pairs each site only
with ``degree`` neighbours on a random Harary graph: sites sit on a ring in an order drawn from
the round's public ``graph_seed`` and each pairs with the ``degree / 2`` nearest on each side.
A degree of about ``2 * log2(n)`` keeps the sum hidden while costs grow with ``log n``. Small
federations (``degree = n - 1``) get the complete graph, i.e. the original protocol.

Each site's secrets are shared among its neighbours with threshold ``threshold``; the hub can
rebuild a secret only from that many neighbours. ``threshold > degree / 2`` means the hub can
never collect both kinds of share for one site from honest neighbours, whatever it claims
about who dropped.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedmedclip.secagg.encoding import FixedPoint

MIN_CLIENTS = 3


def default_degree(n_clients: int) -> int:
    """Complete graph up to 5 sites, else the even number nearest above ``2 * log2(n)``."""
    target = 2 * math.ceil(math.log2(n_clients))
    return n_clients - 1 if target >= n_clients - 1 else target


def default_threshold(degree: int) -> int:
    """Two thirds of the neighbours, and always a strict majority."""
    return max(degree // 2 + 1, (2 * degree) // 3 + 1)


class RoundParams(BaseModel):
    """Chosen and published by the hub before the round; every message is checked against it."""

    # Base64 in JSON: the hub publishes these to the sites over its REST API.
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    round_id: str = Field(min_length=1, max_length=128)
    clients: tuple[str, ...]
    dimension: int = Field(ge=1, description="update length, not counting the weight")
    degree: int
    threshold: int
    graph_seed: bytes = Field(min_length=32, max_length=32)
    bits: Literal[32, 64] = 32
    frac_bits: int = Field(default=12, ge=0, le=40)
    norm_bound: float | None = Field(
        default=None, gt=0, description="L2 bound each site clips its update to (bounds.py)"
    )
    max_weight: int | None = Field(
        default=None, ge=1, description="cap each site clips its weight to (bounds.py)"
    )

    @classmethod
    def create(
        cls,
        round_id: str,
        clients: list[str] | tuple[str, ...],
        dimension: int,
        *,
        degree: int | None = None,
        threshold: int | None = None,
        **kwargs: object,
    ) -> RoundParams:
        """Parameters with the default graph degree and threshold and a fresh graph seed."""
        degree = default_degree(len(clients)) if degree is None else degree
        threshold = default_threshold(degree) if threshold is None else threshold
        return cls(
            round_id=round_id,
            clients=tuple(sorted(clients)),
            dimension=dimension,
            degree=degree,
            threshold=threshold,
            graph_seed=secrets.token_bytes(32),
            **kwargs,
        )

    @model_validator(mode="after")
    def _check(self) -> RoundParams:
        n = len(self.clients)
        if n < MIN_CLIENTS:
            raise ValueError(f"secure aggregation needs at least {MIN_CLIENTS} sites, got {n}")
        if len(set(self.clients)) != n or list(self.clients) != sorted(self.clients):
            raise ValueError("clients must be distinct and sorted")
        if not 2 <= self.degree <= n - 1:
            raise ValueError(f"degree must be in [2, {n - 1}] for {n} sites, got {self.degree}")
        if self.degree < n - 1 and self.degree % 2:
            raise ValueError(f"a sparse neighbour graph needs an even degree, got {self.degree}")
        if not self.degree / 2 < self.threshold <= self.degree:
            raise ValueError(
                f"threshold must be a strict majority of the {self.degree} neighbours and at "
                f"most {self.degree}, got {self.threshold}"
            )
        FixedPoint(self.bits, self.frac_bits)  # validates the pair
        return self

    @property
    def fixed_point(self) -> FixedPoint:
        return FixedPoint(self.bits, self.frac_bits)

    @property
    def length(self) -> int:
        """Length of the masked vector: the update plus the weight coordinate."""
        return self.dimension + 1

    @cached_property
    def neighbours(self) -> dict[str, tuple[str, ...]]:
        """Each site's neighbours (sorted): a Harary graph on a seeded ring, or complete."""
        n = len(self.clients)
        if self.degree == n - 1:
            return {c: tuple(x for x in self.clients if x != c) for c in self.clients}
        ring = sorted(
            self.clients, key=lambda c: hashlib.sha256(self.graph_seed + c.encode()).digest()
        )
        half = self.degree // 2
        return {
            c: tuple(sorted(ring[(i + step) % n] for step in range(-half, half + 1) if step != 0))
            for i, c in enumerate(ring)
        }
