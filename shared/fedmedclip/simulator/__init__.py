"""The research simulator behind ``fedmedclip simulate``.

It runs FedMedCLIP and its baselines on one machine over a folder of hospital datasets,
through the same library code the services use (``train_local``, the update codec,
``aggregate``), and reports accuracy, calibration and communication side by side::

    backbone = load_backbone("ViT-S-32", "none")
    federation = load_federation(root, backbone, cache_dir=root / ".cache")
    result = run_simulation(federation, list(SimulationMethod), SimulationConfig(rounds=10))
    write_report(result, out)
"""

from fedmedclip.simulator.config import SimulationConfig
from fedmedclip.simulator.federation import Federation, Site, SplitData, load_federation
from fedmedclip.simulator.report import write_report
from fedmedclip.simulator.runner import (
    MethodResult,
    RoundRecord,
    SimulationResult,
    majority_baseline,
    run_method,
    run_simulation,
)

__all__ = [
    "Federation",
    "MethodResult",
    "RoundRecord",
    "SimulationConfig",
    "SimulationResult",
    "Site",
    "SplitData",
    "load_federation",
    "majority_baseline",
    "run_method",
    "run_simulation",
    "write_report",
]
