"""Prediction: the branches' logits as training scores them."""

import torch
from torch.nn import functional as F

from fedmedclip.model import LOGIT_SCALE, AdapterConfig, build_adapter, build_head
from fedmedclip.prediction import predict

CONFIG = AdapterConfig(dim=32, n_classes=3)


def test_the_prediction_uses_the_training_logit_scale():
    """The FAM branch at prediction is softmax(100 * cos(f', prototype)), as in training."""
    g = torch.Generator().manual_seed(0)
    feats, text = torch.randn(12, 32, generator=g), torch.randn(3, 32, generator=g)
    adapter, head = build_adapter(CONFIG), build_head(CONFIG)
    out = predict(adapter, head.eval(), feats, text)
    adapted = adapter.adapt(feats)
    cosine = F.normalize(adapted, dim=-1) @ F.normalize(text, dim=-1).T
    assert LOGIT_SCALE == 100.0
    expected = torch.softmax(100.0 * cosine, dim=-1)
    assert torch.allclose(out.fam_probabilities, expected, atol=1e-5)
