"""Issue 11, items 1 and 12 at the command line: bad arguments print one line ``gfnet <cmd>: <message>`` on
stderr and exit with status 2, without a traceback (``GFNET_DEBUG=1`` shows it); nothing runs code from an
untrusted checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gfnet_cli import main as cli
from helpers import write_image_folder

pytestmark = pytest.mark.reliability

ENV = "GFNet-ImageNet-v0"


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


def one_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gfnet {command}: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def images(tmp_path):
    return write_image_folder(tmp_path / "images")


@pytest.mark.parametrize("argv, command, message", [
    (["train-agent", "--agent", "paper-ppo", "--env", ENV, "--steps", "0", "--out", "x"], "train-agent",
     "--steps must be >= 1, got 0"),
    (["train-agent", "--agent", "sb3-ppo", "--env", ENV, "--steps", "10", "--n-envs", "0", "--out", "x"],
     "train-agent", "--n-envs must be >= 1"),
    (["train-agent", "--agent", "paper-ppo", "--env", ENV, "--steps", "10", "--lr", "-1", "--out", "x"],
     "train-agent", "--lr must be > 0"),
    (["benchmark", "--env", ENV, "--agents", "random", "--out", "x", "--fit-episodes", "-3"], "benchmark",
     "--fit-episodes must be >= 1, got -3"),
    (["benchmark", "--env", ENV, "--agents", "random", "--out", "x", "--episodes", "0"], "benchmark",
     "--episodes must be >= 1"),
    (["show", "--env", ENV, "--agent", "random", "--out", "x.png", "--n", "0"], "show", "--n must be >= 1"),
    (["show", "--env", ENV, "--agent", "random", "--out", "x.png", "--start", "-2"], "show", "--start must be >= 0"),
    (["show", "--env", ENV, "--agent", "random", "--out", "x.txt"], "show", "--out must end in .png or .gif"),
    (["train-policy", "--checkpoint", "c.pth.tar", "--env", ENV, "--steps", "0", "--out", "x"], "train-policy",
     "--steps must be >= 1"),
])
def test_bad_numbers_are_one_line_before_any_work(argv, command, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run(argv, capsys)
    assert code == 2 and message in one_line(err, command)
    assert not (tmp_path / "x").exists()


def test_unknown_env_kwarg_is_one_line(tiny_ckpt, images, tmp_path, capsys):
    code, err = run(["show", "--env", ENV, "--agent", "random", "--out", tmp_path / "a.png", "--device", "cpu",
                     "--env-kwarg", f"checkpoint={tiny_ckpt}", "--env-kwarg", f"data_root={images}",
                     "--env-kwarg", "foo=1"], capsys)
    assert code == 2 and "unknown env arguments ['foo']" in one_line(err, "show")


def test_checkpoint_and_data_root_errors_are_one_line(tiny_ckpt, tmp_path, capsys):
    code, err = run(["show", "--env", ENV, "--agent", "random", "--out", tmp_path / "a.png", "--device", "cpu",
                     "--env-kwarg", "checkpoint=123", "--env-kwarg", f"data_root={tmp_path}"], capsys)
    assert code == 2 and "checkpoint must be a path" in one_line(err, "show")
    a_file = tmp_path / "imagenet.tar"
    a_file.write_bytes(b"x")
    code, err = run(["show", "--env", ENV, "--agent", "random", "--out", tmp_path / "a.png", "--device", "cpu",
                     "--env-kwarg", f"checkpoint={tiny_ckpt}", "--env-kwarg", f"data_root={a_file}"], capsys)
    assert code == 2 and "is a file, not a folder" in one_line(err, "show")
    code, err = run(["train-policy", "--checkpoint", tmp_path / "missing.pth.tar", "--env", ENV, "--steps", "8",
                     "--out", tmp_path / "o"], capsys)
    assert code == 2 and "checkpoint file not found" in one_line(err, "train-policy")


@pytest.mark.parametrize("value", ["no", "off", "0", "1", "yes"])
def test_trusted_pickle_strings_never_enable_unpickling(evil_ckpt, images, tmp_path, capsys, value):
    path, trace = evil_ckpt
    code, err = run(["show", "--env", ENV, "--agent", "random", "--out", tmp_path / "a.png", "--device", "cpu",
                     "--env-kwarg", f"checkpoint={path}", "--env-kwarg", f"data_root={images}",
                     "--env-kwarg", f"trusted_pickle={value}"], capsys)
    assert code == 2 and "trusted_pickle must be True or False" in one_line(err, "show")
    assert not trace.exists()


def test_untrusted_checkpoint_refusal_is_one_line_with_the_opt_in(evil_ckpt, tmp_path, capsys):
    path, trace = evil_ckpt
    code, err = run(["train-policy", "--checkpoint", path, "--env", ENV, "--steps", "8", "--out", tmp_path / "o"],
                    capsys)
    line = one_line(err, "train-policy")
    assert code == 2 and "would run code" in line and "--trusted-pickle" in line and "weights_only" not in line
    assert not trace.exists()


def test_gfnet_debug_shows_the_traceback(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GFNET_DEBUG", "1")
    with pytest.raises(ValueError, match="--steps must be >= 1"):
        cli.main(["train-agent", "--agent", "paper-ppo", "--env", ENV, "--steps", "0", "--out", str(tmp_path)])


def test_the_console_script_prints_one_line_and_exits_2(tmp_path):
    script = Path(sys.executable).parent / "gfnet"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "gfnet_cli.main"]
    env = {k: v for k, v in os.environ.items() if k != "GFNET_DEBUG"}
    out = subprocess.run(cmd + ["train-agent", "--agent", "paper-ppo", "--env", ENV, "--steps", "0", "--out",
                                str(tmp_path / "o")], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2 and out.stderr.strip() == "gfnet train-agent: --steps must be >= 1, got 0"
