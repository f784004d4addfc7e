"""Secure aggregation with dropout recovery: the hub learns only the sum of the updates.

The protocol of Bonawitz et al. (CCS 2017) with the sparse neighbour graph of SecAgg+
(Bell et al., CCS 2020), as a library with no web code: typed messages for each phase
(:mod:`~fedmedclip.secagg.messages`), a site (:class:`SecAggClient`), the hub
(:class:`SecAggServer`) and an in-process round (:func:`run_round`). Primitives come from
``cryptography`` (X25519, HKDF-SHA256, AES-GCM, AES-CTR) and PyCryptodome (Shamir).
See ``docs/privacy.md``.
"""

from fedmedclip.secagg.client import SecAggClient
from fedmedclip.secagg.encoding import FixedPoint
from fedmedclip.secagg.errors import ProtocolViolation, RoundFailed, SecAggError
from fedmedclip.secagg.params import RoundParams, default_degree, default_threshold
from fedmedclip.secagg.server import Aggregate, SecAggServer
from fedmedclip.secagg.simulation import RoundCosts, run_round

__all__ = [
    "Aggregate",
    "FixedPoint",
    "ProtocolViolation",
    "RoundCosts",
    "RoundFailed",
    "RoundParams",
    "SecAggClient",
    "SecAggError",
    "SecAggServer",
    "default_degree",
    "default_threshold",
    "run_round",
]
