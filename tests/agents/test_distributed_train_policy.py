"""``gfnet train-policy`` under torchrun: 2 CPU processes (gloo) train, the replicas stay equal, rank 0 writes one
run folder whose policy loads and benchmarks above random patches."""

from __future__ import annotations

import json
import textwrap

import torch

from agents.benchmark.run import run_benchmark
from agents.paper_ppo.files import load_policy_blob
from test_distributed_benchmark import ENV, ROOT, torchrun

CHECKPOINT = ROOT / "gfnet_env" / "weights" / "cluttered_fmnist_gfnet.pth.tar"


def test_two_processes_train_one_run_that_benchmarks_above_random(tmp_path):
    out = tmp_path / "run"
    # 2 updates of a global batch of 16 (8 images per rank), from the checkpoint's policy
    torchrun(["-m", "gfnet_cli", "train-policy", "--checkpoint", str(CHECKPOINT), "--env", ENV, "--init",
              "checkpoint", "--steps", "128", "--batch-size", "16", "--no-progress", "--out", str(out)])
    rows = (out / "progress.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 batches, written once (by rank 0)
    assert not (out / ".lock").exists() and (out / "cluttered_fmnist_gfnet_stage2.pth.tar").is_file()
    latest = load_policy_blob(out / "paper_ppo_latest.pt")
    assert latest["batches_done"] == 2 and len(latest["generators"]) == 2  # each rank's action noise, to resume
    assert not torch.equal(latest["generators"][0], latest["generators"][1])
    assert latest["metadata"]["processes"] == 2 and latest["metadata"]["batch_size"] == 16
    assert json.loads((out / "agent.json").read_text())["agent"] == "paper-ppo"
    res = run_benchmark(ENV, ["random", "paper-ppo"], None, agent_dirs={"paper-ppo": str(out)}, episodes=300,
                        fit_episodes=50, seeds=1, batch_size=100, device="cpu", verbose=False)
    trained, random = res["agents"]["paper-ppo"], res["agents"]["random"]
    assert trained["anytime_top1"][-1] > random["anytime_top1"][-1] + 2
    assert random["vs_reference"]["top1_difference_ci"][-1][1] < 0  # paired on the same 300 images: below it


def test_replicas_stay_equal_and_train(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from agents.paper_ppo.train import train_policy
        from helpers import tiny_dataset, tiny_model
        policy = train_policy("GFNet-ImageNet-v0", 48, {str(tmp_path / 'run')!r}, seed=0, batch_size=6,
                              device="cpu", episode_images=0, checkpoint=tiny_model(), dataset=tiny_dataset(n=30))
        torch.save(policy.policy.state_dict(), {str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.pt")
    """))
    torchrun([str(script)])
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    written = load_policy_blob(tmp_path / "run" / "paper_ppo.pt")["policy_state_dict"]
    meta = load_policy_blob(tmp_path / "run" / "paper_ppo.pt")["metadata"]
    assert meta["batches"] >= 2 and meta["env_steps"] >= 48 and meta["processes"] == 2
    rows = (tmp_path / "run" / "progress.csv").read_text().splitlines()
    assert len(rows) == 1 + meta["batches"]  # one row per batch, over both ranks' episodes
    for key in a:
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], written[key]), key
