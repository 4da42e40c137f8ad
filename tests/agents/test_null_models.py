"""The null models (``shuffle``, ``prior``): exact replays of another agent's looks, in the benchmark and alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.base import Agent, RecordedRun, RunContext
from agents.benchmark.null_models import PriorAgent, ShuffleAgent, derangement, most_frequent_place
from agents.benchmark.run import run_benchmark
from gfnet_env.core import GFNetCore
from gfnet_env.rollout import rollout
from gfnet_env.settings import EnvSettings
from helpers import tiny_dataset, tiny_model

ENV_ID = "GFNet-ImageNet-v0"


class RandomStopper(Agent):
    """A source with image-dependent looks and exit steps: random corners, a stop with probability 0.3."""

    name = "random-stopper"
    stop_action = True

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs, deterministic=True):
        n = len(obs)
        return np.concatenate([self.rng.random((n, 2)), (self.rng.random((n, 1)) < 0.3)], 1).astype(np.float32)


def _recorded(model, dataset, stop: bool, eval_idx, fit_idx):
    source = RandomStopper() if stop else _plain_random()
    with GFNetCore(model, dataset, 5, EnvSettings(stop_action=stop), device="cpu") as core:
        return RecordedRun("", rollout(core, source, eval_idx), rollout(core, source, fit_idx))


def _plain_random():
    import agents

    return agents.make("random", seed=3)


def _replayed(model, dataset, agent, indices):
    with GFNetCore(model, dataset, 5, EnvSettings(stop_action=agent.stop_action), device="cpu") as core:
        return rollout(core, agent, indices)


def test_derangement_moves_every_image_and_is_seeded():
    for n in (2, 3, 17, 100):
        d = derangement(n, seed=5)
        assert sorted(d) == list(range(n)) and np.all(d != np.arange(n))
        assert np.array_equal(d, derangement(n, seed=5))
    assert not np.array_equal(derangement(100, 0), derangement(100, 1))
    with pytest.raises(ValueError, match="at least 2 images"):
        derangement(1, 0)


@pytest.mark.parametrize("stop", [False, True])
def test_shuffle_replays_the_source_looks_of_another_image_exactly(model, dataset, stop):
    """On image i shuffle looks exactly where the source looked on image π(i), and ends after as many looks."""
    eval_idx, fit_idx = list(range(0, 20, 2)), list(range(1, 20, 2))
    rec = _recorded(model, dataset, stop, eval_idx, fit_idx)
    ctx = RunContext(name="shuffle", env_id=ENV_ID, model=model, seed=7)
    agent = ShuffleAgent.from_looks(rec, model.image_size, model.patch_size, ctx)
    assert agent.stop_action == stop
    for looks, idx, k in ((rec.eval, eval_idx, 0), (rec.fit, fit_idx, 1)):
        got = _replayed(model, dataset, agent, idx)
        donor = derangement(len(idx), 7 + k)
        assert np.array_equal(got.boxes, looks.boxes[:, donor])
        assert np.array_equal(got.exit_step, looks.exit_step[donor])
        if stop:
            assert len(set(got.exit_step.tolist())) > 1  # the source's exits vary, and shuffle copies them
    with pytest.raises(ValueError, match="no recorded looks"):  # images of neither set: refused, not made up
        _replayed(model, dataset, agent, [20, 21, 22])


def test_prior_plays_one_sequence_the_source_most_frequent_places(model, dataset):
    eval_idx, fit_idx = list(range(12)), list(range(12, 24))
    rec = _recorded(model, dataset, True, eval_idx, fit_idx)
    ctx = RunContext(name="prior", env_id=ENV_ID, model=model, env_kwargs={"grid_size": 2})
    agent = PriorAgent.from_looks(rec, model.image_size, model.patch_size, ctx)
    got = _replayed(model, dataset, agent, eval_idx)
    assert np.all(got.boxes == got.boxes[:, :1])  # the same looks on every image
    assert len(set(got.exit_step.tolist())) == 1
    assert got.exit_step[0] == int(np.percentile(rec.fit.exit_step, 50, method="lower"))
    span = model.image_size - model.patch_size
    first = rec.fit.boxes[0, rec.fit.exit_step > 0, :2]
    if got.exit_step[0] > 0:
        assert np.array_equal(got.boxes[0, 0, :2], most_frequent_place(first, span, 2))


def test_most_frequent_place_takes_the_mean_corner_of_the_modal_cell():
    corners = np.array([[0, 0], [2, 4], [30, 30], [31, 29], [29, 31]])
    assert most_frequent_place(corners, span=32, grid_size=2).tolist() == [30, 30]


def _bench(agents, **kw):
    return run_benchmark(ENV_ID, agents, None, episodes=12, seeds=2, env_kwargs={
        "checkpoint": tiny_model(), "dataset": tiny_dataset(n=30), "grid_size": 3}, batch_size=5, device="cpu",
        seed=0, verbose=False, **kw)


def test_benchmark_runs_null_models_of_the_reference_after_it_and_keeps_the_order():
    res = _bench(["shuffle", "prior", "random", "center"], reference="random")
    assert list(res["agents"]) == ["shuffle", "prior", "random", "center"]
    for name in ("shuffle", "prior"):
        e = res["agents"][name]
        assert e["n_runs"] == 2 and e["source"] == "null model of random"  # one per run of the source
        assert all(m == 0.0 for m in e["agent_madds_per_step"])  # a table lookup costs nothing
        assert "equal_compute" in e and "auc" in e
    # shuffle of a deterministic source on other images: same compute, its own top-1
    json.dumps(res)


def test_benchmark_null_model_of_a_named_agent_and_clear_errors():
    res = _bench(["center", "shuffle:center", "prior:center"], reference=None)
    assert res["agents"]["prior:center"]["source"] == "null model of center"
    with pytest.raises(ValueError, match="benchmark raster too"):
        _bench(["center", "shuffle:raster"], reference=None)
    with pytest.raises(ValueError, match="pass --reference"):
        _bench(["center", "shuffle"], reference=None)
    with pytest.raises(ValueError, match="not itself a null model"):
        _bench(["center", "prior", "shuffle:prior"], reference="center")


def test_shuffle_of_a_stopping_agent_spends_what_its_source_spends(tmp_path):
    """The shuffled looks keep their exit steps: same mean looks and multiply-adds as the source; the budgeted
    plot draws the stopping agents' operating points."""
    import agents

    agents.register("random-stopper", RandomStopper)
    try:
        res = run_benchmark(ENV_ID, ["random-stopper", "shuffle", "prior"], tmp_path, episodes=12, seeds=1,
                            env_kwargs={"checkpoint": tiny_model(), "dataset": tiny_dataset(n=30)}, batch_size=5,
                            device="cpu", seed=0, verbose=False, reference="random-stopper")
    finally:
        agents.unregister("random-stopper")
    src, shuf = res["agents"]["random-stopper"]["operating_point"], res["agents"]["shuffle"]["operating_point"]
    assert 0 < src["stopped_share"] < 1
    assert shuf["mean_exit_step"] == src["mean_exit_step"] and shuf["madds"] == src["madds"]
    assert shuf["stopped_share"] == src["stopped_share"]
    assert "learned_stop" in res["agents"]["shuffle"]
    assert (tmp_path / "budgeted.png").stat().st_size > 0
