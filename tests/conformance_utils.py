"""Shared helpers for tests that read the GFNet conformance data (docs/checkpoints.md, "Conformance").

The data folder is the one named by the environment variable ``GFNET_CONFORMANCE_DIR``, defaulting to the
copy in ``tests/fixtures/conformance``; tests must pass for any seed's data set of the same format.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import zlib
from typing import Any

import torch

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
