"""The closed sets of values the platform speaks, each defined once.

The library validates against them, the pydantic schemas use them as field types (so the
API documents and checks the same values), the services compare against their members
and the Typer commands offer them as choices. Members are ``StrEnum``: a member is equal
to its string and serialises as it, so the values on the wire and in the databases are
exactly the strings below.

This module imports nothing heavy: ``fedmedclip --help`` builds its choices from it
without loading torch.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

_E = TypeVar("_E", bound=StrEnum)


def parse_choice(kind: type[_E], value: object, what: str) -> _E:
    """``value`` as a member of ``kind``, or a ValueError that names the allowed values."""
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(kind)}") from None


class Quantization(StrEnum):
    """How an update's FAM rows are encoded on the wire (``fedmedclip.codec``)."""

    fp16 = "fp16"
    int8 = "int8"
    int4 = "int4"


class AggregationRule(StrEnum):
    """How the hub combines the updates of a round (``fedmedclip.aggregation``)."""

    weighted_mean = "weighted_mean"
    median = "median"
    trimmed_mean = "trimmed_mean"


class SimulationCodec(StrEnum):
    """Update encodings the simulator offers: each :class:`Quantization`, or ``none`` for
    the raw float32 delta (a test checks that every quantisation is here)."""

    fp16 = Quantization.fp16.value
    int8 = Quantization.int8.value
    int4 = Quantization.int4.value
    none = "none"


class SimulationMethod(StrEnum):
    """Methods the simulator compares (``fedmedclip.simulator.methods``), in report order."""

    fedmedclip = "fedmedclip"
    fedclip = "fedclip"
    local = "local"
    zeroshot = "zeroshot"
    fedavg = "fedavg"


class SimulationCombination(StrEnum):
    """How the simulator's FedMedCLIP combines its branches: chosen per site on its
    validation split (``fedmedclip.ensemble.choose_combination``), or one fixed kind."""

    choose = "choose"
    entropy = "entropy"
    head = "head"
    fam = "fam"


class OptimizerSettings(StrEnum):
    """Optimiser settings of the adapter methods: ours, or the authors' reference ones
    (``fedmedclip.training.TrainConfig.reference``; docs/method.md compares them)."""

    ours = "ours"
    reference = "reference"


class DPMode(StrEnum):
    """Where the simulator's differential-privacy noise is added: each site's full noise on
    its own update (``local``), or a share of the central noise under secure aggregation
    (``distributed``)."""

    local = "local"
    distributed = "distributed"


class RoundState(StrEnum):
    """Life of a round at the hub: open, then aggregating, then one of the terminal states."""

    open = "open"
    aggregating = "aggregating"
    published = "published"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_ROUND_STATES = frozenset({RoundState.published, RoundState.failed, RoundState.cancelled})


class JobState(StrEnum):
    """Life of a training job at a hospital node."""

    queued = "queued"
    running = "running"
    uploading = "uploading"
    done = "done"
    failed = "failed"


ACTIVE_JOB_STATES = (JobState.queued, JobState.running, JobState.uploading)
TERMINAL_JOB_STATES = (JobState.done, JobState.failed)
