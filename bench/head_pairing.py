"""Why a private head is re-paired with the FAM it is served with.

A head's BatchNorm statistics describe the FAM it ran under when they were last estimated.
A hospital serves the head with the newest global FAM, which is neither the base it
trained from nor its local FAM. This benchmark runs FedMedCLIP in the simulator three
ways, same data and seeds, and reports test accuracy round by round:

* ``served FAM`` (what the platform does): statistics re-estimated under the global FAM
  that makes the predictions (the inference API does it at load time from the sample of
  training features the node stores with the head);
* ``local FAM``: statistics re-estimated after local training, under the local FAM, and
  then used with the new global FAM (the node before the inference API re-paired heads);
* ``as trained``: the running statistics left by training, never re-estimated.

    python bench/head_pairing.py              # 2 seeds, about 3 min on 2 cores
"""

from __future__ import annotations

import argparse
import statistics

from common import add_data_args, embedded_federation, setup

from fedmedclip.heads import refresh_head_statistics
from fedmedclip.simulator import SimulationConfig
from fedmedclip.simulator.base import LocalUpdate, State
from fedmedclip.simulator.methods import FedMedClip
from fedmedclip.simulator.runner import run_round

ROUNDS = 10
SETTLED_FROM = 3  # rounds before this are the warm-up and left out of the summary


class KeepTrainingStatistics(FedMedClip):
    """Heads keep the running statistics of their last local training."""

    def set_global(self, state: State) -> None:
        self._global = {k: v.detach().cpu().clone() for k, v in state.items()}


class LocalFamStatistics(KeepTrainingStatistics):
    """Heads re-estimate their statistics after training, under the local FAM."""

    def train_site(self, site_index: int, round_index: int) -> LocalUpdate:
        update = super().train_site(site_index, round_index)
        features = self.federation.sites[site_index].train.features
        refresh_head_statistics(self.adapter, self.heads[site_index], features)
        return update


VARIANTS = {
    "served FAM (platform)": FedMedClip,
    "local FAM": LocalFamStatistics,
    "as trained": KeepTrainingStatistics,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser, per_hospital=100, threads=1)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    workdir = setup(args)
    curves: dict[str, list[list[float]]] = {name: [] for name in VARIANTS}
    for seed in range(args.seeds):
        federation, _ = embedded_federation(args, workdir, "ViT-S-32", split_seed=seed)
        config = SimulationConfig(rounds=ROUNDS, local_epochs=5, seed=seed, device=args.device)
        for name, variant in VARIANTS.items():
            method = variant(federation, config)
            accuracy = [
                run_round(method, federation, r).test["accuracy"] for r in range(1, ROUNDS + 1)
            ]
            curves[name].append(accuracy)
            print(f"seed {seed} {name:22s} " + " ".join(f"{a:.2f}" for a in accuracy))
    print(
        f"\n| head statistics | mean test acc, rounds {SETTLED_FROM}-{ROUNDS} "
        "| max - min over those rounds |"
    )
    print("|---|---:|---:|")
    for name, runs in curves.items():
        settled = [run[SETTLED_FROM - 1 :] for run in runs]
        mean = statistics.mean(statistics.mean(run) for run in settled)
        swing = statistics.mean(max(run) - min(run) for run in settled)
        print(f"| {name} | {mean:.3f} | {swing:.3f} |")


if __name__ == "__main__":
    main()
