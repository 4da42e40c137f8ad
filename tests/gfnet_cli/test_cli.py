"""The ``gfnet`` console script: help texts, argument parsing, and the sub-commands end to end on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gfnet_cli import main as cli
from gfnet_cli.commands._common import parse_agent_dirs, parse_env_kwargs, parse_value
from feature_nets.checkpoint import load_checkpoint, save_checkpoint
from helpers import fashion_mnist_available, tiny_model

FMNIST_ENV = "GFNet-ClutteredFashionMNIST-v0"
SUBCOMMANDS = [c for c, _, _ in cli.COMMANDS]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:  # --help and argparse errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err  # errors are one line on stderr


def test_gfnet_help_from_the_console_script():
    script = Path(sys.executable).parent / "gfnet"
    cmd = [str(script), "--help"] if script.exists() else [sys.executable, "-m", "gfnet_cli.main", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Example" in out.stdout
    for command in SUBCOMMANDS:
        assert command in out.stdout


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_with_an_example(command, capsys):
    code, out = run_cli([command, "--help"], capsys)
    assert code == 0
    assert "example" in out.lower()  # the modules of agents/commands all end their help with an example


def test_no_command_prints_help(capsys):
    code, out = run_cli([], capsys)
    assert code == 1 and "COMMAND" in out


def test_kwarg_parsing():
    assert parse_env_kwargs(["split=train", "grid_size=5", "step_cost=1e-9", "early_exit=none", "x=true", "p=a=b"]) == {
        "split": "train", "grid_size": 5, "step_cost": 1e-9, "early_exit": None, "x": True, "p": "a=b"}
    assert parse_value("[1, 2]") == [1, 2] and parse_value("/data/imagenet") == "/data/imagenet"
    assert parse_agent_dirs(["sb3-ppo=a", "sb3-ppo=b", "paper-ppo=c"]) == {"sb3-ppo": ["a", "b"], "paper-ppo": ["c"]}
    with pytest.raises(SystemExit):
        parse_env_kwargs(["novalue"])


def test_train_agent_rejects_a_baseline(capsys):
    code, out = run_cli(["train-agent", "--agent", "center", "--env", FMNIST_ENV, "--steps", "10", "--out", "x"],
                        capsys)
    assert code == 2 and "does not learn" in out and "paper-ppo" in out


# --- end to end on the cluttered task with a tiny checkpoint ------------------------------------------------

@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST files not installed (apt-get install dataset-fashion-mnist)")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth.tar"
    save_checkpoint(tiny_model(num_classes=10), path)
    return path


def _kw(ckpt) -> list[str]:
    return ["--env-kwarg", f"checkpoint={ckpt}", "--env-kwarg", "num_samples=40", "--device", "cpu"]


def test_train_agent_then_benchmark_then_show(tiny_ckpt, tmp_path, capsys):
    runs = tmp_path / "ppo"
    code, out = run_cli(["train-agent", "--agent", "paper-ppo", "--env", FMNIST_ENV, "--steps", "36", "--seeds", "2",
                         "--batch-size", "6", "--out", str(runs), "--no-progress"] + _kw(tiny_ckpt), capsys)
    assert code == 0, out
    for seed in (0, 1):  # --seeds 2: independent copies in seed sub-folders
        assert (runs / f"seed_{seed}" / "agent.json").exists()
    assert json.loads((runs / "seed_1" / "agent.json").read_text())["seed"] == 1
    meta = json.loads((runs / "seed_0" / "agent.json").read_text())
    assert meta["env_kwargs"]["split"] == "train"  # training never touches the evaluation split by default

    code, out = run_cli(["benchmark", "--env", FMNIST_ENV, "--agents", "random,center,oracle,paper-ppo",
                         "--agent-dir", f"paper-ppo={runs}", "--episodes", "6", "--seeds", "2", "--batch-size", "4",
                         "--out", str(tmp_path / "bench")] + _kw(tiny_ckpt), capsys)
    assert code == 0, out
    assert "| paper-ppo | 2 |" in out and "Upper bound" in out
    res = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert res["fit"]["images"].startswith("split 'val'")
    assert res["agents"]["paper-ppo"]["n_runs"] == 2 and res["agents"]["random"]["n_runs"] == 2

    code, out = run_cli(["benchmark", "--env", FMNIST_ENV, "--agents", "center,sb3-td3", "--episodes", "4",
                         "--out", str(tmp_path / "b2")] + _kw(tiny_ckpt), capsys)
    assert code == 2 and "gfnet train-agent --agent sb3-td3" in out

    for name in ("looks.png", "looks.gif"):
        code, out = run_cli(["show", "--env", FMNIST_ENV, "--agent", "center,oracle,paper-ppo", "--agent-dir",
                             f"paper-ppo={runs / 'seed_0'}", "--n", "3", "--out", str(tmp_path / name)]
                            + _kw(tiny_ckpt), capsys)
        assert code == 0, out
        assert (tmp_path / name).stat().st_size > 0
    from PIL import Image

    gif = Image.open(tmp_path / "looks.gif")
    assert gif.n_frames == tiny_model().T  # glance, then one more patch per frame


def test_train_agent_sb3(tiny_ckpt, tmp_path, capsys):
    out_dir = tmp_path / "a2c"
    code, out = run_cli(["train-agent", "--agent", "sb3-a2c", "--env", FMNIST_ENV, "--steps", "40", "--n-envs", "4",
                         "--eval-episodes", "4", "--out", str(out_dir), "--no-progress"] + _kw(tiny_ckpt), capsys)
    assert code == 0, out
    assert (out_dir / "sb3_a2c.zip").exists() and json.loads((out_dir / "agent.json").read_text())["agent"] == "sb3-a2c"
    code, out = run_cli(["train-agent", "--agent", "sb3-a2c", "--env", FMNIST_ENV, "--steps", "80", "--n-envs", "4",
                         "--eval-episodes", "4", "--out", str(out_dir), "--resume", "--no-progress"] + _kw(tiny_ckpt),
                        capsys)
    assert code == 0, out
    assert json.loads((out_dir / "sb3_a2c.json").read_text())["num_timesteps"] >= 80


def test_train_policy_writes_the_policy_into_a_checkpoint_copy(tiny_ckpt, tmp_path, capsys):
    out_dir = tmp_path / "stage2"
    code, out = run_cli(["train-policy", "--checkpoint", str(tiny_ckpt), "--env", FMNIST_ENV, "--steps", "36",
                         "--batch-size", "6", "--out", str(out_dir), "--no-progress", "--env-kwarg", "num_samples=40",
                         "--device", "cpu"], capsys)
    assert code == 0, out
    written = out_dir / "tiny_stage2.pth.tar"
    assert written.exists()
    new = load_checkpoint(written).model
    old = load_checkpoint(tiny_ckpt).model
    trained = torch.load(out_dir / "paper_ppo.pt", weights_only=True)["policy_state_dict"]
    for k, v in new.policy.state_dict().items():
        assert torch.equal(v, trained[k])
    assert any(not torch.equal(v, old.policy.state_dict()[k]) for k, v in new.policy.state_dict().items())
    for k, v in old.classifier.state_dict().items():
        assert torch.equal(new.classifier.state_dict()[k], v)
