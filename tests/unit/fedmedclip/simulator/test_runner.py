"""The rounds loop, the methods and the FedAvg baseline on a small real federation."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from fedmedclip.backbone import load_backbone
from fedmedclip.class_statistics import is_statistic
from fedmedclip.codec import apply_delta, decode_update, encode_update, state_delta, update_norm
from fedmedclip.data.synth import synthesize_federation
from fedmedclip.heads import refresh_head_statistics
from fedmedclip.model import AdapterConfig, build_adapter, build_head, expected_shapes
from fedmedclip.privacy import DPConfig, epsilon_after, epsilon_per_round, privatize_delta
from fedmedclip.simulator import (
    Federation,
    MethodResult,
    RoundRecord,
    SimulationConfig,
    load_federation,
    majority_baseline,
    run_method,
    run_simulation,
    write_report,
)
from fedmedclip.simulator.base import Method
from fedmedclip.simulator.dp import noise_seed
from fedmedclip.simulator.fedavg import FineTunedEncoder
from fedmedclip.simulator.methods import build_method
from fedmedclip.simulator.runner import run_round
from fedmedclip.simulator.transport import CodecTransport

FAST = SimulationConfig(rounds=2, local_epochs=2, seed=1)
DP = dataclasses.replace(FAST, dp_clip_norm=0.5, dp_noise_multiplier=4.0)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    root = tmp_path_factory.mktemp("fed")
    synthesize_federation(
        root / "data", hospitals=3, classes=3, per_hospital=30, seed=5, image_size=32
    )
    backbone = load_backbone("ViT-S-32", "none")
    return load_federation(root / "data", backbone, cache_dir=root / "cache")


def _unequal(federation: Federation) -> Federation:
    """The fixture with site 0's training split cut to a third: sites of unequal size, so a
    uniform mean and a sample-weighted mean differ."""
    site = federation.sites[0]
    keep = len(site.train) // 3
    train = dataclasses.replace(
        site.train,
        paths=site.train.paths[:keep],
        features=site.train.features[:keep],
        labels=site.train.labels[:keep],
    )
    sites = [dataclasses.replace(site, train=train), *federation.sites[1:]]
    return dataclasses.replace(federation, sites=sites)


@pytest.mark.slow
def test_round_is_codec_then_sample_weighted_mean(federation: Federation) -> None:
    """The runner's round equals training, encode/decode and a hand-computed weighted mean."""
    federation = _unequal(federation)
    sizes = [len(s.train) for s in federation.sites]
    assert len(set(sizes)) > 1, sizes
    runner_method = build_method("fedmedclip", federation, FAST)
    record = run_round(runner_method, federation, 1)

    manual = build_method("fedmedclip", federation, FAST)
    base = manual.global_state()
    shapes = expected_shapes(manual.adapter_config)
    total = sum(len(s.train) for s in federation.sites)
    expected = {k: torch.zeros_like(v) for k, v in base.items()}
    for i, site in enumerate(federation.sites):
        update = manual.train_site(i, 1)
        payload = encode_update(
            state_delta(update.state, base),
            base_version=0,
            quantization="int4",
            omit_rows=update.omit_rows,
        )
        assert record.bytes_up[site.name] == len(payload)
        delta = decode_update(payload, expected_shapes=shapes, base_version=0).delta
        for k in expected:
            expected[k] += delta[k] * len(site.train) / total
    new_global = runner_method.global_state()
    for k, v in apply_delta(base, expected).items():
        assert torch.allclose(new_global[k], v, atol=1e-6), k
    assert record.bytes_down_per_client > 4 * sum(v.numel() for v in base.values())
    assert set(record.sites) == {s.name for s in federation.sites}
    assert set(record.val) == {"accuracy", "balanced_accuracy", "macro_f1", "ece"}


@pytest.mark.slow
def test_codecs_trade_bytes(federation: Federation) -> None:
    sizes = {}
    for codec in ("int4", "int8", "fp16", "none"):
        method = build_method("fedclip", federation, dataclasses.replace(FAST, codec=codec))
        sizes[codec] = run_round(method, federation, 1).bytes_up_per_client
    n_params = sum(v.numel() for v in method.global_state().values())
    assert sizes["none"] == 4 * n_params
    assert sizes["int4"] < sizes["int8"] < sizes["fp16"] < sizes["none"]


def test_same_seed_same_result_and_local_methods_send_nothing(federation: Federation) -> None:
    a = run_method(federation, "local", FAST)
    b = run_method(federation, "local", FAST)
    assert [r.test for r in a.rounds] == [r.test for r in b.rounds]
    assert all(r.bytes_up == {} and r.bytes_down_per_client == 0 for r in a.rounds)
    zeroshot = run_method(federation, "zeroshot", FAST)
    assert [r.round for r in zeroshot.rounds] == [0]
    assert zeroshot.lr is None


def _round(index: int, val: float, test: float) -> RoundRecord:
    """A round whose balanced accuracy is ``val``/``test`` and plain accuracy the opposite."""
    other = {"macro_f1": 0.0, "ece": 0.0}
    return RoundRecord(
        index,
        {},
        {"balanced_accuracy": val, "accuracy": 1 - val} | other,
        {"balanced_accuracy": test, "accuracy": 1 - test} | other,
    )


def test_best_round_is_chosen_on_validation_balanced_accuracy_not_test() -> None:
    result = MethodResult(
        "m", {}, 1e-3, [_round(1, 0.5, 0.9), _round(2, 0.8, 0.6), _round(3, 0.8, 0.7)], 0.0
    )
    # Best validation balanced accuracy (not plain accuracy: round 1 has the best of that),
    # the earliest of a tie; the test split is ignored.
    assert result.best.round == 2


def test_lr_search_keeps_the_best_validation_run(federation: Federation) -> None:
    config = dataclasses.replace(FAST, lr_factors=(0.01, 3.0))
    chosen = run_method(federation, "local", config)
    assert set(chosen.lr_search) == {"1e-05", "0.003"}
    assert chosen.lr_search[f"{chosen.lr:g}"] == max(chosen.lr_search.values())
    assert chosen.best.val["balanced_accuracy"] == max(chosen.lr_search.values())


def test_majority_baseline_uses_train_labels(federation: Federation) -> None:
    baseline = majority_baseline(federation)
    for site in federation.sites:
        majority = int(torch.bincount(site.train.labels).argmax())
        expected = float((site.test.labels == majority).float().mean())
        assert baseline["sites"][site.name]["accuracy"] == pytest.approx(expected)


def test_refreshed_head_statistics_match_the_data() -> None:
    """After the refresh, eval-mode BatchNorm uses the exact statistics of the local data."""
    torch.manual_seed(0)
    config = AdapterConfig(dim=16, n_classes=3)
    adapter, head = build_adapter(config), build_head(config)
    features = F.normalize(torch.randn(40, 16) + 3.0, dim=-1)
    refresh_head_statistics(adapter, head, features)
    first_norm = head.blocks[1]
    with torch.no_grad():
        pre_norm = head.blocks[0](adapter.adapt(features))
    assert torch.allclose(first_norm.running_mean, pre_norm.mean(0), atol=1e-5)
    assert torch.allclose(first_norm.running_var, pre_norm.var(0), atol=1e-5)
    assert not head.training and first_norm.momentum == 0.1


def test_fine_tuned_encoder_split_matches_the_full_forward(federation: Federation) -> None:
    visual = federation.backbone.model.visual
    model = FineTunedEncoder(visual, blocks=2, prototypes=federation.text_prototypes)
    pixels = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        embedding = F.normalize(visual(pixels), dim=-1)
        expected = 100.0 * embedding @ F.normalize(federation.text_prototypes, dim=-1).T
        assert torch.allclose(model.suffix(model.prefix(pixels)), expected, atol=1e-3)
    trained = model.trained_state()
    blocks = {k.split(".")[3] for k in trained if k.startswith("visual.transformer.resblocks.")}
    assert blocks == {"10", "11"}
    assert {"visual.proj", "visual.ln_post.weight", "classifier"} <= set(trained)


@pytest.mark.slow
def test_fedavg_prefix_cache_changes_cost_not_results(federation: Federation) -> None:
    one_site = dataclasses.replace(federation, sites=federation.sites[:1])  # keep it quick
    config = dataclasses.replace(FAST, rounds=1, local_epochs=1, fedavg_blocks=1)
    cached = build_method("fedavg", one_site, config)
    plain_config = dataclasses.replace(config, fedavg_prefix_cache=False)
    plain = build_method("fedavg", one_site, plain_config)
    record = run_round(cached, one_site, 1)
    run_round(plain, one_site, 1)
    n_params = sum(v.numel() for v in cached.global_state().values())
    assert record.bytes_up_per_client == record.bytes_down_per_client == 4 * n_params
    assert torch.allclose(cached.predict(0, "test"), plain.predict(0, "test"), atol=1e-4)


@pytest.mark.slow
def test_report_files(federation: Federation, tmp_path: Path) -> None:
    config = dataclasses.replace(FAST, calibrate=True, learn_prototypes=True)
    result = run_simulation(federation, ["fedmedclip", "zeroshot"], config)
    paths = write_report(result, tmp_path)
    metrics = json.loads(paths["metrics"].read_text())
    fedmedclip = metrics["methods"]["fedmedclip"]
    assert fedmedclip["options"]["learn_prototypes"] is True
    assert len(fedmedclip["rounds"]) == 2
    site = fedmedclip["rounds"][0]["sites"]["hospital_0"]
    assert {"val", "test", "bytes_up", "bytes_down"} <= set(site)
    assert site["bytes_up"] > 0 and "accuracy" in site["test"]
    assert metrics["federation"]["random_weights"] is True
    report = paths["report"].read_text()
    assert "CLIP weights are RANDOM" in report
    assert "| fedmedclip | " in report and "| zeroshot | 0 |" in report
    assert paths["curves"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_error_feedback_carries_the_quantisation_residual() -> None:
    """With error feedback, what int4 drops in one round is sent in the next."""
    shapes = {"w": (8, 16), "b": (8,)}
    torch.manual_seed(0)
    deltas = [{k: torch.randn(s) for k, s in shapes.items()} for _ in range(3)]
    plain = CodecTransport("int4", shapes)
    feedback = CodecTransport("int4", shapes, error_feedback=True)
    sent_plain = [plain.upload(d, site=0, base_version=v)[0] for v, d in enumerate(deltas)]
    sent_feedback = [feedback.upload(d, site=0, base_version=v)[0] for v, d in enumerate(deltas)]
    truth = sum(d["w"] for d in deltas)
    residual = feedback._residuals[0]["w"]
    assert torch.allclose(sum(s["w"] for s in sent_feedback) + residual, truth, atol=1e-5)
    error_feedback = (sum(s["w"] for s in sent_feedback) - truth).norm()
    error_plain = (sum(s["w"] for s in sent_plain) - truth).norm()
    assert error_feedback < error_plain
    assert 1 not in feedback._residuals  # residuals are per site


def _record_uploads(method: Method, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Keep the arguments of every upload the method's transport is given."""
    calls: list[dict] = []
    upload = method.transport.upload

    def recording_upload(delta: dict[str, torch.Tensor], **kwargs: object):
        calls.append({"delta": delta} | kwargs)
        return upload(delta, **kwargs)

    monkeypatch.setattr(method.transport, "upload", recording_upload)
    return calls


@pytest.mark.slow
def test_dp_round_sends_the_clipped_noised_delta_with_every_row(
    federation: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = build_method("fedmedclip", federation, FAST)
    private = build_method("fedmedclip", federation, DP)
    sent_plain = _record_uploads(plain, monkeypatch)
    sent_private = _record_uploads(private, monkeypatch)
    run_round(plain, federation, 1)
    run_round(private, federation, 1)
    assert DP.dp is not None
    noised = {k: v for k, v in plain.global_state().items() if not is_statistic(k)}
    n_params = sum(v.numel() for v in noised.values())
    for site_index, (clean, noisy) in enumerate(zip(sent_plain, sent_private, strict=True)):
        assert clean["omit_rows"] is not None and noisy["omit_rows"] is None
        generator = torch.Generator().manual_seed(noise_seed(DP.seed, site_index, 1))
        expected = privatize_delta(clean["delta"], DP.dp, generator)
        assert expected.keys() == noisy["delta"].keys()
        for name, value in expected.items():
            assert torch.equal(noisy["delta"][name], value), name
            assert not torch.allclose(noisy["delta"][name], clean["delta"][name])
        noise_norm = DP.dp.noise_std * math.sqrt(n_params)
        assert update_norm(noisy["delta"]) == pytest.approx(noise_norm, rel=0.05)
        # The class statistics are not sent under DP: zero, noise-free.
        assert all(not noisy["delta"][k].any() for k in noisy["delta"] if is_statistic(k))


@pytest.mark.slow
def test_dp_run_accounts_every_round_and_reports_epsilon(
    federation: Federation, tmp_path: Path
) -> None:
    config = dataclasses.replace(DP, rounds=3, local_epochs=1)
    result = run_simulation(federation, ["fedmedclip", "local"], config)
    fedmedclip, local = result.methods["fedmedclip"], result.methods["local"]
    epsilons = [r.dp_epsilon for r in fedmedclip.rounds]
    assert all(e is not None and math.isfinite(e) for e in epsilons)
    assert all(a < b for a, b in zip(epsilons, epsilons[1:], strict=False))
    assert epsilons[0] == pytest.approx(epsilon_per_round(4.0, 1e-5))
    assert epsilons[-1] == pytest.approx(epsilon_after(3, 4.0, 1e-5))
    assert {r.dp_epsilon_round for r in fedmedclip.rounds} == {epsilon_per_round(4.0, 1e-5)}
    assert all(r.dp_epsilon is None and r.dp_epsilon_round is None for r in local.rounds)

    paths = write_report(result, tmp_path)
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["config"]["dp_clip_norm"] == 0.5
    assert [r["dp_epsilon"] for r in metrics["methods"]["fedmedclip"]["rounds"]] == epsilons
    assert metrics["methods"]["fedmedclip"]["dp_epsilon"] == epsilons[-1]
    assert metrics["methods"]["local"]["dp_epsilon"] is None
    assert f"noise multiplier 4; final ε = {epsilons[-1]:.2f}" in paths["report"].read_text()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"dp_clip_norm": 1.0}, "both dp_clip_norm and dp_noise_multiplier"),
        ({"dp_noise_multiplier": 1.0}, "both dp_clip_norm and dp_noise_multiplier"),
        ({"dp_clip_norm": 0.0, "dp_noise_multiplier": 1.0}, "clip_norm must be a positive"),
        ({"dp_clip_norm": 1.0, "dp_noise_multiplier": 1.0, "dp_delta": 1.0}, "delta must be"),
        ({"dp_delta": 0.0}, "dp_delta must be"),
    ],
)
def test_dp_settings_are_validated(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**settings)


def test_dp_config_and_methods_that_refuse_it(federation: Federation) -> None:
    assert FAST.dp is None
    assert DP.dp == DPConfig(clip_norm=0.5, noise_multiplier=4.0, delta=1e-5)
    with pytest.raises(ValueError, match="fedavg cannot run with differential privacy"):
        build_method("fedavg", federation, DP)
    assert build_method("local", federation, DP).privacy is None  # it sends nothing
