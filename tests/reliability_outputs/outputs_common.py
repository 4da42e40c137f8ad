"""Helpers of the outputs-and-resume tests: tiny trainings, a crafted SB3 agent file, a CLI runner."""

from __future__ import annotations

import base64
import json
import shutil
import zipfile
from pathlib import Path

from tiny import tiny_dataset, tiny_model
from tiny_sb3 import with_tiny_hparams

ENV_ID = "GFNet-ImageNet-v0"
SHIPPED = Path(__file__).resolve().parents[2] / "gfnet_env" / "weights" / "sb3_ppo_cluttered_fmnist.zip"


def env_kwargs(n: int = 24) -> dict:
    return {"checkpoint": tiny_model(), "dataset": tiny_dataset(n=n)}


def train_tiny_ppo(out, steps: int, resume: bool = False, **kw):
    """sb3-ppo on the tiny model: 4 envs × n_steps 8 = rollouts of 32 env steps."""
    from agents.sb3.agent import train_sb3

    kw.setdefault("checkpoint_freq", 32)
    kw = with_tiny_hparams("ppo", {"n_envs": 4, "algo_kwargs": {"n_steps": 8, "batch_size": 16}, **kw})
    return train_sb3("ppo", ENV_ID, steps, out, seed=0, device="cpu", eval_episodes=4, eval_freq=10_000,
                     resume=resume, **env_kwargs(), **kw)


def train_tiny_paper_ppo(out, steps: int = 72, resume: bool = False, **kw):
    """paper-ppo on the tiny model: batches of 6 images × 3 focus steps = 18 env steps."""
    from agents.paper_ppo import train_paper_ppo

    return train_paper_ppo(ENV_ID, steps, out, seed=0, batch_size=6, device="cpu", resume=resume, **env_kwargs(), **kw)


class Payload:
    """Unpickling this runs ``exec``: it writes ``path`` (the trace that proves code ran)."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').write('code ran')",)


def crafted_agent_zip(dest: Path, trace: Path, entry: str = "ep_success_buffer") -> Path:
    """A copy of the shipped sb3-ppo zip whose ``data[entry]`` is a pickle that would write ``trace``."""
    import cloudpickle

    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(SHIPPED) as src, zipfile.ZipFile(dest, "w") as out:
        for item in src.infolist():
            blob = src.read(item.filename)
            if item.filename == "data":
                data = json.loads(blob)
                data[entry] = {":type:": "<class 'object'>",
                               ":serialized:": base64.b64encode(cloudpickle.dumps(Payload(trace))).decode()}
                blob = json.dumps(data).encode()
            out.writestr(item, blob)
    return dest


def crafted_agent_dir(folder: Path, trace: Path) -> Path:
    """A folder as `gfnet train-agent --agent sb3-ppo` writes it, holding a crafted zip."""
    crafted_agent_zip(folder / "sb3_ppo.zip", trace)
    (folder / "agent.json").write_text(json.dumps({"agent": "sb3-ppo", "file": "sb3_ppo.zip"}))
    return folder


def copy_shipped(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SHIPPED, dest)
    return dest


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stdout + stderr) of ``gfnet ARGV``."""
    from gfnet_cli import main as cli

    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err
