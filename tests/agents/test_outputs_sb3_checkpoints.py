"""Item 6: SB3 checkpoints saved atomically, resume from the newest valid one, honest step counts."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from stable_baselines3.common.callbacks import BaseCallback

from agents.sb3.files import checkpoint_problem, latest_checkpoint, save_model
from helpers import copy_shipped, train_tiny_ppo

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]


class InterruptAt(BaseCallback):
    """Sends SIGINT to this process once ``num_timesteps`` reaches ``at`` (``where``: "step" or "rollout_end")."""

    def __init__(self, at: int, where: str = "step") -> None:
        super().__init__()
        self.at, self.where = at, where

    def _fire(self) -> None:
        if self.model.num_timesteps >= self.at:
            self.at = float("inf")
            signal.raise_signal(signal.SIGINT)

    def _on_step(self) -> bool:
        if self.where == "step":
            self._fire()
        return True

    def _on_rollout_end(self) -> None:
        if self.where == "rollout_end":
            self._fire()


def test_save_model_is_atomic_on_a_full_disk(tmp_path):
    path = copy_shipped(tmp_path / "ppo_32_steps.zip")
    before = path.read_bytes()

    class FullDisk:
        def save(self, f):
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="no space left on device"):
        save_model(FullDisk(), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_newest_valid_checkpoint_is_chosen(tmp_path):
    ckpt = tmp_path / "checkpoints"
    copy_shipped(ckpt / "ppo_32_steps.zip")
    good = copy_shipped(ckpt / "ppo_64_steps.zip")
    (ckpt / "ppo_96_steps.zip").write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # truncated
    (ckpt / "ppo_128_steps.zip").write_bytes(b"")  # 0 bytes
    assert checkpoint_problem(ckpt / "ppo_128_steps.zip") == "0 bytes"
    assert checkpoint_problem(ckpt / "ppo_96_steps.zip") is not None
    with pytest.warns(UserWarning, match="skipping checkpoint") as record:
        assert latest_checkpoint(ckpt, "ppo") == (good, 64)
    assert len(record) == 2


def test_off_policy_resume_prefers_a_checkpoint_with_its_replay_buffer(tmp_path):
    copy_shipped(tmp_path / "sac_32_steps.zip")
    (tmp_path / "sac_replay_buffer_32_steps.pkl").write_bytes(b"buffer")
    copy_shipped(tmp_path / "sac_64_steps.zip")  # killed before its buffer was written
    with pytest.warns(UserWarning, match="newest checkpoint with its replay buffer"):
        assert latest_checkpoint(tmp_path, "sac", replay_buffer=True)[1] == 32
    assert latest_checkpoint(tmp_path, "sac")[1] == 64


def test_invalid_newest_checkpoint_is_skipped_on_resume(tmp_path):
    out = tmp_path / "ppo"
    train_tiny_ppo(out, 64)
    ckpt = out / "checkpoints"
    assert (ckpt / "ppo_64_steps.zip").exists()
    (ckpt / "ppo_96_steps.zip").write_bytes(b"")  # what an in-place save left after kill -9 or a full disk
    with pytest.warns(UserWarning, match="skipping checkpoint .*ppo_96_steps.zip: 0 bytes"):
        agent = train_tiny_ppo(out, 128, resume=True)
    assert agent.model.num_timesteps == 128


def test_kill_9_during_a_checkpoint_save_then_resume_completes(tmp_path):
    """A real SIGKILL in the middle of the second checkpoint save (temp file written, not yet renamed)."""
    out = tmp_path / "ppo"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
        import agents.sb3.files as files
        from helpers import train_tiny_ppo
        real = files.atomic_write
        saves = []
        def dying_write(path, write, mode="wb"):
            if path.name.startswith("ppo_") and path.name.endswith("_steps.zip"):
                saves.append(path)
                if len(saves) == 2:
                    def half(f):
                        write(f)
                        f.flush()
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(path, half, mode)
            return real(path, write, mode)
        files.atomic_write = dying_write
        train_tiny_ppo({str(out)!r}, 96)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpt = out / "checkpoints"
    assert (ckpt / "ppo_32_steps.zip").exists() and list(ckpt.glob("*.tmp"))  # killed mid-save
    agent = train_tiny_ppo(out, 96, resume=True)
    assert agent.model.num_timesteps == 96
    assert not list(ckpt.glob("*.tmp"))
    assert all(checkpoint_problem(f) is None for f in ckpt.glob("*.zip"))


@pytest.fixture(scope="module")
def straight_steps(tmp_path_factory):
    """(env steps, printed text) of an uninterrupted ``steps=200`` run."""
    import contextlib
    import io

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        straight = train_tiny_ppo(tmp_path_factory.mktemp("straight"), 200)
    return straight.model.num_timesteps, text.getvalue()


def test_step_count_is_rounded_to_whole_rollouts_and_reported(straight_steps):
    steps, printed = straight_steps
    assert steps == 224  # 200 rounded up to whole rollouts of 4 envs × 8 steps
    assert "--steps 200 trains 224 in total" in printed


@pytest.mark.parametrize("where,at", [("step", 100), ("rollout_end", 96)])
def test_sigint_then_resume_trains_the_same_step_count(tmp_path, straight_steps, where, at):
    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        train_tiny_ppo(out, 200, callback=InterruptAt(at, where))
    saved = latest_checkpoint(out / "checkpoints", "ppo")
    assert saved[1] % 32 == 0 and saved[1] < 128  # the start of the interrupted rollout, not a partial one
    resumed = train_tiny_ppo(out, 200, resume=True)
    assert resumed.model.num_timesteps == straight_steps[0] == 224
    assert json.loads((out / "agent.json").read_text())["num_timesteps"] == 224
    assert all(int(f.name.split("_")[1]) % 32 == 0 for f in (out / "checkpoints").glob("ppo_*_steps.zip"))
