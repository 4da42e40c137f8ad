"""The paper-ppo policy file: what :meth:`PaperPPOAgent.save` and the trainer write, and how it is read.

A torch file (tensors and plain values only, read through the trust gate :func:`feature_nets.trust.load_torch_file`
with ``weights_only=True``: a file whose pickle would run code is an ``UntrustedPickleError``, a truncated one a
``NotACheckpointError``, each one line) holding
``{"format": "gfnet-paper-ppo", "version": 1, "policy_config", "policy_state_dict", "metadata"}``; a training
run's resumable ``paper_ppo_latest.pt`` adds the optimizer and noise state and is readable the same way. A
``paper-ppo-stop`` policy (:class:`~feature_nets.policy.StopPatchPolicy`) is the same file with
``policy_config["stop_head"] = True`` and the stop head's weights; a paper-ppo file has no such key.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

from feature_nets.checkpoint import build_to_fit
from feature_nets.files import atomic_save
from feature_nets.trust import load_torch_file
from feature_nets.policy import PatchPolicy, StopPatchPolicy

from ..trained import jsonable

__all__ = ["AGENT_FILE", "AGENT_FORMAT", "LATEST_FILE", "check_policy_blob", "is_gfnet_checkpoint", "load_policy_blob",
           "policy_config", "policy_from_blob", "read_policy_file", "read_torch_blob", "write_policy_file"]

#: ``format`` entry of the files written here.
AGENT_FORMAT = "gfnet-paper-ppo"
#: File names inside a training run's folder.
AGENT_FILE = "paper_ppo.pt"
LATEST_FILE = "paper_ppo_latest.pt"


def policy_config(policy: PatchPolicy) -> dict:
    """Constructor arguments that rebuild ``policy`` (and ``stop_head: True`` for a stop policy)."""
    out = {"feature_map_channels": policy.feature_map_channels, "feature_map_size": policy.feature_map_size,
           "hidden_dim": policy.hidden_dim, "conv": policy.conv, "action_std": policy.action_std}
    if isinstance(policy, StopPatchPolicy):
        out["stop_head"] = True
    return out


def write_policy_file(policy: PatchPolicy, path: str | os.PathLike, metadata: dict | None = None, **extra) -> Path:
    """Write ``policy`` (and ``extra`` entries, e.g. optimizer state) to ``path``, atomically."""
    blob = {"format": AGENT_FORMAT, "version": 1, "policy_config": policy_config(policy),
            "policy_state_dict": {k: v.detach().cpu() for k, v in policy.state_dict().items()},
            "metadata": jsonable(metadata or {}), **extra}
    return atomic_save(blob, path)


def read_torch_blob(path: str | os.PathLike) -> object:
    """What a paper-ppo file (or a GFNet checkpoint given in its place) holds, read through the trust gate (tensors
    and plain values only; there is no opt-in: these files never need full unpickling)."""
    return load_torch_file(path, False, what="paper-ppo policy file", opt_in=None)


def is_gfnet_checkpoint(blob: object) -> bool:
    """Whether a file's dict is a GFNet checkpoint (official format: ``model_name`` and the encoders' state
    dicts) rather than a paper-ppo policy file (which has none of them)."""
    return (isinstance(blob, dict) and blob.get("format") != AGENT_FORMAT
            and all(k in blob for k in ("model_name", "model_prime_state_dict", "model_state_dict")))


def load_policy_blob(path: str | os.PathLike) -> dict:
    """The whole dict of a paper-ppo file (:func:`read_torch_blob`), checked to be one (:func:`check_policy_blob`)."""
    return check_policy_blob(read_torch_blob(path), path)


def check_policy_blob(blob: object, path: str | os.PathLike) -> dict:
    """``blob`` when it is the dict of a paper-ppo file; a one-line ``ValueError`` naming what it lacks otherwise."""
    if not isinstance(blob, dict) or blob.get("format") != AGENT_FORMAT:
        raise ValueError(f"{path} is neither a paper-ppo agent file (no format={AGENT_FORMAT!r} entry) nor a GFNet "
                         "checkpoint; pass the paper_ppo.pt that `gfnet train-agent --agent paper-ppo` wrote, or a "
                         "GFNet *.pth.tar with a trained policy (`gfnet train-policy`)")
    missing = [k for k in ("policy_config", "policy_state_dict") if not isinstance(blob.get(k), dict)]
    if missing:
        raise ValueError(f"{path} is not a complete paper-ppo agent file: {' and '.join(missing)} missing or not a "
                         "dict")
    if not isinstance(blob.get("metadata", {}), dict):
        raise ValueError(f"{path}: its metadata is a {type(blob['metadata']).__name__}, not a dict; the file was edited "
                         "or damaged: use the file the training run wrote")
    return blob


def read_policy_file(path: str | os.PathLike) -> tuple[PatchPolicy, dict]:
    """(the policy, the whole file's dict) from a file :func:`write_policy_file` wrote."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no paper-ppo agent at {path}; train one with "
                                "`gfnet train-agent --agent paper-ppo --env ID --out DIR`")
    blob = load_policy_blob(path)
    return policy_from_blob(blob, path), blob


def policy_from_blob(blob: dict, path: str | os.PathLike) -> PatchPolicy:
    """The policy a checked paper-ppo file's dict (:func:`check_policy_blob`) describes, its weights loaded."""
    config = checked_policy_config(blob["policy_config"], path)
    cls = StopPatchPolicy if config.pop("stop_head", False) else PatchPolicy
    # sizes before allocation: the stored settings are checked against the stored weights on the meta device
    policy = build_to_fit(lambda: cls(**config), blob["policy_state_dict"], f"{path}: policy_state_dict")
    policy.load_state_dict(blob["policy_state_dict"])
    return policy


def checked_policy_config(config: dict, path) -> dict:
    """``policy_config`` of a paper-ppo file with its types checked (a ``ValueError`` naming the entry otherwise)."""
    known = {"feature_map_channels", "feature_map_size", "hidden_dim", "conv", "action_std", "stop_head"}
    unknown = sorted(set(config) - known, key=str)
    missing = sorted({"feature_map_channels", "feature_map_size", "hidden_dim", "conv"} - set(config))
    if unknown or missing:
        raise ValueError(f"{path}: policy_config has unknown entries {unknown} or lacks {missing}; it is not a "
                         "paper-ppo policy file this version wrote")
    out = dict(config)
    for key in ("feature_map_channels", "feature_map_size", "hidden_dim"):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{path}: policy_config[{key!r}] must be a positive integer, got {value!r:.60}")
        out[key] = int(value)
    for key in ("conv", "stop_head"):
        if key in out and not isinstance(out[key], bool):
            raise ValueError(f"{path}: policy_config[{key!r}] must be True or False, got {out[key]!r:.60}")
    std = out.get("action_std", 0.1)
    if isinstance(std, bool) or not isinstance(std, numbers.Real) or not (math.isfinite(std) and std > 0):
        raise ValueError(f"{path}: policy_config['action_std'] must be a finite number > 0, got {std!r:.60}")
    return out
