"""Budgeted batch classification (feature_nets.budgeted) against the original implementation's numbers.

The conformance file is read from the folder named by ``GFNET_CONFORMANCE_DIR`` (default: the copy in
``tests/fixtures/conformance``), so the same tests run on any set of the same format.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from feature_nets.budgeted import (
    budgeted_curve,
    curve_from_thresholds,
    evaluate_thresholds,
    exit_distribution,
    fit_thresholds,
)

_ENV_DIR = os.environ.get("GFNET_CONFORMANCE_DIR")
CONFORMANCE_DIR = Path(_ENV_DIR) if _ENV_DIR else Path(__file__).parents[1] / "fixtures" / "conformance"
BUDGETED_FILE = CONFORMANCE_DIR / "budgeted_batch.pt"


@pytest.fixture(scope="module")
def budgeted_batch():
    if not BUDGETED_FILE.exists():
        if _ENV_DIR:  # asked for explicitly: a missing file is an error, not a skip
            pytest.fail(f"GFNET_CONFORMANCE_DIR={_ENV_DIR!r} has no budgeted_batch.pt")
        pytest.skip(f"conformance file not found: {BUDGETED_FILE}")
    return torch.load(BUDGETED_FILE, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def official_curve(budgeted_batch):
    d = budgeted_batch
    # The official results fit the thresholds and evaluate them on the same set.
    ps = [r["p"] for r in d["results"]]
    return budgeted_curve(d["probs"], d["targets"], d["probs"], d["targets"], d["flops"], p_range=ps)


def test_conformance_covers_p_1_to_39(budgeted_batch):
    assert [r["p"] for r in budgeted_batch["results"]] == list(range(1, 40))


def test_conformance_exit_probs(budgeted_batch):
    T = budgeted_batch["probs"].shape[0]
    for r in budgeted_batch["results"]:
        got = exit_distribution(r["p"], T)
        expected = torch.tensor(r["exit_probs"], dtype=torch.float32)
        assert torch.equal(got, expected), (r["p"], got.tolist(), r["exit_probs"])


def test_conformance_thresholds(budgeted_batch):
    d = budgeted_batch
    T = d["probs"].shape[0]
    for r in d["results"]:
        th = fit_thresholds(d["probs"], exit_distribution(r["p"], T))
        expected = torch.tensor(r["thresholds"], dtype=torch.float64)
        assert th.shape == (T,)
        assert torch.allclose(th.double(), expected, rtol=0, atol=1e-6), (r["p"], th.tolist(), r["thresholds"])


def test_conformance_accuracy_and_flops_exact(budgeted_batch):
    d = budgeted_batch
    for r in d["results"]:
        th = torch.tensor(r["thresholds"], dtype=torch.float32)
        top1, madds, exit_step = evaluate_thresholds(d["probs"], d["targets"], th, d["flops"])
        assert top1 == r["accuracy"], (r["p"], top1, r["accuracy"])
        assert madds == r["expected_flops"], (r["p"], madds, r["expected_flops"])
        assert exit_step.shape == d["targets"].shape
        assert bool((exit_step >= 0).all())


def test_conformance_budgeted_curve(budgeted_batch, official_curve):
    res = budgeted_batch["results"]
    assert official_curve["p"] == [r["p"] for r in res]
    assert official_curve["top1"] == [r["accuracy"] for r in res]
    assert official_curve["madds"] == [r["expected_flops"] for r in res]
    for got, r in zip(official_curve["exit_probs"], res):
        assert got == r["exit_probs"]
    for got, r in zip(official_curve["thresholds"], res):
        assert max(abs(a - b) for a, b in zip(got, r["thresholds"])) <= 1e-6


def test_conformance_curve_from_stored_thresholds(budgeted_batch):
    """The original's evaluation with thresholds a checkpoint stores (its eval_mode 1: ``dynamic_threshold``, 39 rows
    of T) reproduces its curve exactly."""
    d = budgeted_batch
    rows = torch.tensor([r["thresholds"] for r in d["results"]], dtype=torch.float32)
    curve = curve_from_thresholds(d["probs"], d["targets"], rows, d["flops"])
    assert curve["p"] == [r["p"] for r in d["results"]]
    assert curve["top1"] == [r["accuracy"] for r in d["results"]]
    assert curve["madds"] == [r["expected_flops"] for r in d["results"]]
    one = curve_from_thresholds(d["probs"], d["targets"], rows[4], d["flops"], p_range=[5])  # one vector: one row
    assert one["p"] == [5] and one["top1"] == [d["results"][4]["accuracy"]]
    with pytest.raises(ValueError, match=r"\(P, T\) rows"):
        curve_from_thresholds(d["probs"], d["targets"], rows[:, :-1], d["flops"])


# --------------------------------------------------------------------------------------------------
# An independent, literal sample-by-sample transcription of the documented procedure (docs/budgeted.md),
# used to cross-check the vectorised code on random inputs with many ties.


def _reference_fit(probs, exit_probs):
    T, N, _ = probs.shape
    conf = probs.max(dim=2).values
    th = [1e8] * T
    gone = [False] * N
    for k in range(T - 1):
        want = math.floor((torch.tensor(float(N)) * exit_probs[k].float()).item())
        order = sorted(range(N), key=lambda i: -conf[k, i].item())
        seen = 0
        for i in order:
            if not gone[i]:
                seen += 1
                if seen == want:
                    th[k] = conf[k, i].item()
                    break
        for i in range(N):
            if conf[k, i].item() >= torch.tensor(th[k], dtype=torch.float32).item():
                gone[i] = True
    th[T - 1] = -1e8
    return torch.tensor(th, dtype=torch.float32)


def _reference_eval(probs, targets, th, flops):
    T, N, _ = probs.shape
    conf, pred = probs.max(dim=2)
    correct, exits = 0, [0] * T
    for i in range(N):
        for k in range(T):
            if conf[k, i].item() >= th[k].item():
                correct += int(pred[k, i].item() == targets[i].item())
                exits[k] += 1
                break
    return correct * 100.0 / N, exits


@pytest.mark.parametrize("seed", range(6))
def test_matches_literal_reference_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    T, N, C = 1 + seed % 5, 37 + 11 * seed, 4
    logits = torch.randn(T, N, C, generator=g) * 2
    probs = torch.softmax(logits, dim=2)
    probs = torch.round(probs * 8) / 8 + 1e-3  # coarse values: lots of ties in the confidences
    targets = torch.randint(0, C, (N,), generator=g)
    flops = [0.5 * (k + 1) for k in range(T)]
    for p in (1, 7, 20, 33, 39):
        ep = exit_distribution(p, T)
        th = fit_thresholds(probs, ep)
        assert torch.equal(th, _reference_fit(probs, ep))
        top1, madds, exit_step = evaluate_thresholds(probs, targets, th, flops)
        ref_top1, ref_exits = _reference_eval(probs, targets, th, flops)
        assert top1 == ref_top1
        assert torch.bincount(exit_step, minlength=T).tolist() == ref_exits
        assert madds == pytest.approx(sum(e / N * f for e, f in zip(ref_exits, flops)), rel=1e-6)


# --------------------------------------------------------------------------------------------------
# Edge cases


def test_exit_distribution_shape_and_sum():
    for T in (1, 3, 5):
        for p in (1, 20, 39):
            ep = exit_distribution(p, T)
            assert ep.shape == (T,) and ep.dtype == torch.float32
            assert float(ep.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(exit_distribution(20, 4), torch.full((4,), 0.25))  # q = 1: uniform
    assert bool((exit_distribution(5, 4).diff() < 0).all())  # q < 1: early exits favoured
    assert bool((exit_distribution(30, 4).diff() > 0).all())  # q > 1: late exits favoured


@pytest.mark.parametrize("bad", [0, -3, 1.5])
def test_exit_distribution_rejects_bad_p(bad):
    with pytest.raises(ValueError, match="p_index"):
        exit_distribution(bad, 3)


def test_single_step_everyone_exits_at_the_end():
    probs = torch.softmax(torch.randn(1, 9, 5, generator=torch.Generator().manual_seed(0)), dim=2)
    targets = probs[0].argmax(dim=1)
    th = fit_thresholds(probs, exit_distribution(3, 1))
    assert th.tolist() == [-1e8]
    top1, madds, exit_step = evaluate_thresholds(probs, targets, th, [2.5])
    assert top1 == 100.0
    assert madds == 2.5
    assert exit_step.tolist() == [0] * 9


def test_all_samples_confident_exit_at_first_step():
    T, N, C = 3, 10, 4
    probs = torch.zeros(T, N, C)
    probs[:, :, 1] = 1.0  # every sample fully confident at every step
    targets = torch.ones(N, dtype=torch.long)
    th = fit_thresholds(probs, exit_distribution(10, T))
    # floor(10 * 0.57...) = 5 samples wanted at step 1; the 5th has confidence 1, so all 10 reach it
    assert th[0].item() == 1.0
    assert th[1].item() == 1e8  # nobody left: the threshold keeps its "no exit" value
    assert th[2].item() == -1e8
    top1, madds, exit_step = evaluate_thresholds(probs, targets, th, [1.0, 2.0, 3.0])
    assert exit_step.tolist() == [0] * N
    assert top1 == 100.0
    assert madds == 1.0


def test_no_exit_when_target_count_rounds_to_zero():
    T, N, C = 3, 4, 2
    probs = torch.softmax(torch.randn(T, N, C, generator=torch.Generator().manual_seed(1)), dim=2)
    th = fit_thresholds(probs, exit_distribution(1, T))  # floor(4 * 0.0025) = 0 at step 2
    assert th[1].item() == 1e8
    _, _, exit_step = evaluate_thresholds(probs, torch.zeros(N, dtype=torch.long), th, [1, 2, 3])
    assert not bool((exit_step == 1).any())


def test_samples_that_never_exit_count_as_wrong_and_free():
    probs = torch.full((2, 3, 2), 0.5)
    targets = torch.zeros(3, dtype=torch.long)
    top1, madds, exit_step = evaluate_thresholds(probs, targets, torch.tensor([0.9, 0.9]), [1.0, 2.0])
    assert exit_step.tolist() == [-1, -1, -1]
    assert top1 == 0.0 and madds == 0.0


def test_mismatched_shapes_raise_naming_the_shapes():
    probs = torch.rand(3, 5, 4)
    with pytest.raises(ValueError, match=r"\(3, 5, 4\)"):
        fit_thresholds(probs, torch.rand(2))
    with pytest.raises(ValueError, match=r"\(5,\)"):
        evaluate_thresholds(probs, torch.zeros(6, dtype=torch.long), torch.zeros(3), [1, 2, 3])
    with pytest.raises(ValueError, match=r"\(2,\)"):
        evaluate_thresholds(probs, torch.zeros(5, dtype=torch.long), torch.zeros(2), [1, 2, 3])
    with pytest.raises(ValueError, match="length"):
        evaluate_thresholds(probs, torch.zeros(5, dtype=torch.long), torch.zeros(3), [1, 2])
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        fit_thresholds(torch.rand(3, 5), torch.rand(3))
    with pytest.raises(ValueError, match=r"\(3, 5, 4\).*\(2, 5, 4\)"):
        budgeted_curve(probs, torch.zeros(5), torch.rand(2, 5, 4), torch.zeros(5), [1, 2, 3])


def test_val_and_test_sets_may_differ():
    g = torch.Generator().manual_seed(3)
    val = torch.softmax(torch.randn(4, 50, 6, generator=g), dim=2)
    test = torch.softmax(torch.randn(4, 30, 6, generator=g), dim=2)
    vt = torch.randint(0, 6, (50,), generator=g)
    tt = torch.randint(0, 6, (30,), generator=g)
    curve = budgeted_curve(val, vt, test, tt, [1.0, 2.0, 3.0, 4.0], p_range=range(1, 40, 5))
    assert len(curve["madds"]) == len(curve["top1"]) == len(curve["thresholds"]) == 8
    for p, th, madds in zip(curve["p"], curve["thresholds"], curve["madds"]):
        assert th == fit_thresholds(val, exit_distribution(p, 4)).tolist()
        assert 1.0 <= madds <= 4.0
