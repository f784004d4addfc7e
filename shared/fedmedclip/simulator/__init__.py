"""The research simulator behind ``fedmedclip simulate``.

It runs FedMedCLIP and its baselines on one machine over a folder of hospital datasets,
through the same library code the services use (``train_local``, the update codec,
``aggregate``), and reports accuracy, calibration and communication side by side::

    backbone = load_backbone("ViT-S-32", "none")
    federation = load_federation(root, backbone, cache_dir=root / ".cache")
    result = run_simulation(federation, list(SimulationMethod), SimulationConfig(rounds=10))
    write_report(result, out)

The names below are loaded on first use: ``fedmedclip simulate --help`` reads
:mod:`fedmedclip.simulator.config` to build its options, and importing this package must not
load torch for it.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "SimulationConfig": "config",
    "Federation": "federation",
    "Site": "federation",
    "SplitData": "federation",
    "load_federation": "federation",
    "write_report": "report",
    "MethodResult": "runner",
    "RoundRecord": "runner",
    "SimulationResult": "runner",
    "majority_baseline": "runner",
    "run_method": "runner",
    "run_simulation": "runner",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module the first time it is asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
