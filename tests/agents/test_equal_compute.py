"""Operating points and the equal-compute verdict: an agent that stops, the reference against itself, n/a budgets,
the margin wording, Holm, and ``gfnet compare`` recomputing everything from per_image.npz."""

from __future__ import annotations

import json

import numpy as np
import pytest

import agents
from agents.base import Agent, num_envs_of
from agents.benchmark.equal_compute import (cost_per_step, holm, margin_verdict, read_curve, spent_madds,
                                            threshold_points)
from agents.benchmark.merge import merge_results
from agents.benchmark.run import run_benchmark
from helpers import tiny_dataset, tiny_model

ENV_ID = "GFNet-ImageNet-v0"
EPISODES = 12
STOPPER = "stop-after-one"
AGENTS = ["random", "center", STOPPER, "oracle", "paper-ppo"]


class StopAfterOne(Agent):
    """Looks at the centre cell of a 3×3 grid; on every other image (even batch slots) it stops after one look."""

    name = STOPPER
    obs_mode = "gru"
    action_mode = "grid"
    grid_size = 3

    def env_settings(self):
        return {**super().env_settings(), "stop_action": True}

    def reset(self, num_envs: int) -> None:
        super().reset(num_envs)
        self.t = 0

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        a = np.full(num_envs_of(obs), 4, dtype=np.int64)
        if self.t >= 1:
            a[::2] = 9  # G·G: the stop action
        self.t += 1
        return a


def bench(out, agent_list=AGENTS, **kw):
    return run_benchmark(ENV_ID, agent_list, out, episodes=EPISODES, seeds=2,
                         env_kwargs={"checkpoint": tiny_model(), "dataset": tiny_dataset(n=30), "grid_size": 3},
                         batch_size=5, device="cpu", seed=0, verbose=False, **kw)


@pytest.fixture(scope="module")
def stopping_run(tmp_path_factory):
    agents.register(STOPPER, StopAfterOne)
    try:
        out = tmp_path_factory.mktemp("bench_stop")
        yield out, bench(out, margin=100.0)
    finally:
        agents.unregister(STOPPER)


def test_per_image_records_hold_exits_costs_predictions_and_confidences(stopping_run):
    out, res = stopping_run
    T = res["T"]
    with np.load(out / "per_image.npz") as rec:
        assert rec["target"].shape == (EPISODES,)
        assert rec["random/pred"].shape == rec["random/confidence"].shape == (2, T, EPISODES)
        assert np.array_equal(rec["random/pred"] == rec["target"], rec["random/correct"])
        assert rec["center/exit_step"].tolist() == [[T - 1] * EPISODES]
        exits = rec[f"{STOPPER}/exit_step"][0]
        batch_slot = np.arange(EPISODES) % 5
        assert exits.tolist() == [1 if s % 2 == 0 else T - 1 for s in batch_slot]
        assert rec[f"{STOPPER}/stopped"][0].tolist() == (batch_slot % 2 == 0).tolist()
        env = np.asarray(res["env_madds_cumulative"])
        a = rec["paper-ppo/decision_madds"][0]
        assert a > 0
        np.testing.assert_allclose(rec["paper-ppo/madds"][0], env[-1] + a * (T - 1))
        np.testing.assert_allclose(rec[f"{STOPPER}/madds"][0], env[exits])  # numpy agent: its decisions cost 0


def test_an_agent_that_stops_spends_less_and_gets_a_learned_stop_entry(stopping_run):
    _, res = stopping_run
    e = res["agents"][STOPPER]
    op = e["operating_point"]
    assert op["madds"] < e["madds"] and 0.0 < op["stopped_share"] < 1.0
    assert op["madds_ci"][0] <= op["madds"] <= op["madds_ci"][1]
    assert op["top1_ci"][0] <= op["top1"] <= op["top1_ci"][1]
    ls = e["learned_stop"]
    assert ls["reference"] == "paper-ppo" and ls["madds"] == op["madds"] and ls["top1"] == op["top1"]
    if ls["delta"] is not None:
        assert ls["delta"] == pytest.approx(op["top1"] - ls["reference_top1"])
        assert ls["delta_ci"][0] <= ls["delta"] <= ls["delta_ci"][1]
    for name in ("random", "center", "paper-ppo", "oracle"):
        assert "learned_stop" not in res["agents"][name]
        op = res["agents"][name]["operating_point"]
        assert op["madds"] == pytest.approx(res["agents"][name]["madds"])   # a full episode every time
        assert op["top1"] == pytest.approx(res["agents"][name]["anytime_top1"][-1])


def test_the_reference_at_its_own_budgets_is_its_own_curve_with_zero_difference(stopping_run, tmp_path):
    out, res = stopping_run
    ref = res["agents"]["paper-ppo"]
    ec = ref["equal_compute"]
    assert ec["looks"] == list(range(1, res["T"])) and len(ec["budgets"]) == res["T"] - 1
    assert ec["budgets"][-1] == pytest.approx(ref["madds"])
    assert ec["delta"] == [0.0] * len(ec["budgets"]) and all(lo == hi == 0.0 for lo, hi in ec["delta_ci"])
    assert ref["auc"]["delta"] == 0.0 and ref["auc"]["delta_ci"] == [0.0, 0.0]
    # its curve, recomputed per image from the fitted thresholds, is the official budgeted curve (plus the two
    # unfitted ends), and the equal-compute top-1 is that curve read at the budgets
    with np.load(out / "per_image.npz") as rec:
        cost = cost_per_step(res["env_madds_cumulative"], rec["paper-ppo/decision_madds"],
                             rec["paper-ppo/exit_step"], rec["paper-ppo/stopped"])[0]
        madds, per_image = threshold_points(rec["paper-ppo/confidence"][0], rec["paper-ppo/correct"][0], cost,
                                            ref["runs"][0]["budgeted"]["thresholds"])
    top1 = per_image.mean(1) * 100.0
    official = sorted(zip(ref["budgeted"]["madds"], ref["budgeted"]["top1"]))
    fitted = sorted((m, t) for m, t in zip(madds, top1))
    for m, t in official:
        assert any(abs(m - fm) <= 1e-3 * m and t == pytest.approx(ft) for fm, ft in fitted)
    assert ec["top1"] == pytest.approx([float(np.interp(b, madds, top1)) for b in ec["budgets"]])


def test_contenders_get_intervals_and_na_where_a_curve_cannot_reach(stopping_run, tmp_path):
    out, res = stopping_run
    center = res["agents"]["center"]["equal_compute"]
    # paper-ppo pays its policy network, center nothing: its curve ends below paper-ppo's full episode
    assert center["top1"][-1] is None and center["delta"][-1] is None and center["delta_ci"][-1] is None
    assert json.loads((out / "results.json").read_text())["agents"]["center"]["equal_compute"]["top1"][-1] is None
    widths = [hi - lo for ag in ("random", "center", STOPPER)
              for ci in res["agents"][ag]["equal_compute"]["delta_ci"] if ci is not None for lo, hi in [ci]]
    assert widths and max(widths) > 0.0
    for ag in ("random", "center", STOPPER):
        ec = res["agents"][ag]["equal_compute"]
        for t, d, ci in zip(ec["top1"], ec["delta"], ec["ci"]):
            if t is not None:
                assert ci[0] <= t <= ci[1] and d is not None
        auc = res["agents"][ag]["auc"]
        assert auc["ci"][0] <= auc["value"] <= auc["ci"][1] and len(auc["budgets"]) == 20
        assert auc["budgets"][0] == pytest.approx(res["env_madds_cumulative"][0])
        assert auc["budgets"][-1] == pytest.approx(res["agents"]["paper-ppo"]["madds"])
    table = (out / "results.md").read_text()
    assert "1-look budget" in table and "AUC" in table and "Per-step Δ vs paper-ppo" in table
    assert "Operating points" in table
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[-3:] == ["delta", "delta_lo", "delta_hi"]


def test_exit_oracle_bounds_every_stopping_rule(stopping_run):
    _, res = stopping_run
    for name, e in res["agents"].items():
        eo = e["exit_oracle"]
        assert eo["top1"] >= max(e["anytime_top1"]) - 1e-9
        assert eo["madds"] <= e["madds"] + 1e-6


def test_single_run_mean_return_interval_reflects_the_images(stopping_run):
    _, res = stopping_run
    lo, hi = res["agents"]["center"]["mean_return_ci"]
    assert lo < hi and lo <= res["agents"]["center"]["mean_return"] <= hi


def test_margin_verdict_holm_and_probability_of_improvement(stopping_run):
    out, res = stopping_run
    assert res["margin"] == 100.0
    contenders = ["random", "center", STOPPER]
    for name in contenders:
        vs = res["agents"][name]["vs_reference"]
        assert vs["margin_verdict"] == "equivalent within ±100"
        assert vs["mcnemar"]["p_value"] <= vs["mcnemar"]["p_holm"] <= 1.0 and vs["mcnemar"]["holm_family"] == 3
        assert vs["probability_of_improvement"] is None  # the reference has a single run
    assert res["agents"]["oracle"]["vs_reference"]["mcnemar"]["p_holm"] is None  # upper bound: not in the family
    table = (out / "results.md").read_text()
    assert "verdict (±100)" in table and "Holm p" in table and "| —" in table


def test_margin_wording_and_holm_by_hand():
    assert margin_verdict([-0.4, 0.9], 1.0) == "equivalent within ±1"
    assert margin_verdict([-0.4, 2.5], 1.0) == "not worse than −1"
    assert margin_verdict([-1.5, 0.5], 1.0) is None
    assert margin_verdict([-0.4, 0.9], None) is None
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
    with pytest.raises(ValueError, match="margin"):
        bench(None, agent_list=["center"], margin=-1.0)


def test_curve_reading_interpolates_per_image_and_says_na_outside():
    madds = np.array([1.0, 2.0, 4.0])
    per_image = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    assert read_curve(madds, per_image, 1.0).tolist() == [0.0, 0.0]
    assert read_curve(madds, per_image, 3.0).tolist() == [1.0, 0.5]
    assert read_curve(madds, per_image, 0.5) is None and read_curve(madds, per_image, 5.0) is None
    assert read_curve(madds, per_image, 5.0, flat_right=True).tolist() == [1.0, 1.0]
    # costs: looks up to the exit, one decision per look, and one more for a stop
    env = np.array([10.0, 20.0, 30.0])
    cost = cost_per_step(env, [1.0], np.array([[1, 2]]), np.array([[True, False]]))
    assert cost[0].T.tolist() == [[10.0, 21.0, 22.0], [10.0, 21.0, 32.0]]
    assert spent_madds(env, [1.0], np.array([[1, 2]]), np.array([[True, False]])).tolist() == [[22.0, 32.0]]


def test_compare_recomputes_the_verdict_from_per_image_records(stopping_run, tmp_path, capsys):
    from gfnet_cli import main as cli

    out, res = stopping_run
    again = merge_results([out], reference="paper-ppo")
    for name, e in res["agents"].items():
        for key in ("operating_point", "exit_oracle", "equal_compute", "auc", "learned_stop", "mean_return_ci",
                    "vs_reference"):
            assert again["agents"][name].get(key) == e.get(key), (name, key)
    vs_center = merge_results([out], reference="center", margin=1.0)
    assert vs_center["agents"]["center"]["equal_compute"]["delta"][0] == 0.0
    assert "equal_compute" in vs_center["agents"]["paper-ppo"] and vs_center["margin"] == 1.0
    assert cli.main(["compare", str(out), "--reference", "center", "--margin", "2"]) == 0
    assert "verdict (±2)" in capsys.readouterr().out
