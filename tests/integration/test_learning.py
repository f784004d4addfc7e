"""FedMedCLIP learns: on a synthetic federation with label skew and a random-weight
ViT-S-32, its mean held-out accuracy clearly beats each site's majority class and FedCLIP.

With random weights the class prompts' text embeddings are nearly collinear, so the text
(FAM) branch cannot carry the result: the private heads and the ensemble must. Label skew
(Dirichlet 0.5) makes "always answer the site's most frequent class" a strong baseline,
which is why that, not 1/C, is the bar. Both methods read the same cached embeddings.
"""

from __future__ import annotations

import math

import pytest

from fedmedclip.backbone import load_backbone
from fedmedclip.data.synth import synthesize_federation
from fedmedclip.model import AdapterConfig, expected_shapes
from fedmedclip.simulator import SimulationConfig, SimulationResult, load_federation, run_simulation

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSPITALS, PER_HOSPITAL = 4, 100
MARGIN = 0.05


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    root = tmp_path_factory.mktemp("learning")
    synthesize_federation(
        root / "data",
        hospitals=HOSPITALS,
        classes=4,
        per_hospital=PER_HOSPITAL,
        seed=1,
        alpha=0.5,
        image_size=64,
    )
    backbone = load_backbone("ViT-S-32", "none")
    federation = load_federation(root / "data", backbone, cache_dir=root / "cache")
    # each image went through the encoder exactly once, for both methods together
    assert backbone.encoded_images == federation.images_encoded == HOSPITALS * PER_HOSPITAL
    config = SimulationConfig(rounds=8, local_epochs=5, codec="int4", seed=0)
    simulation = run_simulation(federation, ["fedmedclip", "fedclip"], config)
    assert backbone.encoded_images == HOSPITALS * PER_HOSPITAL
    return simulation


def test_fedmedclip_beats_the_majority_class_of_each_site(result: SimulationResult) -> None:
    fedmedclip = result.methods["fedmedclip"].best.test["accuracy"]
    majority = result.majority["test"]["accuracy"]
    assert fedmedclip >= majority + MARGIN, (fedmedclip, majority)


def test_fedmedclip_beats_fedclip(result: SimulationResult) -> None:
    fedmedclip = result.methods["fedmedclip"].best
    fedclip = result.methods["fedclip"].best
    assert fedmedclip.test["accuracy"] >= fedclip.test["accuracy"] + MARGIN
    assert fedmedclip.test["balanced_accuracy"] > fedclip.test["balanced_accuracy"]


def test_updates_went_through_the_int4_codec(result: SimulationResult) -> None:
    rounds = result.methods["fedmedclip"].rounds
    options = result.methods["fedmedclip"].options
    config = AdapterConfig(
        dim=384,
        n_classes=len(result.federation["class_names"]),
        learn_prototypes=options["learn_prototypes"],
        class_statistics=options["class_statistics"],
    )
    full_state_fp32 = 4 * sum(math.prod(shape) for shape in expected_shapes(config).values())
    # int4 for the FAM, int8 for the class statistics (about a quarter of the state): each
    # under a sixth of float32 in all.
    assert all(0 < r.bytes_up_per_client < full_state_fp32 / 6 for r in rounds)
