"""The entropy-weighted ensemble of the two branches, and temperature fitting."""

import torch

from fedmedclip.ensemble import ensemble, fit_temperature


def test_ensemble_weighs_the_more_confident_branch_more():
    fam = torch.tensor([[0.1, 0.0, 0.0], [9.0, 0.0, 0.0]])
    head = torch.tensor([[0.0, 9.0, 0.0], [0.0, 0.1, 0.0]])
    out = ensemble(fam, head)
    assert out.alpha[0] > 0.9  # head confident -> head weighs more
    assert out.alpha[1] < 0.1  # FAM confident -> FAM weighs more
    assert out.probabilities[0].argmax() == 1
    assert out.probabilities[1].argmax() == 0
    assert torch.allclose(out.probabilities.sum(-1), torch.ones(2))


def test_fit_temperature_softens_overconfident_logits():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (300,))
    logits = torch.randn(300, 3) * 0.5
    logits[torch.arange(300), labels] += 1.0
    base = fit_temperature(logits, labels)
    # Scaling logits 20x makes them overconfident; the fitted temperature scales along.
    assert 10 < fit_temperature(logits * 20, labels) / base < 40


def test_a_tiny_validation_split_cannot_make_a_branch_near_certain():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    logits = torch.zeros(8, 3)
    logits[torch.arange(8), labels] = 1.0  # all right, mildly confident
    plain = fit_temperature(logits, labels, prior_sigma=1e6)  # effectively no prior
    shrunk = fit_temperature(logits, labels)
    assert plain < 0.1  # the plain NLL fit sharpens as far as float precision lets it
    assert 0.3 < shrunk < 1.0  # the prior keeps it sharpening, but moderately
