"""Optional client-side differential privacy for the FAM delta: clip, add Gaussian noise, account.

A site that turns DP on sends ``privatize_delta(delta, config)`` instead of ``delta``: the whole
update (every tensor of the shared state together) is scaled down to L2 norm at most
``clip_norm``, then every coordinate gets independent Gaussian noise of standard deviation
``noise_multiplier * clip_norm``. This is the Gaussian mechanism applied to the site's update,
on the site, before anything leaves it.

What the guarantee covers
-------------------------
The unit of privacy is the site's whole local dataset, not one patient: the update is a
function of the entire dataset and only the update as a whole is clipped. Two neighbouring
relations are accounted (``relation``):

``"replace_one"`` (the default)
    Any two datasets the site could hold. Both clipped updates lie in the ball of radius
    ``clip_norm``, so they differ by at most ``2 * clip_norm``; the accountant therefore sees
    an effective noise multiplier of ``noise_multiplier / 2``. This protects every patient,
    any group of patients, and the cohort as a whole.
``"replace_with_zero"``
    The site's dataset against a site that contributes a zero update (sensitivity
    ``clip_norm``). This is the convention behind the usual user-level DP-FedAvg figures and
    gives the smaller epsilon; quote it only together with its relation.

The observer is anyone who sees a noised update or anything computed from it: the hub
(assumed honest-but-curious and able to see each site's individual update, since there is no
secure aggregation), its database and audit trail, the other sites and every global model
version. Composition over rounds is adaptive, so the bound holds even if the hub picks each
round's base model after seeing earlier updates. A site that sits a round out sends nothing
and spends nothing; there is no amplification by sampling because the hub knows who took part.

What it does not cover
----------------------
- Anything sent beside the noised delta: the sample count used as the aggregation weight,
  participation and timing, and the pruned-row bitmap if ``omit_rows`` is derived from the
  trained masks. Send every row (no ``omit_rows``) when DP is on.
- Rounds in which the site sent an update without DP.
- The private head and the site's inference API (they never leave the site).
- A compromised site, or a hub that learns the site's noise.
- Implementation-level attacks: ``torch`` draws noise from a fast, non-cryptographic
  generator in floating point, so the proof is for the idealised mechanism.

Noise is drawn from a fresh generator seeded from the operating system when none is given,
never from torch's global generator: ``train_local`` seeds that from ``TrainConfig.seed``,
which the hub may know, and predictable noise could be subtracted.

The accountant is the Renyi-DP accountant of Google's ``dp-accounting`` library. It is imported
on first use (it pulls in SciPy and takes about two seconds), so clipping and noising stay cheap.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from fedmedclip.aggregation import clip_update
from fedmedclip.class_statistics import drop_statistics, is_statistic
from fedmedclip.codec import update_norm

if TYPE_CHECKING:
    from dp_accounting import DpEvent
    from dp_accounting.rdp import RdpAccountant

Relation = Literal["replace_one", "replace_with_zero"]
RELATIONS: tuple[Relation, ...] = ("replace_one", "replace_with_zero")

# L2 sensitivity of the clipped update in units of clip_norm, per neighbouring relation.
_SENSITIVITY: dict[str, float] = {"replace_one": 2.0, "replace_with_zero": 1.0}


@dataclass(frozen=True)
class DPConfig:
    """Per-site DP settings: clipping bound, noise relative to it, and the target delta."""

    clip_norm: float
    noise_multiplier: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("clip_norm", "noise_multiplier"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise added to each coordinate."""
        return self.noise_multiplier * self.clip_norm


def privatize_delta(
    delta: Mapping[str, torch.Tensor],
    config: DPConfig,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Clip ``delta`` as a whole to ``config.clip_norm`` and add Gaussian noise to every value.

    The class statistics (``fedmedclip.class_statistics``) are not sent under DP: their
    values are zeroed first and stay zero, since the noise is calibrated for one clipped
    update and the statistics would take most of its norm.

    Noise is drawn tensor by tensor in sorted name order, so a seeded ``generator`` gives the
    same result whatever order the mapping lists its tensors in. Pass a generator only for
    tests and simulations; without one the noise is seeded from the operating system.
    Returns float32 tensors on the devices of the inputs, in the input's order.
    """
    delta = drop_statistics(delta)
    norm = update_norm(delta)
    if not math.isfinite(norm):
        raise ValueError("update contains NaN or infinite values; it cannot be clipped")
    if generator is None:
        generator = torch.Generator().manual_seed(secrets.randbits(63))
    clipped = clip_update(delta, config.clip_norm)
    noisy: dict[str, torch.Tensor] = {}
    for name in sorted(clipped):
        values = clipped[name].detach().to(torch.float32)
        if is_statistic(name):
            noisy[name] = values
            continue
        noise = torch.randn(
            values.shape, generator=generator, device=generator.device, dtype=torch.float32
        )
        noisy[name] = values + noise.to(values.device) * config.noise_std
    return {name: noisy[name] for name in delta}


def noise_share(config: DPConfig, n_sites: int) -> DPConfig:
    """One site's part of distributed DP: the same clipping, ``1/sqrt(n_sites)`` of the noise.

    Under secure aggregation the hub sees only the sum of the sites' updates, so ``n_sites``
    independent Gaussian shares of variance ``sigma^2 / n_sites`` make the sum carry the
    central noise ``sigma = noise_multiplier * clip_norm``, and the guarantee against the hub
    is that of ``config`` (account with ``config.noise_multiplier``). Sites that drop after
    noising leave less noise in the sum: account a round with ``k`` of ``n`` survivors with
    ``noise_multiplier * sqrt(k / n)``. Sites that collude against another can subtract their
    own shares, so the guarantee assumes the others do not.
    """
    if n_sites < 1:
        raise ValueError(f"n_sites must be at least 1, got {n_sites}")
    return DPConfig(config.clip_norm, config.noise_multiplier / math.sqrt(n_sites), config.delta)


def _check_relation(relation: str) -> None:
    if relation not in RELATIONS:
        raise ValueError(f"unknown neighbouring relation {relation!r}; use one of {RELATIONS}")


def _new_rdp_accountant(relation: Relation) -> RdpAccountant:
    import dp_accounting

    rel = dp_accounting.NeighboringRelation
    library_relation = rel.REPLACE_ONE if relation == "replace_one" else rel.REPLACE_SPECIAL
    return dp_accounting.rdp.RdpAccountant(neighboring_relation=library_relation)


def _gaussian_event(noise_multiplier: float, relation: Relation) -> DpEvent:
    """The library event for one round: noise measured in units of the relation's sensitivity."""
    import dp_accounting

    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise_multiplier must be positive and finite, got {noise_multiplier!r}")
    return dp_accounting.GaussianDpEvent(noise_multiplier / _SENSITIVITY[relation])


class PrivacyAccountant:
    """Cumulative privacy spent by one site: one ``step`` per round in which it sent a DP update.

    Rounds may use different noise multipliers; the RDP accountant composes them. Keep one
    accountant per site for the whole life of the federation (persist ``history`` to rebuild it).
    """

    def __init__(self, relation: Relation = "replace_one") -> None:
        _check_relation(relation)
        self.relation: Relation = relation
        self.history: list[float] = []
        self._accountant = _new_rdp_accountant(relation)

    @property
    def rounds(self) -> int:
        """Number of rounds composed so far."""
        return len(self.history)

    def step(self, noise_multiplier: float, rounds: int = 1) -> None:
        """Compose ``rounds`` rounds, each one DP update sent with ``noise_multiplier``."""
        if rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {rounds}")
        self._accountant.compose(_gaussian_event(noise_multiplier, self.relation), rounds)
        self.history.extend([float(noise_multiplier)] * rounds)

    def epsilon(self, delta: float) -> float:
        """Cumulative epsilon at ``delta`` over every round composed so far (0 before any)."""
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        return float(self._accountant.get_epsilon(delta))


def epsilon_after(
    rounds: int, noise_multiplier: float, delta: float, relation: Relation = "replace_one"
) -> float:
    """Epsilon after ``rounds`` DP rounds at a fixed ``noise_multiplier`` (for planning)."""
    accountant = PrivacyAccountant(relation)
    accountant.step(noise_multiplier, rounds)
    return accountant.epsilon(delta)


def epsilon_per_round(
    noise_multiplier: float, delta: float, relation: Relation = "replace_one"
) -> float:
    """Epsilon of a single round: the budget one DP update spends on its own."""
    return epsilon_after(1, noise_multiplier, delta, relation)


def noise_multiplier_for(
    epsilon: float, rounds: int, delta: float, relation: Relation = "replace_one"
) -> float:
    """The smallest noise multiplier whose ``rounds`` rounds spend at most ``epsilon``.

    The inverse of :func:`epsilon_after`, for planning a run to a budget (the cumulative
    epsilon grows with rounds, so a budget fixes the noise only together with the rounds).
    Calibrated by ``dp_accounting.calibrate_dp_mechanism`` on the same RDP accountant, which
    returns the value on the safe side of the target: ``epsilon_after(rounds, result, delta)``
    never exceeds ``epsilon``.
    """
    import dp_accounting

    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be positive and finite, got {epsilon!r}")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    _check_relation(relation)
    return float(
        dp_accounting.calibrate_dp_mechanism(
            lambda: _new_rdp_accountant(relation),
            lambda z: dp_accounting.SelfComposedDpEvent(_gaussian_event(z, relation), rounds),
            epsilon,
            delta,
            bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
            tol=1e-4,
        )
    )
