"""Helpers shared by the tests: tiny networks and datasets, the conformance data, hostile files, small trainings.

Test modules import them as ``from helpers import ...`` (tests/ is on the path).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset
from feature_nets.gfnet import build_small_gfnet
import json
import math
import os
import pathlib
import zlib
from typing import Any
import numpy as np
from PIL import Image
import base64
import shutil
import zipfile
from pathlib import Path
import inspect


# --- tiny: A tiny GFNet and a tiny image dataset that make env and agent tests run in seconds on CPU.
TINY = dict(patch_size=16, T=4, image_size=48, num_classes=5, widths=(8, 16, 32), feature_num=32,
            gru_hidden=32, policy_hidden=16)


def tiny_model(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_small_gfnet(**{**TINY, **overrides}).eval()


def tiny_dataset(n: int = 24, seed: int = 1, image_size: int = 48, num_classes: int = 5) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, image_size, image_size, generator=g),
                         torch.randint(0, num_classes, (n,), generator=g))


def fashion_mnist_available() -> bool:
    """Whether the Fashion-MNIST IDX files can be found (CI installs them: `make dataset`)."""
    from gfnet_env.data.cluttered_fashion_mnist import find_fashion_mnist_dir

    try:
        find_fashion_mnist_dir()
        return True
    except FileNotFoundError:
        return False


#: Marks tests that need the real Fashion-MNIST files; the skip says how to get them.
needs_fashion_mnist = pytest.mark.skipif(
    not fashion_mnist_available(),
    reason="Fashion-MNIST IDX files not installed (apt-get install dataset-fashion-mnist, or set FASHION_MNIST_DIR)",
)


# --- conformance utils: Shared helpers for tests that read the GFNet conformance data (docs/checkpoints.md, "Conformance").
#: Checkpoint field -> component name used in the fill rule's crc32 string.
COMPONENTS: dict[str, str] = {
    "model_state_dict": "model",
    "model_prime_state_dict": "model_prime",
    "fc": "fc",
    "policy": "policy",
}

_DEFAULT_DIR = pathlib.Path(__file__).parent / "fixtures" / "conformance"


def conformance_dir() -> pathlib.Path:
    """The conformance data folder: ``$GFNET_CONFORMANCE_DIR`` or ``tests/fixtures/conformance``."""
    env = os.environ.get("GFNET_CONFORMANCE_DIR")
    return pathlib.Path(env) if env else _DEFAULT_DIR


def config_names() -> list[str]:
    """Names ``{model_name}_p{P}_T{T}`` of the configurations present (one per ``NAME.json``), sorted."""
    return sorted(p.stem for p in conformance_dir().glob("*.json"))


def load_config(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta from ``NAME.json``, data from ``NAME.pt``) of one configuration."""
    d = conformance_dir()
    with open(d / f"{name}.json") as f:
        meta = json.load(f)
    data = torch.load(d / f"{name}.pt", map_location="cpu", weights_only=True)
    return meta, data


def strip_module(key: str) -> str:
    """A state-dict key without a leading ``module.`` (the DataParallel prefix)."""
    return key[len("module."):] if key.startswith("module.") else key


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r} in conformance json")
    return dtype


def fill_tensor(component: str, key: str, shape: list[int], dtype: str, seed: int) -> torch.Tensor:
    """One tensor made by the README's fill rule (``key`` may carry ``module.``; the rule uses the bare key)."""
    bare = strip_module(key)
    shape = tuple(int(s) for s in shape)
    dt = _dtype(dtype)
    if not (dt.is_floating_point or dt.is_complex):
        return torch.zeros(shape, dtype=dt)
    g = torch.Generator().manual_seed((zlib.crc32(f"{component}/{bare}".encode()) + seed) % 2**63)
    if bare.endswith("running_var"):
        t = 0.5 + torch.rand(shape, generator=g)
    elif bare.endswith("running_mean"):
        t = 0.1 * torch.randn(shape, generator=g)
    elif len(shape) <= 1:
        t = 0.1 * torch.randn(shape, generator=g)
        if bare.endswith("weight"):
            t = t + 1.0
    else:
        numel = math.prod(shape)
        t = torch.randn(shape, generator=g) * math.sqrt(1.0 / (numel / shape[0]))
    return t.to(torch.float32)


def fill_state_dicts(meta: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """The four state dicts of a configuration made by the fill rule, keyed by checkpoint field
    (``model_state_dict``, ``model_prime_state_dict``, ``fc``, ``policy``), keys spelled and ordered as in
    the json (encoder keys keep ``module.``)."""
    seed = int(meta["seed"])
    out: dict[str, dict[str, torch.Tensor]] = {}
    for field, component in COMPONENTS.items():
        entries = meta["checkpoint_keys"][field]
        out[field] = {
            key: fill_tensor(component, key, shape, dtype, seed) for key, (shape, dtype) in entries.items()
        }
    return out


def write_official_checkpoint(meta: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a checkpoint in the released format (see docs/checkpoints.md) with fill-rule weights.

    Contains ``model_name``, ``patch_size``, the four state dicts (encoder keys with ``module.`` as released),
    the per-component ``*_flops`` (placeholders), ``flops`` (cumulative placeholders, length T) and
    ``anytime_classification`` (length T).
    """
    T = int(meta["T"])
    sds = fill_state_dicts(meta)
    ckpt = {
        "model_name": meta["model_name"],
        "patch_size": int(meta["patch_size"]),
        **sds,
        "model_flops": 1.0,
        "policy_flops": 0.0,
        "fc_flops": 0.0,
        "flops": [float(t + 1) for t in range(T)],
        "anytime_classification": list(meta.get("anytime_top1", [0.0] * T)),
    }
    torch.save(ckpt, path)


# --- reliability utils: Helpers of the reliability tests (imported by name: this folder is on sys.path while its tests run).
class TracePayload:
    """Unpickling this object runs ``exec`` on a line that writes ``path``: proof that code from a file ran."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('ran')",))


def write_image_folder(root, split: str = "val", classes=("a", "b"), n_per_class: int = 3, size: int = 60):
    """``root/split/<class>/<i>.png``: random RGB images (size×size) in ImageFolder layout; returns ``root``."""
    rng = np.random.default_rng(0)
    for c in classes:
        (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


# --- outputs common: Helpers of the outputs-and-resume tests: tiny trainings, a crafted SB3 agent file, a CLI runner.
ENV_ID = "GFNet-ImageNet-v0"
SHIPPED = Path(__file__).resolve().parents[1] / "gfnet_env" / "weights" / "sb3_ppo_cluttered_fmnist.zip"


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


def sb3_zip_with_pickled_entry(dest: Path, pickled: bytes, entry: str = "ep_success_buffer") -> Path:
    """A copy of the shipped sb3-ppo zip whose ``data[entry]`` is the pickle ``pickled``, as SB3 stores objects."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(SHIPPED) as src, zipfile.ZipFile(dest, "w") as out:
        for item in src.infolist():
            blob = src.read(item.filename)
            if item.filename == "data":
                data = json.loads(blob)
                data[entry] = {":type:": "<class 'object'>", ":serialized:": base64.b64encode(pickled).decode()}
                blob = json.dumps(data).encode()
            out.writestr(item, blob)
    return dest


def crafted_agent_zip(dest: Path, trace: Path, entry: str = "ep_success_buffer") -> Path:
    """A copy of the shipped sb3-ppo zip whose ``data[entry]`` is a pickle that would write ``trace``."""
    import cloudpickle

    return sb3_zip_with_pickled_entry(dest, cloudpickle.dumps(Payload(trace)), entry)


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


# --- tiny sb3: The small SB3 settings of the tests' tiny trainings, as ``hparams`` over the recipe table.
def tiny_hparams(algo: str, algo_kwargs: dict | None = None, hparams: dict | None = None,
                 **given: Any) -> dict[str, Any]:
    """``hparams`` that turn ``RECIPES[algo]`` into the tiny settings; keys in ``algo_kwargs`` and ``given`` values
    that are not None (``n_envs=4``, ``grid_size=3``: the test's own arguments) are left to them, and the test's
    own ``hparams`` go over the result."""
    from agents.sb3.algorithms import algo_key, algorithm_class
    from agents.sb3.recipes import ENV_KEYS, OFF_POLICY, RECIPES

    algo = algo_key(algo)
    out: dict[str, Any] = dict(obs_mode="gru", action_mode="grid" if algo == "dqn" else "continuous",
                               action_range="symmetric", extractor="none")
    out["n_envs"] = 16
    if algo in ("ppo", "recurrent-ppo"):
        out.update(n_steps=64, batch_size=64)
    if algo in OFF_POLICY:
        out.update(buffer_size=100_000, buffer_bytes=2 * 10**9, learning_starts=100)
    defaults = inspect.signature(algorithm_class(algo)).parameters
    for key in RECIPES[algo]:
        if key in out or key == "steps":
            continue
        out[key] = None if key in ENV_KEYS else defaults[key].default  # unset env setting / SB3's default
    taken = set(algo_kwargs or {}) | {k for k, v in given.items() if v is not None}
    return {**{k: v for k, v in out.items() if k not in taken}, **(hparams or {})}


def with_tiny_hparams(algo: str, kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` (train_sb3 keyword arguments) with ``hparams`` set by :func:`tiny_hparams` from its own values."""
    given = {k: kw.get(k) for k in ("n_envs", "obs_mode", "action_mode", "grid_size")}
    return {**kw, "hparams": tiny_hparams(algo, kw.get("algo_kwargs"), kw.get("hparams"), **given)}


def write_jpegs(root: Path, classes: int = 3, per_class: int = 4, size=(61, 47), seed: int = 0) -> None:
    """``root/c<k>/img<i>.JPEG`` random JPEGs of ``size`` (W, H), not square so Resize and CenterCrop both act."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / f"c{c}" / f"img{i}.JPEG", quality=90)


#: Difference in uint8 levels between torchvision's decode + tensor resize and PIL's (bilinear, antialiased), on
#: random JPEGs. Measured on CPU (torch 2.14.1 / torchvision 0.29.1): max 1 level, mean 0.0055 levels per pixel
#: here (48 px from 83×61); 500×375 → 224 (MobileNet-V3 / ResNet-50 transforms): max 1, mean 0.0028.
MAX_LEVELS = 1.01


MEAN_LEVELS = 0.05
