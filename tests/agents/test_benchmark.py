"""The benchmark: outputs and their fields, determinism, the official budgeted procedure, seeds and intervals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import feature_nets.budgeted as budgeted
from agents import make
from agents.benchmark.run import run_benchmark
from agents.paper_ppo import train_paper_ppo
from agents.benchmark.tables import markdown_table
from agents.benchmark.statistics import bootstrap_ci, mean_and_ci
from gfnet_env.core import GFNetCore
from gfnet_env.rollout import rollout
from gfnet_env.settings import EnvSettings
from helpers import tiny_dataset, tiny_model

ENV_ID = "GFNet-ImageNet-v0"
AGENTS = ["random", "center", "raster", "saliency", "oracle", "paper-ppo"]
PLOTS = ["anytime_top1.png", "budgeted.png", "mean_return.png", "madds_per_step.png", "seconds.png"]
EPISODES = 12


def env_kwargs():
    return {"checkpoint": tiny_model(), "dataset": tiny_dataset(n=30), "grid_size": 3}


@pytest.fixture(scope="module")
def ppo_dirs(tmp_path_factory):
    """A paper-ppo agent trained with two seeds, in seed sub-folders of one folder."""
    root = tmp_path_factory.mktemp("ppo_runs")
    for seed in (0, 1):
        train_paper_ppo(ENV_ID, 36, root / f"seed_{seed}", seed=seed, batch_size=6, checkpoint=tiny_model(),
                        dataset=tiny_dataset(n=30), device="cpu")
    return root


def bench(out, agent_dirs=None, agents=AGENTS, **kw):
    return run_benchmark(ENV_ID, agents, out, episodes=EPISODES, seeds=3, agent_dirs=agent_dirs,
                         env_kwargs=env_kwargs(), batch_size=5, device="cpu", seed=0, verbose=False, **kw)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_a")
    return out, bench(out)


def _drop_seconds(obj):
    if isinstance(obj, dict):
        return {k: _drop_seconds(v) for k, v in obj.items() if not k.startswith("seconds")}
    if isinstance(obj, list):
        return [_drop_seconds(v) for v in obj]
    return obj


def test_writes_every_output_with_the_fields(first_run):
    out, res = first_run
    for f in ["results.json", "results.csv", "results.md"] + PLOTS:
        assert (out / f).exists() and (out / f).stat().st_size > 0, f
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["agents"].keys() == set(AGENTS)
    T = tiny_model().T
    assert res["T"] == T and res["episodes"] == EPISODES
    for name, e in res["agents"].items():
        assert len(e["anytime_top1"]) == T and all(0 <= v <= 100 for v in e["anytime_top1"])
        assert np.array(e["anytime_top1_ci"]).shape == (T, 2)
        lo, hi = e["mean_return_ci"]
        assert lo <= e["mean_return"] + 1e-12 and e["mean_return"] <= hi + 1e-12
        assert len(e["budgeted"]["madds"]) == len(e["budgeted"]["top1"]) == 39
        assert len(e["madds_per_step"]) == T and e["seconds"] > 0
        assert e["upper_bound"] == (name == "oracle")
    assert res["agents"]["random"]["n_runs"] == 3 and res["agents"]["center"]["n_runs"] == 1
    # every agent starts from the same glance: the same step-0 accuracy
    assert len({e["anytime_top1"][0] for e in res["agents"].values()}) == 1
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == len(AGENTS) * T and {"agent", "step", "top1", "top1_lo", "top1_hi", "mean_return",
                                                "madds_cumulative", "seconds"} <= set(rows[0])
    md = (out / "results.md").read_text()
    assert md == markdown_table(res)
    contenders, bound = md.split("Upper bound")
    assert "| oracle |" in bound and "| oracle |" not in contenders and "| center |" in contenders
    assert "12 held-out images" in res["fit"]["images"]


def test_same_seed_same_results(first_run, tmp_path):
    out, _ = first_run
    bench(tmp_path)
    a = json.loads((out / "results.json").read_text())
    b = json.loads((tmp_path / "results.json").read_text())
    assert _drop_seconds(a) == _drop_seconds(b)


def test_random_seeds_matter_and_intervals_cover_runs_and_images(first_run):
    _, res = first_run
    runs = res["agents"]["random"]["runs"]
    assert [r["label"] for r in runs] == ["seed=0", "seed=1", "seed=2"]
    for name in ("random", "center"):
        e = res["agents"][name]
        for t, (lo, hi) in enumerate(e["anytime_top1_ci"]):
            assert lo - 1e-9 <= e["anytime_top1"][t] <= hi + 1e-9
    # one deterministic run still has an interval: the images are resampled (two-level bootstrap)
    lo, hi = res["agents"]["center"]["anytime_top1_ci"][-1]
    assert hi - lo > 0


def test_comparison_to_the_reference_and_the_oracle_gap(first_run):
    _, res = first_run
    assert res["reference"] == "paper-ppo" and "vs_reference" not in res["agents"]["paper-ppo"]
    for name, e in res["agents"].items():
        if name == "paper-ppo":
            continue
        vs = e["vs_reference"]
        d = e["anytime_top1"][-1] - res["agents"]["paper-ppo"]["anytime_top1"][-1]
        assert vs["top1_difference"][-1] == pytest.approx(d)
        lo, hi = vs["top1_difference_ci"][-1]
        assert lo - 1e-9 <= vs["top1_difference"][-1] <= hi + 1e-9
        assert 0.0 <= vs["mcnemar"]["p_value"] <= 1.0
        assert vs["probability_of_improvement"] is None  # the reference has one run: nothing to compare over runs
    assert res["agents"]["oracle"]["oracle_gap_closed"] == pytest.approx(1.0)
    assert res["agents"]["random"]["oracle_gap_closed"] == pytest.approx(0.0)


def test_each_agent_pays_the_env_plus_its_own_decisions(first_run, tmp_path):
    out, res = first_run
    env = np.array(res["env_madds_per_step"])
    for name, e in res["agents"].items():
        own = np.array(e["agent_madds_per_step"])
        np.testing.assert_allclose(e["madds_per_step"], env + own)
        assert (own.sum() > 0) == (name == "paper-ppo"), name  # baselines and the oracle: no own cost
        assert e["seconds_per_decision"] > 0
    np.testing.assert_allclose(np.cumsum(env + res["agents"]["paper-ppo"]["agent_madds_per_step"]),
                               res["paper_madds_cumulative"])
    records = np.load(out / "per_image.npz")
    assert records["paper-ppo/correct"].shape == (1, res["T"], EPISODES)
    assert records["random/p_true"].shape == (3, res["T"], EPISODES)
    top1 = records["center/correct"][0].mean(1) * 100
    np.testing.assert_allclose(top1, res["agents"]["center"]["anytime_top1"])


def test_oracle_last_step_top1_is_at_least_every_contenders(first_run):
    _, res = first_run
    best = res["agents"]["oracle"]["anytime_top1"][-1]
    for name, e in res["agents"].items():
        assert best >= e["anytime_top1"][-1], name


def test_oracle_is_listed_as_an_upper_bound_and_wins_each_greedy_step():
    """On the tiny untrained env the oracle's last-step top-1 need not beat a lucky random run (it is greedy on
    p(y), not on top-1); what always holds: after each of its steps p(y) is at least that of any other on-grid
    choice from the same state — here the centre and raster patches, both cells of the 3×3 grid, at step 1."""
    m, ds = tiny_model(), tiny_dataset(n=30)
    idx = list(range(10))
    py = {}
    for name, settings in (("oracle", EnvSettings(action_mode="grid", grid_size=3)), ("center", EnvSettings()),
                           ("raster", EnvSettings())):
        agent = make(name, **({"grid_size": 3} if name == "oracle" else {}))
        ep = rollout(GFNetCore(m, ds, 5, settings, device="cpu"), agent, idx)
        py[name] = ep.probs[1].gather(1, ep.targets[:, None])[:, 0]
    assert torch.all(py["oracle"] >= py["center"] - 1e-6) and torch.all(py["oracle"] >= py["raster"] - 1e-6)


def test_budgeted_curve_is_the_official_procedure(monkeypatch, tmp_path):
    calls = []
    original = budgeted.budgeted_curve
    fitting = budgeted.fit_threshold_rows

    def spy(*args, **kwargs):  # the thresholds are fitted once, then evaluated on the per-image records
        calls.append(args)
        return fitting(*args, **kwargs)

    monkeypatch.setattr(budgeted, "fit_threshold_rows", spy)
    res = bench(tmp_path, agents=["center"])
    assert len(calls) == 1
    # recompute by hand: evaluate on 12 images spread over the 30 (i*30//12), fit on 12 of the others
    kw = env_kwargs()
    core = GFNetCore(kw["checkpoint"], kw["dataset"], 5, EnvSettings(), device="cpu")
    eval_idx = [i * 30 // 12 for i in range(12)]
    fit_idx = [i for i in range(30) if i not in eval_idx][:12]
    ev = rollout(core, make("center"), eval_idx)
    fit = rollout(core, make("center"), fit_idx)
    ref = original(fit.probs, fit.targets, ev.probs, ev.targets, core.madds_cumulative.tolist())
    assert res["agents"]["center"]["budgeted"]["top1"] == ref["top1"]
    assert res["agents"]["center"]["budgeted"]["madds"] == pytest.approx(ref["madds"])
    assert res["agents"]["center"]["anytime_top1"][-1] == pytest.approx(
        (ev.probs[-1].argmax(-1) == ev.targets).double().mean().item() * 100)


def test_trained_agent_seed_folders_are_runs(ppo_dirs, tmp_path):
    res = bench(tmp_path, agents=["paper-ppo", "center"], agent_dirs={"paper-ppo": str(ppo_dirs)})
    e = res["agents"]["paper-ppo"]
    assert e["n_runs"] == 2 and [r["label"].split("/")[-1] for r in e["runs"]] == ["seed_0", "seed_1"]
    assert "trained" in e["source"]
    # two explicit folders are the same two runs
    res2 = bench(tmp_path / "b", agents=["paper-ppo"],
                 agent_dirs={"paper-ppo": [str(ppo_dirs / "seed_0"), str(ppo_dirs / "seed_1")]})
    assert _drop_seconds(res2["agents"]["paper-ppo"])["anytime_top1"] == _drop_seconds(e)["anytime_top1"]


def test_paper_ppo_defaults_to_the_checkpoint_policy(first_run):
    _, res = first_run
    assert res["agents"]["paper-ppo"]["source"] == "the policy stored in the env's checkpoint"


def test_trainable_agent_without_weights_fails_with_how_to_train(tmp_path):
    with pytest.raises(ValueError, match="gfnet train-agent --agent sb3-sac"):
        bench(tmp_path, agents=["center", "sb3-sac"])


def test_bad_arguments(tmp_path):
    with pytest.raises(KeyError):
        bench(tmp_path, agents=["nope"])
    with pytest.raises(ValueError, match="early_exit"):
        run_benchmark(ENV_ID, ["center"], None, episodes=4, env_kwargs={**env_kwargs(), "early_exit": 0.9},
                      device="cpu", verbose=False)
    with pytest.raises(ValueError, match="not benchmarked"):
        bench(tmp_path, agents=["center"], agent_dirs={"paper-ppo": "x"})


def test_max_steps_shortens_every_curve(tmp_path):
    res = run_benchmark(ENV_ID, ["center", "oracle"], None, episodes=6, seeds=1,
                        env_kwargs={**env_kwargs(), "max_steps": 2}, batch_size=4, device="cpu", verbose=False)
    assert res["T"] == 3 and all(len(e["anytime_top1"]) == 3 for e in res["agents"].values())


def test_bootstrap_ci():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    lo, hi = bootstrap_ci(x, seed=0)
    assert 1.0 <= lo < x.mean() < hi <= 4.0
    assert np.array_equal(bootstrap_ci(x, seed=0), bootstrap_ci(x, seed=0))
    assert bootstrap_ci([5.0]).tolist() == [5.0, 5.0]
    m, ci = mean_and_ci(np.array([[1.0, 10.0], [3.0, 10.0]]))
    assert m == [2.0, 10.0] and ci[1] == [10.0, 10.0]
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_rollout_pads_the_last_batch():
    m, ds = tiny_model(), tiny_dataset(n=30)
    small = rollout(GFNetCore(m, ds, 4, EnvSettings(), device="cpu"), make("center"), list(range(7)))
    big = rollout(GFNetCore(m, ds, 7, EnvSettings(), device="cpu"), make("center"), list(range(7)))
    assert small.probs.shape == (m.T, 7, 5)
    torch.testing.assert_close(small.probs, big.probs, atol=1e-5, rtol=0)
    assert torch.equal(small.targets, torch.stack([ds[i][1] for i in range(7)]))


def test_compare_merges_the_same_protocol_and_refuses_another(first_run, tmp_path, capsys):
    from gfnet_cli import main as cli
    from agents.benchmark.merge import merge_results

    out, res = first_run
    other = tmp_path / "other"
    bench(other, agents=["center", "saliency"])
    merged = merge_results([out, other])
    assert set(merged["agents"]) == set(AGENTS) | {"center@other", "saliency@other"}
    assert merged["protocol"]["fingerprint"] == res["protocol"]["fingerprint"]
    short = tmp_path / "short"
    run_benchmark(ENV_ID, ["center"], short, episodes=6, env_kwargs=env_kwargs(), batch_size=5, device="cpu",
                  verbose=False)
    with pytest.raises(ValueError, match="eval_images"):
        merge_results([out, short])
    code = cli.main(["compare", str(out), str(short)])
    assert code == 2 and "different protocols" in capsys.readouterr().err
    assert cli.main(["compare", str(out), str(other), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "results.md").read_text().split("###")[0].count("| center") == 2  # main table


def test_compare_recomputes_paired_statistics_against_another_reference(first_run, tmp_path, capsys):
    from gfnet_cli import main as cli
    from agents.benchmark.merge import merge_results

    out, res = first_run
    # one folder re-read against random: the paired numbers equal a benchmark run with --reference random
    again = tmp_path / "vs_random"
    direct = bench(again, reference="random")
    merged = merge_results([out], reference="random")
    assert merged["reference"] == "random" and "vs_reference" not in merged["agents"]["random"]
    for name in ("center", "paper-ppo"):
        assert merged["agents"][name]["vs_reference"] == direct["agents"][name]["vs_reference"]
        assert merged["agents"][name]["vs_reference"]["reference"] == "random"
    # two folders: an agent of one against an agent of the other
    other = tmp_path / "other"
    bench(other, agents=["center", "saliency"])
    both = merge_results([out, other], reference="saliency@other")
    assert both["agents"]["saliency"]["vs_reference"]["top1_difference"][-1] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="not among the merged agents"):
        merge_results([out], reference="nobody")
    assert cli.main(["compare", str(out), "--reference", "random"]) == 0
    assert "random" in capsys.readouterr().out
