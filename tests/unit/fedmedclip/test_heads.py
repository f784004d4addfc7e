"""A site's heads: the pairing sample kept with them and the local head's first state."""

import torch

from fedmedclip.heads import new_local_head, pairing_sample
from fedmedclip.model import AdapterConfig, build_adapter, build_head

CONFIG = AdapterConfig(dim=32, n_classes=3)


def test_pairing_sample_is_a_deterministic_subset_of_the_features():
    features = torch.randn(50, 32, generator=torch.Generator().manual_seed(0))
    sample = pairing_sample(features, limit=20, seed=3)
    assert sample.shape == (20, 32)
    assert torch.equal(sample, pairing_sample(features, limit=20, seed=3))
    assert {tuple(r) for r in sample.tolist()} <= {tuple(r) for r in features.tolist()}
    assert torch.equal(pairing_sample(features, limit=100), features)


def test_a_new_local_head_sits_on_version_0_of_the_fam():
    """Version 0 comes from the federation's seed, the head from the site's own."""
    local = new_local_head(CONFIG, fam_seed=3, seed=5)
    for states in (
        (local.adapter.state_dict(), build_adapter(CONFIG, seed=3).state_dict()),
        (local.head.state_dict(), build_head(CONFIG, seed=5).state_dict()),
    ):
        assert all(torch.equal(states[0][k], v) for k, v in states[1].items())
    assert not torch.equal(local.head.out.weight, build_head(CONFIG, seed=3).out.weight)
