"""The "as published" row: a checkpoint's stored numbers beside the measured paper-ppo, ``--thresholds checkpoint``,
and writing measured numbers into a checkpoint (docs/benchmark.md, "As published"; docs/checkpoints.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.benchmark.published import WRITTEN_KEYS
from agents.benchmark.store_results import store_measured_results
from agents.benchmark.run import run_benchmark, spread_indices
from agents.paper_ppo import PaperPPOAgent, save_policy_into_checkpoint
from feature_nets.budgeted import evaluate_thresholds
from feature_nets.checkpoint import load_checkpoint, read_checkpoint_dict, save_checkpoint
from gfnet_env.core import GFNetCore
from gfnet_env.rollout import rollout
from gfnet_env.settings import EnvSettings
from gfnet_env.tasks import DEFAULT_FMNIST_CHECKPOINT
from helpers import needs_fashion_mnist, run_cli, tiny_dataset, tiny_model, train_tiny_paper_ppo

ENV_ID = "GFNet-ImageNet-v0"
FMNIST = "GFNet-ClutteredFashionMNIST-v0"
EPISODES, IMAGES = 12, 30
#: (P, T) stored thresholds for the tiny model (T = 4): one that lets many exit early, one few, one none
THRESHOLDS = torch.tensor([[0.3, 0.25, 0.2, -1e8], [0.9, 0.9, 0.85, -1e8], [1e8, 1e8, 1e8, -1e8]])
STORED = {"anytime_classification": [10.0, 20.0, 30.0, 40.0],
          "budgeted_batch_classification": [[1e5, 2e5, 3e5], [30.0, 35.0, 40.0]],
          "dynamic_threshold": THRESHOLDS, "anytime_classification_note": "made up for the test"}


def bench(checkpoint, out=None, agents=("random", "paper-ppo"), **kw):
    return run_benchmark(ENV_ID, list(agents), out, episodes=EPISODES, seeds=1,
                         env_kwargs={"checkpoint": checkpoint, "dataset": tiny_dataset(n=IMAGES)}, batch_size=5,
                         device="cpu", seed=0, verbose=False, **kw)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine two threads spin-wait against other processes, and the 10,000
    episodes below take several times longer; the numbers do not depend on it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def stored_ckpt(tmp_path):
    """A tiny checkpoint that stores results for its policy, as released files do."""
    return save_checkpoint(tiny_model(), tmp_path / "stored.pth.tar", **STORED)


def test_a_checkpoint_without_stored_numbers_shows_no_row(tmp_path, tiny_ckpt):
    res = bench(str(tiny_ckpt), tmp_path / "out")
    assert res["as_published"] is None
    assert json.loads((tmp_path / "out" / "results.json").read_text())["as_published"] is None
    assert "as published" not in (tmp_path / "out" / "results.md").read_text().lower()
    assert bench(tiny_model())["as_published"] is None  # a model object: no file, no stored numbers


def test_stored_numbers_show_the_as_published_row(tmp_path, stored_ckpt):
    res = bench(str(stored_ckpt), tmp_path / "out")
    pub = res["as_published"]
    measured = res["agents"]["paper-ppo"]["anytime_top1"]
    assert pub["agent"] == "paper-ppo" and pub["source"] == str(stored_ckpt) and pub["note"] == "made up for the test"
    assert pub["anytime_top1"] == STORED["anytime_classification"] and pub["measured_anytime_top1"] == measured
    assert pub["delta_per_step"] == pytest.approx([m - p for m, p in zip(measured, STORED["anytime_classification"])])
    assert pub["budgeted"] == {"madds": [1e5, 2e5, 3e5], "top1": [30.0, 35.0, 40.0]}
    assert (pub["measured_images"], pub["eval_split_images"], pub["full_split"]) == (EPISODES, IMAGES, False)
    assert pub["thresholds"] == "fit" and not pub["same_thresholds"] and pub["budgeted_delta"] is None
    assert pub["same_images"] is None  # the file does not say which images it measured
    assert res["thresholds"] == {"random": "fit", "paper-ppo": "fit"}
    md = (tmp_path / "out" / "results.md").read_text()
    assert "### As published (stored in the checkpoint; not measured here): paper-ppo" in md
    assert f"used {EPISODES} of the {IMAGES} images" in md and "| paper-ppo as published | 10.00 / 20.00" in md
    assert json.loads((tmp_path / "out" / "results.json").read_text())["as_published"]["anytime_top1"] == \
        STORED["anytime_classification"]
    # only where the checkpoint's own policy is benchmarked
    assert bench(str(stored_ckpt), agents=("random",))["as_published"] is None


def test_a_retrained_paper_ppo_shows_no_row(tmp_path, stored_ckpt):
    train_tiny_paper_ppo(tmp_path / "ppo", steps=18)
    res = bench(str(stored_ckpt), agents=("paper-ppo",), agent_dirs={"paper-ppo": str(tmp_path / "ppo")})
    assert res["as_published"] is None
    with pytest.raises(ValueError, match="without --agent-dir"):
        bench(str(stored_ckpt), agents=("paper-ppo",), agent_dirs={"paper-ppo": str(tmp_path / "ppo")},
              thresholds="checkpoint")


def test_thresholds_checkpoint_evaluates_the_stored_thresholds(tmp_path, stored_ckpt):
    res = bench(str(stored_ckpt), tmp_path / "out", thresholds="checkpoint")
    e = res["agents"]["paper-ppo"]
    assert res["thresholds"] == {"random": "fit", "paper-ppo": "checkpoint"}
    assert len(res["agents"]["random"]["budgeted"]["top1"]) == 39  # the others keep fitted thresholds
    assert e["runs"][0]["budgeted"]["thresholds"] == THRESHOLDS.tolist()
    # by hand: the checkpoint's policy on the same images, each stored row evaluated by feature_nets.budgeted
    model = load_checkpoint(stored_ckpt).model
    core = GFNetCore(model, tiny_dataset(n=IMAGES), 5, EnvSettings(obs_mode="feature_map"), device="cpu")
    ev = rollout(core, PaperPPOAgent.from_checkpoint(model, device="cpu"), spread_indices(IMAGES, EPISODES)[0])
    flops = np.cumsum(e["madds_per_step"]).tolist()
    expected = [evaluate_thresholds(ev.probs, ev.targets, row, flops)[:2] for row in THRESHOLDS]
    assert e["budgeted"]["p"] == [1, 2, 3]
    assert e["budgeted"]["top1"] == [t for t, _ in expected] and e["budgeted"]["madds"] == [m for _, m in expected]
    pub = res["as_published"]
    assert pub["thresholds"] == "checkpoint"
    assert pub["budgeted_delta"]["top1"] == pytest.approx([t - s for (t, _), s in zip(expected, [30.0, 35.0, 40.0])])
    assert "the checkpoint's stored thresholds" in (tmp_path / "out" / "results.md").read_text()
    # the null models replaying paper-ppo's looks keep their own fitted thresholds
    res = bench(str(stored_ckpt), agents=("paper-ppo", "shuffle", "prior"), thresholds="checkpoint")
    assert res["thresholds"] == {"paper-ppo": "checkpoint", "shuffle": "fit", "prior": "fit"}
    assert res["agents"]["paper-ppo"]["budgeted"]["top1"] == e["budgeted"]["top1"]


def test_thresholds_checkpoint_errors_clearly(tmp_path, tiny_ckpt, stored_ckpt):
    with pytest.raises(ValueError, match="stores no dynamic_threshold"):
        bench(str(tiny_ckpt), thresholds="checkpoint")
    with pytest.raises(ValueError, match="stores no dynamic_threshold"):
        bench(tiny_model(), thresholds="checkpoint")
    with pytest.raises(ValueError, match="benchmark paper-ppo"):
        bench(str(stored_ckpt), agents=("random",), thresholds="checkpoint")
    with pytest.raises(ValueError, match=r"thresholds for \[4\] steps, but this benchmark's episodes have 3"):
        run_benchmark(ENV_ID, ["paper-ppo"], None, episodes=6, env_kwargs={
            "checkpoint": str(stored_ckpt), "dataset": tiny_dataset(n=IMAGES), "max_steps": 2},
            batch_size=3, device="cpu", verbose=False, thresholds="checkpoint")
    with pytest.raises(ValueError, match="thresholds must be one of"):
        bench(str(stored_ckpt), tmp_path / "never", thresholds="fitted")
    assert not (tmp_path / "never").exists()  # refused before the output folder is claimed


def test_store_measured_results_keeps_every_other_entry_bit_for_bit(tmp_path):
    ckpt = save_checkpoint(tiny_model(), tmp_path / "t.pth.tar", stage=2, anytime_classification=[1.0, 2.0, 3.0, 4.0],
                           anytime_classification_note="stale")
    before = read_checkpoint_dict(ckpt)
    res = store_measured_results(ckpt, ENV_ID, env_kwargs={"dataset": tiny_dataset(n=IMAGES)}, episodes=EPISODES,
                                 batch_size=5)
    after = read_checkpoint_dict(ckpt)
    assert set(after) == set(before) | set(WRITTEN_KEYS)
    for key, value in before.items():
        if key in WRITTEN_KEYS:
            continue
        if isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            assert value.keys() == after[key].keys(), key
            for k, v in value.items():
                w = after[key][k]
                assert v.dtype == w.dtype and torch.equal(v, w), (key, k)
        else:
            assert after[key] == value, key
    e = res["agents"]["paper-ppo"]
    assert after["anytime_classification"] == e["anytime_top1"]
    assert after["budgeted_batch_classification"] == [e["budgeted"]["madds"], e["budgeted"]["top1"]]
    assert after["dynamic_threshold"].dtype == torch.float32 and after["dynamic_threshold"].shape == (39, 4)
    assert "paper-ppo" in after["anytime_classification_note"] and not list(tmp_path.glob("*.new*"))
    # the benchmark on the same images reproduces them exactly; the stored protocol says they are the same images
    pub = bench(str(ckpt), agents=("paper-ppo",), thresholds="checkpoint")["as_published"]
    assert pub["delta_per_step"] == [0.0] * 4 and pub["same_images"] is True
    assert pub["budgeted_delta"] == {"madds": [0.0] * 39, "top1": [0.0] * 39}
    # thresholds fitted again on the same fit images are the stored ones: the curve is compared too
    pub = bench(str(ckpt), agents=("paper-ppo",))["as_published"]
    assert pub["thresholds"] == "fit" and pub["same_thresholds"] and pub["budgeted_delta"]["top1"] == [0.0] * 39
    # a new policy makes them stale: all dropped
    written = save_policy_into_checkpoint(load_checkpoint(ckpt).model.policy, ckpt, tmp_path / "new.pth.tar")
    assert not set(WRITTEN_KEYS) & set(read_checkpoint_dict(written))


def test_the_shipped_checkpoint_stores_its_own_numbers():
    ckpt = load_checkpoint(DEFAULT_FMNIST_CHECKPOINT)
    assert len(ckpt.anytime_classification) == ckpt.T
    madds, top1 = ckpt.budgeted_batch_classification
    assert len(madds) == len(top1) == 39 and np.array(ckpt.dynamic_threshold).shape == (39, ckpt.T)
    assert "10000 of the 10000 images" in ckpt.extra["anytime_classification_note"]
    assert ckpt.model.stored_results["source"] == str(DEFAULT_FMNIST_CHECKPOINT)


@needs_fashion_mnist
@pytest.mark.slow
def test_shipped_checkpoint_as_published_matches_the_full_test_split(tmp_path):
    """The reproduction check on the embedded task: paper-ppo on all 10,000 test canvases against the numbers the
    shipped checkpoint stores (its budgeted curve with its stored thresholds too)."""
    res = run_benchmark(FMNIST, ["paper-ppo"], tmp_path, episodes=10_000, batch_size=250, device="cpu", seed=0,
                        verbose=False, thresholds="checkpoint")
    pub = res["as_published"]
    assert pub["full_split"] and pub["measured_images"] == 10_000 and pub["same_images"] is True
    assert len(pub["delta_per_step"]) == res["T"] == 5
    assert max(abs(d) for d in pub["delta_per_step"]) <= 0.05, pub["delta_per_step"]
    assert max(abs(d) for d in pub["budgeted_delta"]["top1"]) <= 0.05, pub["budgeted_delta"]
    assert max(abs(d) / m for d, m in zip(pub["budgeted_delta"]["madds"], pub["budgeted"]["madds"])) <= 1e-6
    assert "used all 10000 images of the evaluation split" in (tmp_path / "results.md").read_text()


@needs_fashion_mnist
def test_cli_thresholds_checkpoint_without_stored_thresholds_is_one_line(tmp_path, capsys):
    bare = save_policy_into_checkpoint(load_checkpoint(DEFAULT_FMNIST_CHECKPOINT).model.policy,
                                       DEFAULT_FMNIST_CHECKPOINT, tmp_path / "bare.pth.tar")  # results dropped
    code, err = run_cli(["benchmark", "--env", FMNIST, "--env-kwarg", f"checkpoint={bare}", "--agents", "paper-ppo",
                         "--episodes", "4", "--thresholds", "checkpoint", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "stores no dynamic_threshold" in err and "Traceback" not in err
