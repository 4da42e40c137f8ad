"""The benchmark past one process: torchrun's ranks and ``--shard K/N`` + ``gfnet merge`` give the one-process
per-image records and table (same seed), and the random agent's draws are keyed by image, not by batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.baselines import RandomAgent
from agents.benchmark.merge import merge_folders
from agents.benchmark.run import run_benchmark
from agents.benchmark.shards import Shard
from gfnet_env.core import GFNetCore
from gfnet_env.rollout import rollout
from gfnet_env.settings import EnvSettings
from helpers import run_cli, tiny_dataset, tiny_model

ROOT = Path(__file__).resolve().parents[2]
ENV = "GFNet-ClutteredFashionMNIST-v0"
# 5 batches of 5 (the last one partial: 24 images), so the two ranks / shards get unequal shares
SETTINGS = dict(episodes=24, fit_episodes=12, seeds=2, batch_size=5, seed=3)
AGENTS = ["random", "center", "paper-ppo", "shuffle"]
#: the per-agent numbers of the table that the contract covers
TABLE_FIELDS = ("anytime_top1", "anytime_top1_ci", "mean_return", "mean_return_ci", "budgeted")


def cli_args(agents: list[str], out: Path) -> list[str]:
    return ["benchmark", "--env", ENV, "--agents", ",".join(agents), "--episodes", str(SETTINGS["episodes"]),
            "--fit-episodes", str(SETTINGS["fit_episodes"]), "--seeds", str(SETTINGS["seeds"]),
            "--batch-size", str(SETTINGS["batch_size"]), "--seed", str(SETTINGS["seed"]), "--device", "cpu",
            "--out", str(out)]


def torchrun(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 -m gfnet_cli ARGS`` (CPU, gloo, a free port)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "CUDA_VISIBLE_DEVICES": ""}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def read(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    results = json.loads((folder / "results.json").read_text())
    with np.load(folder / "per_image.npz") as data:
        return results, {k: data[k] for k in data.files}


def assert_same(one: Path, other: Path, agents: list[str]) -> None:
    """Identical per-image records of ``agents`` and identical top-1 / intervals / returns / budgeted curves."""
    a, za = read(one)
    b, zb = read(other)
    keys = [k for k in za if "/" not in k or k.split("/")[0] in agents]
    assert keys and set(keys) <= set(zb)
    for key in keys:
        assert za[key].dtype == zb[key].dtype and np.array_equal(za[key], zb[key]), key
    for name in agents:
        for field in TABLE_FIELDS:
            assert a["agents"][name][field] == b["agents"][name][field], (name, field)
    assert a["protocol"] == b["protocol"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Every run of this module on one torch thread, like each torchrun rank (torchrun sets ``OMP_NUM_THREADS=1``):
    the contract is per thread count, as CPU kernels may sum in another order with more threads (last-bit changes).
    Autouse, so it is in place before the module's other fixtures run."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    run_benchmark(ENV, AGENTS, out, device="cpu", verbose=False, **SETTINGS)
    return out


def test_torchrun_two_ranks_give_the_one_process_records_and_table(one_process, tmp_path):
    out = tmp_path / "two"
    torchrun(["-m", "gfnet_cli", *cli_args(AGENTS, out)])
    assert_same(one_process, out, AGENTS)
    a, _ = read(one_process)
    b, _ = read(out)
    for name in AGENTS:  # the comparisons with the reference (paper-ppo) and the null model's rows too
        assert a["agents"][name].get("vs_reference") == b["agents"][name].get("vs_reference")
        assert a["agents"][name]["equal_compute"] == b["agents"][name]["equal_compute"]
    assert b["processes"] == 2 and a["as_published"] == b["as_published"]
    assert not list(out.glob(".staging-*")) and not (out / ".lock").exists()


def test_shards_merged_give_the_one_process_result(one_process, tmp_path, capsys):
    agents = AGENTS[:3]  # null models replay other images' looks: not with --shard (refused below)
    for k in (1, 0):
        run_benchmark(ENV, agents, tmp_path / f"s{k}", device="cpu", verbose=False, shard=f"{k}/2", **SETTINGS)
    shard0, z0 = read(tmp_path / "s0")
    assert shard0["shard"]["index"] == 0 and shard0["shard"]["images"] == 14  # batches 0, 2, 4: 5 + 5 + 4 images
    assert len(z0["image_index"]) == 14
    code, text = run_cli(["merge", str(tmp_path / "s1"), str(tmp_path / "s0"), "--out", str(tmp_path / "m")], capsys)
    assert code == 0, text
    assert_same(one_process, tmp_path / "m", agents)
    merged, _ = read(tmp_path / "m")
    assert "shard" not in merged and merged["episodes"] == SETTINGS["episodes"]
    # a merged folder is a whole benchmark: gfnet compare reads it; a shard it refuses
    code, text = run_cli(["compare", str(tmp_path / "m"), "--reference", "random"], capsys)
    assert code == 0, text
    with pytest.raises(ValueError, match="gfnet merge"):
        merge_folders([tmp_path / "s0", tmp_path / "m"])
    code, text = run_cli(["merge", str(tmp_path / "s0"), "--out", str(tmp_path / "m2")], capsys)
    assert code == 2 and "missing: [1]" in text


def test_shard_refusals(tmp_path):
    with pytest.raises(ValueError, match="with --shard"):
        run_benchmark(ENV, AGENTS, tmp_path / "x", device="cpu", verbose=False, shard="0/2", **SETTINGS)
    for bad in ("2/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="K/N"):
            Shard.parse(bad)
    with pytest.raises(ValueError, match="none for shard 7"):  # 5 batches: no share for shard 7 of 8
        run_benchmark(ENV, ["center"], tmp_path / "y", device="cpu", verbose=False, shard="7/8", **SETTINGS)


def test_shard_positions_are_whole_batches():
    shards = [Shard(k, 3).positions(11, 2) for k in range(3)]
    assert shards == [[0, 1, 6, 7], [2, 3, 8, 9], [4, 5, 10]]
    assert sorted(sum(shards, [])) == list(range(11))


def test_random_agent_draws_are_keyed_by_image_not_batch():
    indices = [3, 17, 4, 29, 11, 0, 8, 21, 5, 26]
    looks = []
    for batch in (1, 7, 64):
        core = GFNetCore(tiny_model(), tiny_dataset(n=30), batch, EnvSettings(), device="cpu")
        try:
            looks.append(rollout(core, RandomAgent(seed=5), indices).boxes)
        finally:
            core.close()
    assert np.array_equal(looks[0], looks[1]) and np.array_equal(looks[0], looks[2])
    # the image's own stream: the same actions wherever the image sits in its batch; another seed, other draws
    a, b = RandomAgent(seed=5), RandomAgent(seed=5)
    a.reset(2)
    a.begin_episodes(np.array([9, 4]))
    b.reset(1)
    b.begin_episodes(np.array([4]))
    obs = np.zeros((2, 1))
    assert np.array_equal(a.act(obs)[1], b.act(obs[:1])[0])
    c = RandomAgent(seed=6)
    c.reset(1)
    c.begin_episodes(np.array([4]))
    assert not np.array_equal(a.act(obs)[1], c.act(obs[:1])[0])
