"""The masked linear layer really prunes: gradients reach thresholds and rows drop."""

import torch

from fedmedclip.masked import MaskedLinear, straight_through_step


def test_straight_through_step_passes_gradient_inside_window():
    x = torch.tensor([-2.0, -0.3, 0.2, 3.0], requires_grad=True)
    y = straight_through_step(x, window=1.0)
    assert y.tolist() == [0.0, 0.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_gradient_reaches_thresholds():
    torch.manual_seed(0)
    layer = MaskedLinear(16, 8)
    out = layer(torch.randn(4, 16))
    out.pow(2).sum().backward()
    assert layer.threshold.grad is not None
    assert layer.threshold.grad.abs().sum() > 0


def test_pruning_pressure_moves_thresholds_and_drops_rows():
    torch.manual_seed(0)
    layer = MaskedLinear(32, 16)
    before = layer.threshold.detach().clone()
    assert layer.kept_rows().all()
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    x = torch.randn(64, 32)
    for _ in range(200):
        loss = 1e-3 * layer(x).pow(2).mean() + layer.sparsity_penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (layer.threshold.detach() - before).abs().min() > 0
    kept = layer.kept_rows()
    assert kept.sum() < 16
    pruned_out = layer(x)[:, ~kept]
    assert torch.all(pruned_out == 0), "a pruned row (weights and bias) must output exactly zero"


def test_masked_rows_output_zero_including_bias():
    layer = MaskedLinear(4, 3)
    with torch.no_grad():
        layer.threshold[1] = 10.0
    y = layer(torch.ones(2, 4))
    assert torch.all(y[:, 1] == 0)
    assert torch.all(y[:, 0] != 0)
