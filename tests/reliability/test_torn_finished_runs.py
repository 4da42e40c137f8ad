"""Issue 23, case 6: a finished run is never replaced or marked unfinished by accident.

``gfnet train-agent ... --out DONE`` without ``--resume`` replaced a finished agent and exited 0 (so did
``train-features`` over ``best.pth.tar``), and a rerun that failed early (bad ``--hparams``) left ``UNFINISHED``
in the finished folder, after which ``show`` and ``benchmark`` refused the good agent. Now a folder that holds a
run is continued (``--resume``) or replaced (``--overwrite``), never started over, and the marker is written by the
trainer's ``on_start`` hook, once its inputs are checked, and never into a finished folder that is continued.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agents.trained import UNFINISHED, load_agent
from feature_nets.checkpoint import save_checkpoint
from helpers import copy_shipped, needs_fashion_mnist, run_cli, tiny_model, write_image_folder

pytestmark = pytest.mark.reliability

FMNIST_ENV = "GFNet-ClutteredFashionMNIST-v0"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(code: int, out: str, command: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"gfnet {command}: "), out
    return lines[0]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth.tar"
    save_checkpoint(tiny_model(num_classes=10), path)
    return path


def ppo_argv(ckpt: Path, out: Path, *extra: str, steps: int = 36) -> list[str]:
    return ["train-agent", "--agent", "paper-ppo", "--env", FMNIST_ENV, "--steps", str(steps), "--batch-size", "6",
            "--out", str(out), "--no-progress", "--env-kwarg", f"checkpoint={ckpt}", "--env-kwarg", "num_samples=40",
            "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def finished_ppo(tiny_ckpt, tmp_path_factory):
    """A folder `gfnet train-agent --agent paper-ppo` finished (trained once, copied by each test)."""
    from gfnet_cli import main as cli

    out = tmp_path_factory.mktemp("done") / "ppo"
    assert cli.main(ppo_argv(tiny_ckpt, out)) == 0
    return out


def sb3_done(folder: Path) -> Path:
    """A finished sb3-ppo folder: the shipped agent and its agent.json."""
    copy_shipped(folder / "sb3_ppo.zip")
    (folder / "agent.json").write_text(json.dumps({"agent": "sb3-ppo", "file": "sb3_ppo.zip"}))
    return folder


# --- train-agent --------------------------------------------------------------------------------------------

@needs_fashion_mnist
def test_rerun_without_resume_does_not_replace_a_finished_agent(finished_ppo, tiny_ckpt, tmp_path, capsys):
    done = tmp_path / "ppo"
    shutil.copytree(finished_ppo, done)
    before = snapshot(done)
    line = one_line(*run_cli(ppo_argv(tiny_ckpt, done, "--seed", "7"), capsys), "train-agent")
    assert "holds a finished run" in line and "--resume" in line and "--overwrite" in line, line
    assert snapshot(done) == before  # before the fix: exit 0, the agent trained again with seed 7
    assert not (done / ".lock").exists()


@needs_fashion_mnist
@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_bad_hparams_leave_a_finished_folder_as_it_was(tmp_path, capsys, flag):
    """The reported case: a rerun that fails on its input left UNFINISHED, and the agent could not be loaded."""
    done = sb3_done(tmp_path / "done")
    before = snapshot(done)
    code, out = run_cli(["train-agent", "--agent", "sb3-ppo", "--env", FMNIST_ENV, "--steps", "64", flag,
                         "--hparams", "no_such_key=1", "--out", str(done), "--device", "cpu", "--no-progress"], capsys)
    assert code == 2 and "no_such_key" in out, out
    assert not (done / UNFINISHED).exists()
    assert snapshot(done) == before
    assert load_agent(None, done, device="cpu").name == "sb3-ppo"  # show and benchmark still read it


@needs_fashion_mnist
def test_bad_hparams_in_a_new_folder_leave_nothing(tmp_path, capsys):
    out = tmp_path / "new"
    code, text = run_cli(["train-agent", "--agent", "sb3-ppo", "--env", FMNIST_ENV, "--steps", "64", "--hparams",
                          "no_such_key=1", "--out", str(out), "--device", "cpu", "--no-progress"], capsys)
    assert code == 2, text
    assert not out.exists()


@needs_fashion_mnist
def test_unfinished_run_is_not_started_over_without_resume(finished_ppo, tiny_ckpt, tmp_path, capsys):
    run = tmp_path / "ppo"
    shutil.copytree(finished_ppo, run)
    (run / UNFINISHED).write_text("This training run has not finished.\n")
    before = snapshot(run)
    line = one_line(*run_cli(ppo_argv(tiny_ckpt, run), capsys), "train-agent")
    assert "holds an unfinished run" in line
    assert snapshot(run) == before


@needs_fashion_mnist
def test_overwrite_replaces_the_run_and_nothing_of_it_is_left(finished_ppo, tiny_ckpt, tmp_path, capsys):
    done = tmp_path / "ppo"
    shutil.copytree(finished_ppo, done)
    (done / "checkpoints").mkdir()
    (done / "checkpoints" / "old_run_999_steps.zip").write_bytes(b"a checkpoint of the replaced run")
    shutil.copyfile(tiny_ckpt, done / "input.pth.tar")  # an input of the new run inside the folder is kept
    old_agent = (done / "paper_ppo.pt").read_bytes()
    code, out = run_cli(ppo_argv(done / "input.pth.tar", done, "--seed", "3", "--overwrite"), capsys)
    assert code == 0, out
    assert not (done / "checkpoints").exists() and (done / "input.pth.tar").exists()
    assert json.loads((done / "agent.json").read_text())["seed"] == 3
    assert (done / "paper_ppo.pt").read_bytes() != old_agent
    assert not (done / UNFINISHED).exists() and not (done / ".lock").exists()


@needs_fashion_mnist
def test_resume_of_a_finished_run_never_marks_it_unfinished(finished_ppo, tiny_ckpt, tmp_path, capsys):
    """--resume continues a finished run (here to more steps); while it runs, the finished agent stays usable."""
    done = tmp_path / "ppo"
    shutil.copytree(finished_ppo, done)
    seen = []
    import agents.paper_ppo.train as train

    original = train._train_batches

    def spy(*args, **kwargs):
        seen.append((done / UNFINISHED).exists())
        return original(*args, **kwargs)

    train._train_batches = spy
    try:
        code, out = run_cli(ppo_argv(tiny_ckpt, done, "--resume", steps=54), capsys)
    finally:
        train._train_batches = original
    assert code == 0, out
    assert seen == [False]
    assert json.loads((done / "agent.json").read_text())["steps"] == 54 and not (done / UNFINISHED).exists()


def test_on_start_runs_after_the_input_checks_and_before_the_first_write(tmp_path):
    """The hook behind the guarantee: the SB3 and paper-ppo trainers call it once the inputs are checked."""
    from agents.sb3.agent import train_sb3
    from helpers import ENV_ID, env_kwargs, train_tiny_paper_ppo

    calls = []
    with pytest.raises((TypeError, ValueError), match="no_such_key"):
        train_sb3("ppo", ENV_ID, 32, tmp_path / "sb3", device="cpu", hparams={"no_such_key": 1},
                  on_start=lambda: calls.append("sb3"), **env_kwargs())
    assert calls == [] and not (tmp_path / "sb3").exists()

    def first(folder: Path):
        def hook():
            calls.append(sorted(p.name for p in folder.iterdir()) if folder.exists() else [])
        return hook

    train_tiny_paper_ppo(tmp_path / "ppo", steps=18, on_start=first(tmp_path / "ppo"))
    assert calls == [[]]  # called once, with nothing written yet


# --- train-features -----------------------------------------------------------------------------------------

def features_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train-features", "--data-root", str(data), "--model", "small_cnn", "--image-size", "48", "--patch-size",
            "16", "--T", "2", "--epochs", "1", "--batch-size", "2", "--out", str(out), "--device", "cpu",
            "--workers", "0", "--no-progress", *extra]


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    data = write_image_folder(tmp_path_factory.mktemp("data"), split="train", n_per_class=2, size=48)
    return write_image_folder(data, split="val", n_per_class=2, size=48)


def test_train_features_does_not_replace_best_without_resume(image_data, tmp_path, capsys):
    out = tmp_path / "s1"
    out.mkdir()
    (out / "best.pth.tar").write_bytes(b"the best checkpoint of a finished run")
    (out / "history.json").write_text("[]")
    before = snapshot(out)
    line = one_line(*run_cli(features_argv(image_data, out), capsys), "train-features")
    assert "holds a training run" in line and "best.pth.tar" in line and "--overwrite" in line
    assert snapshot(out) == before  # before the fix: trained and replaced best.pth.tar


def test_train_features_overwrite_replaces_the_run(image_data, tmp_path, capsys):
    out = tmp_path / "s1"
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events.old").write_text("old")
    (out / "epoch_009.pth.tar").write_bytes(b"old")
    (out / "best.pth.tar").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    code, text = run_cli(features_argv(image_data, out, "--overwrite"), capsys)
    assert code == 0, text
    assert not (out / "epoch_009.pth.tar").exists() and not (out / "tensorboard" / "events.old").exists()
    assert (out / "best.pth.tar").read_bytes() != b"old" and (out / "notes.txt").read_text() == "mine"
    assert not (out / ".lock").exists()


def test_train_features_overwrite_with_bad_input_keeps_the_run(tmp_path, capsys):
    out = tmp_path / "s1"
    out.mkdir()
    (out / "best.pth.tar").write_bytes(b"old")
    code, text = run_cli(features_argv(tmp_path / "no_such_data", out, "--overwrite"), capsys)
    assert code == 2, text
    assert (out / "best.pth.tar").read_bytes() == b"old"


# --- train-policy -------------------------------------------------------------------------------------------

@needs_fashion_mnist
def test_train_policy_does_not_replace_a_finished_run(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "stage2"
    out.mkdir()
    (out / "tiny_stage2.pth.tar").write_bytes(b"a finished stage 2")
    code, text = run_cli(["train-policy", "--checkpoint", str(tiny_ckpt), "--env", FMNIST_ENV, "--steps", "36",
                          "--batch-size", "6", "--out", str(out), "--no-progress", "--env-kwarg", "num_samples=40",
                          "--device", "cpu"], capsys)
    line = one_line(code, text, "train-policy")
    assert "holds a run" in line and "tiny_stage2.pth.tar" in line
    assert (out / "tiny_stage2.pth.tar").read_bytes() == b"a finished stage 2"


# --- train-default-task -------------------------------------------------------------------------------------

@needs_fashion_mnist
def test_train_default_task_does_not_start_a_run_over(tmp_path, capsys):
    out = tmp_path / "pipeline"
    out.mkdir()
    (out / "pipeline.json").write_text('{"stages": {"stage1": {}}}')
    (out / "pretrained_encoder.pt").write_bytes(b"the first stage of a run")
    before = snapshot(out)
    code, text = run_cli(["train-default-task", "--out", str(out), "--stop-after", "pretrain", "--pretrain-epochs",
                          "0", "--no-progress"], capsys)
    line = one_line(code, text, "train-default-task")
    assert "holds a run" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(out) == before  # before the fix: the pipeline started over and replaced its files
    code, text = run_cli(["train-default-task", "--out", str(out), "--stop-after", "pretrain", "--pretrain-epochs",
                          "0", "--no-progress", "--overwrite"], capsys)
    assert code == 0, text
    assert (out / "pretrained_encoder.pt").read_bytes() != b"the first stage of a run"
    assert "--overwrite" in json.loads((out / "pipeline.json").read_text())["commands"][0]


def test_train_default_task_force_settings_reaches_every_stage(tmp_path, capsys, monkeypatch):
    # A refused resume names --force-settings; the pipeline command must have it and hand it to each stage.
    code, text = run_cli(["train-default-task", "--out", str(tmp_path / "p"), "--force-settings"], capsys)
    assert "--force-settings only applies to a resumed run" in one_line(code, text, "train-default-task")

    import gfnet_cli.default_task as pipeline

    seen = {}

    def stop_at_stage1(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stage 1 reached")

    import feature_nets.training

    monkeypatch.setattr(feature_nets.training, "train_stage1", stop_at_stage1)  # imported by the pipeline when run
    cfg = pipeline.PipelineConfig(out=str(tmp_path / "p"), stop_after="stage1", pretrain_epochs=0, resume=True,
                                  force_settings=True, train_samples=20, eval_samples=20, progress=False)
    with pytest.raises(RuntimeError, match="stage 1 reached"):
        pipeline.train_default_task(cfg)
    assert seen.get("force_settings") is True
