"""Honest accounting traps, closed (issue 20, item 6): an agent in numpy that declares no cost is charged 0
multiply-adds *with a note*, and can declare its cost (``decision_madds``); ``paper-ppo`` refuses a checkpoint
whose policy was never trained (stage 1); ``gfnet compare`` of folders with different references recomputes
every comparison against one reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import agents
from agents.base import Agent
from agents.benchmark.costs import MeteredAgent, declared_madds
from agents.benchmark.run import run_benchmark
from helpers import ENV_ID, tiny_dataset, tiny_model


def env_kwargs():
    return {"checkpoint": tiny_model(), "dataset": tiny_dataset(n=18), "grid_size": 3}


def bench(out, agent_list, **kw):
    return run_benchmark(ENV_ID, agent_list, out, episodes=6, seeds=1, env_kwargs=env_kwargs(), batch_size=3,
                         device="cpu", seed=0, verbose=False, **kw)


# --- (a) an agent's own cost: counted, declared, or noted as missing ----------------------------------------

class NumpyAgent(Agent):
    """A user's agent that decides in numpy: the torch counter sees none of it."""

    name = "numpy-agent"
    obs_mode = "gru"

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        state = np.asarray(obs, dtype=np.float32)
        w = np.ones((state.shape[1], 2), dtype=np.float32) / state.shape[1]
        return 1.0 / (1.0 + np.exp(-(state @ w)))                       # D·2 multiply-adds, in numpy


class DeclaringAgent(NumpyAgent):
    """The same agent, declaring its cost: D·2 multiply-adds per decision per image, here rounded to 64."""

    decision_madds = 64.0


class TorchAgent(NumpyAgent):
    """The same decision in torch: counted."""

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        state = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        w = torch.ones(state.shape[1], 2) / state.shape[1]
        return torch.sigmoid(state @ w).numpy()


@pytest.fixture
def user_agents():
    names = {"numpy-agent": NumpyAgent, "declaring-agent": DeclaringAgent, "torch-agent": TorchAgent}
    for name, cls in names.items():
        agents.register(name, cls)
    yield list(names)
    for name in names:
        agents.unregister(name)


def test_numpy_agent_without_a_declared_cost_is_noted(user_agents, tmp_path):
    out = tmp_path / "bench"
    res = bench(out, ["center", *user_agents])
    numpy_entry, declaring, counted = (res["agents"][n] for n in user_agents)
    # the numpy agent: 0 multiply-adds of its own, and the results say so
    assert numpy_entry["agent_madds_per_step"][1:] == [0.0] * (res["T"] - 1)
    assert numpy_entry["source"].startswith("user code ") and "decision_madds" in numpy_entry["decision_madds_note"]
    # this package's baseline costs 0 too, but that is known: no note; a declared or counted cost: no note
    assert res["agents"]["center"]["decision_madds_note"] is None
    assert declaring["decision_madds_note"] is None and counted["decision_madds_note"] is None
    assert counted["agent_madds_per_step"][1] > 0
    # the declared cost is charged instead of the (0) count: per step, in the total and in per_image.npz
    assert declaring["agent_madds_per_step"] == [0.0] + [64.0] * (res["T"] - 1)
    assert declaring["madds"] == pytest.approx(numpy_entry["madds"] + 64.0 * (res["T"] - 1))
    with np.load(out / "per_image.npz") as rec:
        assert rec["declaring-agent/decision_madds"].tolist() == [64.0]
        assert rec["numpy-agent/decision_madds"].tolist() == [0.0]
    on_disk = json.loads((out / "results.json").read_text())["agents"]
    assert on_disk["numpy-agent"]["decision_madds_note"] == numpy_entry["decision_madds_note"]
    # results.md: a marker on the numpy agent's multiply-adds cell only, and a note naming it and the way out
    table = (out / "results.md").read_text()
    main = table.split("###")[0]
    rows = {line.split("|")[1].strip(): line.split("|")[1:-1] for line in main.splitlines() if line.startswith("| ")}
    madds_column = rows["agent"].index(" multiply-adds spent / image (agent's own) ")
    assert rows["numpy-agent"][madds_column].strip().endswith("(0)†")
    for name in ("center", "declaring-agent", "torch-agent"):
        assert "†" not in "|".join(rows[name])
    note = next(line for line in table.splitlines() if line.startswith("† "))
    assert "numpy-agent" in note and "decision_madds" in note and "declaring-agent" not in note
    assert "Declaring an agent's own cost" in note


def test_declared_cost_is_checked_and_may_be_set_per_instance():
    agent = NumpyAgent()
    assert declared_madds(agent) is None
    agent.decision_madds = np.float32(10)  # an instance attribute wins over the class's None
    assert declared_madds(agent) == 10.0
    for bad in (-1.0, float("nan"), float("inf"), True, "12"):
        agent.decision_madds = bad
        with pytest.raises(ValueError, match="decision_madds must be a finite number >= 0"):
            MeteredAgent(agent, count_madds=True)


def test_metered_agent_flags_only_an_undeclared_zero_of_user_code():
    obs = np.zeros((4, 8), dtype=np.float32)
    for agent, flagged in ((NumpyAgent(), True), (DeclaringAgent(), False), (TorchAgent(), False),
                           (agents.make("center"), False)):
        counted = MeteredAgent(agent, count_madds=True)
        counted.reset(4)
        counted.act(obs)
        assert counted.unaccounted is flagged, type(agent).__name__
    timed = MeteredAgent(NumpyAgent())  # not counting: nothing to say
    timed.reset(4)
    timed.act(obs)
    assert not timed.unaccounted


# --- (b) paper-ppo refuses the untrained policy of a stage-1 checkpoint ----------------------------------------

@pytest.fixture(scope="module")
def staged_checkpoints(tmp_path_factory):
    """The tiny model saved as stage 1 wrote it (``stage`` 1, its policy as initialised), as stage 2 did
    (``stage`` 2) and as a released checkpoint (no ``stage`` entry)."""
    from feature_nets.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for stage in (1, 2, None):
        paths[stage] = root / f"tiny_stage{stage}.pth.tar"
        save_checkpoint(tiny_model(), paths[stage], **({"stage": stage} if stage is not None else {}))
    return paths


def test_paper_ppo_refuses_a_stage1_checkpoint_with_the_command_that_trains_it(staged_checkpoints):
    from agents.paper_ppo.agent import PaperPPOAgent
    from gfnet_cli.commands import train_policy

    stage1 = staged_checkpoints[1]
    with pytest.raises(ValueError) as refused:
        run_benchmark(ENV_ID, ["paper-ppo", "center"], None, episodes=6, seeds=1,
                      env_kwargs={"checkpoint": str(stage1), "dataset": tiny_dataset(n=18)}, batch_size=3,
                      device="cpu", verbose=False)
    message = str(refused.value)
    assert str(stage1) in message and "stage 1" in message and "never trained" in message
    # the command it gives is a valid `gfnet train-policy` command line for this checkpoint and env
    command = message.split("`gfnet train-policy ")[1].split("`")[0]
    parser = __import__("argparse").ArgumentParser()
    train_policy.add_arguments(parser)
    args = parser.parse_args(command.replace(" N ", " 1000 ").split())
    assert args.checkpoint == str(stage1) and args.env == ENV_ID and args.steps == 1000
    assert "tiny_stage1_stage2.pth.tar" in message  # where train-policy writes the trained checkpoint
    with pytest.raises(ValueError, match="never trained"):
        PaperPPOAgent.from_checkpoint(stage1, device="cpu")


@pytest.mark.parametrize("stage", [2, None], ids=["stage2", "released"])
def test_paper_ppo_keeps_a_trained_checkpoint_policy(staged_checkpoints, stage):
    from agents.paper_ppo.agent import PaperPPOAgent

    path = staged_checkpoints[stage]
    res = run_benchmark(ENV_ID, ["paper-ppo"], None, episodes=6, seeds=1,
                        env_kwargs={"checkpoint": str(path), "dataset": tiny_dataset(n=18)}, batch_size=3,
                        device="cpu", verbose=False)
    assert res["agents"]["paper-ppo"]["source"] == "the policy stored in the env's checkpoint"
    assert PaperPPOAgent.from_checkpoint(path, device="cpu").policy is not None


def test_the_shipped_checkpoint_policy_is_still_evaluated():
    from agents.base import RunContext
    from agents.paper_ppo.agent import PaperPPOAgent
    from gfnet_env.tasks import DEFAULT_FMNIST_CHECKPOINT, load_model

    model = load_model(DEFAULT_FMNIST_CHECKPOINT)
    assert model.checkpoint_stage == 2 and model.checkpoint_path == str(DEFAULT_FMNIST_CHECKPOINT)
    runs, source = PaperPPOAgent.runs(RunContext(name="paper-ppo", env_id="GFNet-ClutteredFashionMNIST-v0",
                                                 model=model, device="cpu"))
    assert len(runs) == 1 and source == "the policy stored in the env's checkpoint"
    assert runs[0].build().policy is not model.policy  # a copy of the stored, trained policy


# --- (c) gfnet compare recomputes every comparison against one reference ---------------------------------------

@pytest.fixture(scope="module")
def two_references(tmp_path_factory):
    """Two benchmarks of one protocol compared with different references: paper-ppo and random."""
    root = tmp_path_factory.mktemp("refs")
    a, b = root / "vs_ppo", root / "vs_random"
    bench(a, ["paper-ppo", "center"])                     # reference: paper-ppo (auto)
    bench(b, ["random", "saliency"], reference="random")
    return a, b


COMPARISONS = ("vs_reference", "equal_compute", "auc", "learned_stop", "oracle_gap_closed")


def test_compare_of_folders_with_different_references_recomputes_against_the_first(two_references, tmp_path):
    from agents.benchmark.merge import merge_results

    a, b = two_references
    assert json.loads((b / "results.json").read_text())["agents"]["saliency"]["vs_reference"]["reference"] == "random"
    merged = merge_results([a, b])
    for name in ("center", "random", "saliency"):
        assert merged["agents"][name]["vs_reference"]["reference"] == "paper-ppo", name
        assert merged["agents"][name]["equal_compute"]["reference"] == "paper-ppo", name
    assert merged["reference"] == "paper-ppo" and merged["folder_references"] == ["paper-ppo", "random"]
    assert "vs_reference" not in merged["agents"]["paper-ppo"]
    # the same numbers as one benchmark of all four agents against paper-ppo
    direct = bench(None, ["paper-ppo", "center", "random", "saliency"])
    for name, entry in direct["agents"].items():
        for key in COMPARISONS:
            assert merged["agents"][name].get(key) == entry.get(key), (name, key)
    # the other order: the first folder's reference is random
    flipped = merge_results([b, a])
    assert flipped["reference"] == "random"
    assert flipped["agents"]["paper-ppo"]["vs_reference"]["reference"] == "random"
    assert "vs_reference" not in flipped["agents"]["random"]


def test_compare_cli_names_one_reference_and_refuses_an_unknown_one(two_references, tmp_path, capsys):
    from gfnet_cli import main as cli

    a, b = two_references
    out = tmp_path / "merged"
    assert cli.main(["compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Δ vs paper-ppo" in printed and "Δ vs random" not in printed
    assert "different references" in printed and "recomputed against paper-ppo" in printed
    saved = json.loads((out / "results.json").read_text())
    assert {e["vs_reference"]["reference"] for n, e in saved["agents"].items() if n != "paper-ppo"} == {"paper-ppo"}
    # --reference: any merged agent
    assert cli.main(["compare", str(a), str(b), "--reference", "saliency"]) == 0
    printed = capsys.readouterr().out
    assert "Δ vs saliency" in printed and "recomputed against saliency" in printed
    # --reference none: no comparison at all
    assert cli.main(["compare", str(a), str(b), "--reference", "none"]) == 0
    assert "Δ vs" not in capsys.readouterr().out
    # a reference that is not among the merged agents: a one-line error naming it and the merged agents
    assert cli.main(["compare", str(a), str(b), "--reference", "oracle"]) == 2
    err = capsys.readouterr().err
    assert "'oracle' is not among the merged agents" in err and "saliency" in err
