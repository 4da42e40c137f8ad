"""Load and save GFNet checkpoints in the released format (see docs/checkpoints.md).

A released ``*.pth.tar`` is a torch pickle of a dict with ``model_name``, ``patch_size``, the four state
dicts (``model_prime_state_dict`` = global encoder, ``model_state_dict`` = local encoder, ``fc`` =
classifier, ``policy``), the multiply-add counts and, optionally, published results. Encoder keys may carry
the ``module.`` prefix of ``nn.DataParallel``; both spellings load. Checkpoints we write use the same
layout (encoder keys without the prefix, as the original training stages wrote them) plus a ``gfnet_spec``
entry so that non-released architectures (the small CNN) can be rebuilt.

Every failure raises a :class:`CheckpointError` subclass whose message names the problem and the fix.

Safety: files are read with ``torch.load(weights_only=True)``, which never runs code from the file. Full unpickling
(which can run any code stored in the file) happens only when the caller passes ``trusted_pickle=True`` — the
bool itself: ``"no"``, ``"off"`` or ``1`` raise a ``TypeError`` rather than being taken as true. A refused file
raises :class:`UntrustedPickleError` naming the Python objects it would have created.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .registry import BACKBONE_CONFIGS, get_config
from .files import atomic_save
from .gfnet import GFNet, GFNetSpec, build_gfnet_from_spec, positive_int
from .registry import build_encoder
from .safe_pickle import check_path
from .trust import (CheckpointError, NotACheckpointError, UntrustedPickleError,  # noqa: F401 (re-exported)
                    check_trusted_pickle, load_torch_file)

#: Checkpoint entries holding state dicts, and the module of a GFNet each one fills.
STATE_DICT_FIELDS = {
    "model_prime_state_dict": "global_encoder",
    "model_state_dict": "local_encoder",
    "fc": "classifier",
    "policy": "policy",
}
_ENCODER_FIELDS = ("model_prime_state_dict", "model_state_dict")


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The path does not exist."""


class InvalidMetadataError(CheckpointError):
    """``patch_size``, ``flops``, ``gfnet_spec`` or another metadata entry has the wrong type or value."""


class NonFiniteWeightsError(CheckpointError):
    """Some tensors of the file hold NaN or infinite values (a diverged training run or a corrupted file)."""


class UnknownArchitectureError(CheckpointError):
    """``model_name`` is not an architecture this project can build."""


class StateDictMismatchError(CheckpointError):
    """Missing or unexpected keys in a state dict."""


class ShapeMismatchError(CheckpointError):
    """Keys match but tensor shapes do not."""


@dataclass
class LoadedCheckpoint:
    """A loaded checkpoint: the model and what the file says about it.

    Attributes:
        model: the GFNet, in eval mode, with every key of the file loaded.
        model_name, patch_size, T: as stored (T = len(flops)).
        flops: cumulative multiply-adds per number of steps 1..T, as stored (None when absent).
        model_flops, policy_flops, fc_flops: stored per-component multiply-adds (None when absent).
        anytime_classification: stored top-1 (%) per step (None when absent).
        budgeted_batch_classification: stored [madds, top1] curve (None when absent).
        dynamic_threshold: stored thresholds (None when absent).
        extra: every other entry of the file.
    """

    model: GFNet
    model_name: str
    patch_size: int
    T: int
    flops: list[float] | None = None
    model_flops: float | None = None
    policy_flops: float | None = None
    fc_flops: float | None = None
    anytime_classification: list[float] | None = None
    budgeted_batch_classification: list | None = None
    dynamic_threshold: list | None = None
    extra: dict = field(default_factory=dict)


# --- reading ----------------------------------------------------------------------------------------


def read_checkpoint_dict(path: str | os.PathLike, trusted_pickle: bool = False) -> dict:
    """Read the raw dict of a checkpoint file, with the errors of this module.

    Args:
        path: the ``*.pth.tar`` file.
        trusted_pickle: allow full unpickling (``weights_only=False``); must be the bool True to do so. Only for
            files you trust: a pickle can run arbitrary code. Needed for some legacy files that store non-tensor
            Python objects.

    Raises:
        TypeError: ``path`` is not a path, or ``trusted_pickle`` is not a bool.
        UntrustedPickleError: the file holds Python objects that only full unpickling would create.
        CheckpointNotFoundError, NotACheckpointError: see the classes.
    """
    trusted_pickle = check_trusted_pickle(trusted_pickle)
    path = check_path(path)
    if not path.exists():
        raise CheckpointNotFoundError(
            f"checkpoint file not found: {path}. Download a released GFNet checkpoint (links in the official "
            "GFNet README) or train one with `gfnet train-features`, then pass its path."
        )
    if path.is_dir():
        raise NotACheckpointError(f"{path} is a directory; pass the *.pth.tar file inside it")
    obj = load_torch_file(path, trusted_pickle, what="torch checkpoint")  # the one trust gate
    if not isinstance(obj, dict):
        raise NotACheckpointError(f"{path} holds a {type(obj).__name__}, not a GFNet checkpoint dict")
    missing = [k for k in ("model_name", "patch_size", "model_prime_state_dict", "model_state_dict", "fc")
               if k not in obj]
    if missing:
        raise NotACheckpointError(
            f"{path} is a torch file but not a GFNet checkpoint: it lacks {missing} "
            f"(it has {sorted(obj)[:12]}). GFNet checkpoints come from the official release or "
            "`gfnet train-features`."
        )
    return obj


def strip_module_prefix(state_dict: dict) -> dict:
    """The same state dict without the ``module.`` prefix ``nn.DataParallel`` puts on keys (other keys kept)."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def _checked_flops(ckpt: dict, path) -> list[float] | None:
    """``ckpt["flops"]`` as floats (cumulative multiply-adds after 1..T steps), checked; None when absent."""
    flops = ckpt.get("flops")
    if flops is None:
        return None
    if isinstance(flops, torch.Tensor):
        flops = flops.tolist() if flops.ndim == 1 else flops
    if not isinstance(flops, (list, tuple)):  # a string "11111" would iterate as five counts: T=5
        raise InvalidMetadataError(f"{path}: 'flops' must be a list of numbers (cumulative multiply-adds per "
                                   f"number of steps), got {type(flops).__name__} {flops!r:.200}")
    try:
        if any(isinstance(v, (str, bytes, bool)) for v in flops):
            raise TypeError
        values = [float(v) for v in flops]
    except (TypeError, ValueError):
        raise InvalidMetadataError(f"{path}: 'flops' must be a list of numbers (cumulative multiply-adds per "
                                   f"number of steps), got {flops!r:.200}") from None
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise InvalidMetadataError(f"{path}: 'flops' must be a non-empty list of finite, non-negative numbers, "
                                   f"got {values[:8]}")
    return values


def _metadata_error(path, name: str, err: Exception) -> InvalidMetadataError:
    return InvalidMetadataError(f"{path}: the checkpoint's {name} is invalid: {err}. The file's metadata does not "
                                "describe a GFNet; re-save it with feature_nets.checkpoint.save_checkpoint.")


def _spec_from_checkpoint(ckpt: dict, path) -> GFNetSpec:
    flops = _checked_flops(ckpt, path)
    try:
        patch_size = positive_int(ckpt["patch_size"], "patch_size", "side of the glance and of each patch, pixels")
    except (TypeError, ValueError) as e:
        raise _metadata_error(path, "'patch_size'", e) from None
    if "gfnet_spec" in ckpt:
        try:
            spec = GFNetSpec.from_dict(ckpt["gfnet_spec"])
        except (TypeError, ValueError, KeyError) as e:
            raise _metadata_error(path, "'gfnet_spec'", e) from None
        if flops is not None and len(flops) != spec.T:
            raise InvalidMetadataError(
                f"{path}: 'flops' has {len(flops)} entries but gfnet_spec says T={spec.T} (one cumulative count per "
                "number of steps); the file was edited or is inconsistent. Re-save it with save_checkpoint.")
        if patch_size != spec.patch_size:
            raise InvalidMetadataError(f"{path}: 'patch_size' is {patch_size} but gfnet_spec says "
                                       f"{spec.patch_size}; the file is inconsistent. Re-save it with save_checkpoint.")
        return spec
    name = ckpt["model_name"]
    if name not in BACKBONE_CONFIGS:
        raise UnknownArchitectureError(
            f"{path}: model_name {name!r} is not a released GFNet architecture "
            f"(known: {', '.join(sorted(BACKBONE_CONFIGS))}) and the file has no 'gfnet_spec' entry "
            "to rebuild it from. Was it written by another project?"
        )
    if "flops" not in ckpt or not ckpt["flops"]:
        raise NotACheckpointError(
            f"{path}: no 'flops' list, so the number of steps T is unknown (T = len(flops) in released files)"
        )
    fc = ckpt["fc"]
    if not isinstance(fc, dict):
        raise NotACheckpointError(f"{path}: 'fc' is a {type(fc).__name__}, not a state dict")
    num_classes = int(fc["fc.weight"].shape[0]) if "fc.weight" in fc else (
        int(fc["fc_2.weight"].shape[0]) if "fc_2.weight" in fc else 1000)
    try:
        return GFNetSpec(get_config(name), patch_size=patch_size, T=len(flops), num_classes=num_classes)
    except (TypeError, ValueError) as e:
        raise _metadata_error(path, "'patch_size'/'flops'", e) from None


_KEYSET_CACHE: dict[str, set[str]] = {}


def _known_keysets() -> dict[str, set[str]]:
    """Encoder key sets of every released architecture (built once on the meta device)."""
    if not _KEYSET_CACHE:
        for name in BACKBONE_CONFIGS:
            try:
                with torch.device("meta"):
                    enc = build_encoder(name)
                _KEYSET_CACHE[name] = set(enc.official_state_dict())
            except Exception:  # an architecture that cannot be built on meta is just not suggested
                continue
    return _KEYSET_CACHE


def guess_architecture(keys) -> str | None:
    """The released architecture whose encoder keys overlap ``keys`` most (Jaccard), or None."""
    keys = set(keys)
    best, best_score = None, 0.0
    for name, ref in _known_keysets().items():
        score = len(keys & ref) / max(1, len(keys | ref))
        if score > best_score:
            best, best_score = name, score
    return best if best_score > 0.5 else None


def _check_fits(module: nn.Module, state_dict: dict, field_name: str, path, is_encoder: bool,
                released: bool = True) -> None:
    """Keys, shapes and sizes of ``state_dict`` against ``module`` (which may live on the ``meta`` device: nothing is
    allocated here), each problem a :class:`CheckpointError` naming it (and, for an encoder of a ``released``
    architecture, the released architecture its keys look like)."""
    own = module.official_state_dict() if is_encoder else module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        hint = ""
        if is_encoder and released:  # which released architecture the keys look like (all built once, on meta)
            guess = guess_architecture(state_dict.keys())
            if guess:
                hint = f" The file's keys look like a {guess} encoder."
        raise StateDictMismatchError(
            f"{path}: '{field_name}' does not fit the {module.__class__.__name__} the checkpoint's model_name "
            f"asks for: {len(missing)} missing keys {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}.{hint} "
            "Check that model_name/patch_size match the weights, or that the file is not truncated."
        )
    not_tensors = [k for k in own if not isinstance(state_dict[k], torch.Tensor)]
    if not_tensors:
        raise NotACheckpointError(f"{path}: '{field_name}' holds values that are not tensors "
                                  f"({', '.join(not_tensors[:5])}: {type(state_dict[not_tensors[0]]).__name__})")
    bad = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in own.items()
           if tuple(state_dict[k].shape) != tuple(v.shape)]
    if bad:
        listed = "; ".join(f"{k}: file {got}, model {want}" for k, got, want in bad[:5])
        raise ShapeMismatchError(
            f"{path}: '{field_name}' has {len(bad)} tensors of the wrong shape ({listed}"
            f"{'; …' if len(bad) > 5 else ''}). The weights were made for another configuration (patch size, "
            "class count or width) than model_name/patch_size say."
        )
    check_stored_sizes(state_dict, f"{path}: '{field_name}'")


def check_stored_sizes(state_dict: dict, where: str) -> None:
    """Refuse tensors that hold more elements than the file stores for them (a stride-0 or overlapping view of a
    small storage, which a file can declare in a few bytes but copying it into a model would allocate in full)."""
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor) or v.numel() == 0 or v.is_meta:
            continue
        extent = 1 + sum((n - 1) * abs(s) for n, s in zip(v.shape, v.stride()))
        if extent < v.numel():
            raise NotACheckpointError(
                f"{where}: tensor {k!r} of shape {tuple(v.shape)} repeats the {extent} stored values of the file "
                f"{v.numel() // extent}-fold (strides {tuple(v.stride())}); a saved weight stores every value. "
                "The file was crafted or damaged.")


def build_to_fit(factory, state_dict: dict, where: str) -> nn.Module:
    """``factory()`` (a module built from a file's settings), after checking on the ``meta`` device (no memory, no
    random draws) that ``state_dict`` fits it: the same keys, shapes, and no tensor larger than what the file stores.
    Settings such as ``hidden_dim=200000`` in a 40 kB file are refused here instead of allocating gigabytes.

    Raises:
        StateDictMismatchError, ShapeMismatchError, NotACheckpointError: naming ``where`` and the tensors.
    """
    with torch.device("meta"):
        probe = factory()
    own = probe.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        raise StateDictMismatchError(f"{where}: the weights do not fit the settings stored with them: "
                                     f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
                                     f"{unexpected[:5]}")
    not_tensors = [k for k in own if not isinstance(state_dict[k], torch.Tensor)]
    if not_tensors:
        raise NotACheckpointError(f"{where}: values that are not tensors ({', '.join(not_tensors[:5])})")
    bad = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in own.items()
           if tuple(state_dict[k].shape) != tuple(v.shape)]
    if bad:
        listed = "; ".join(f"{k}: file {got}, settings {want}" for k, got, want in bad[:5])
        raise ShapeMismatchError(f"{where}: {len(bad)} tensors do not have the shapes the stored settings give "
                                 f"({listed}); the settings were edited or the file is damaged")
    check_stored_sizes(state_dict, where)
    return factory()


def _check_and_load(module: nn.Module, state_dict: dict, field_name: str, path, is_encoder: bool,
                    released: bool = True) -> None:
    _check_fits(module, state_dict, field_name, path, is_encoder, released)
    _check_finite(state_dict, field_name, path)
    if is_encoder:
        module.load_official_state_dict(state_dict)
    else:
        module.load_state_dict(state_dict, strict=True)


def load_checked_state_dict(module: nn.Module, state_dict: dict, what: str, path, is_encoder: bool = False) -> None:
    """Load ``state_dict`` (named ``what`` in the file ``path``) into ``module`` as a checkpoint's state dicts are
    loaded: keys, value types (a value that is not a tensor is a :class:`NotACheckpointError`), shapes, stored sizes
    and finiteness checked first, each problem a :class:`CheckpointError` in one line naming it. ``is_encoder``:
    ``module`` is an encoder and ``state_dict`` keyed as a released backbone."""
    _check_and_load(module, state_dict, what, path, is_encoder, released=is_encoder)


def _check_finite(state_dict: dict, field_name: str, path) -> None:
    """:class:`NonFiniteWeightsError` naming the floating-point tensors that hold NaN or ±inf."""
    bad = [k for k, v in state_dict.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteWeightsError(
            f"{path}: '{field_name}' has {len(bad)} tensors with NaN or infinite values ({', '.join(bad[:5])}"
            f"{', …' if len(bad) > 5 else ''}). The training run that wrote it diverged, or the file is corrupted; "
            "use an earlier checkpoint of the run or retrain with a lower learning rate.")


def load_state_dicts(model: GFNet, ckpt: dict, path: str | os.PathLike, with_policy: bool) -> None:
    """Load a checkpoint dict's state dicts into an existing model, in place, every key and shape checked.

    Args:
        model: a GFNet of the checkpoint's architecture.
        ckpt: the raw dict (:func:`read_checkpoint_dict`).
        path: the file it came from (for messages).
        with_policy: also load ``ckpt["policy"]`` into ``model.policy``.

    Raises:
        NotACheckpointError, StateDictMismatchError, ShapeMismatchError, NonFiniteWeightsError: the model is
            left partly loaded.
    """
    released = model.spec.config.model_name in BACKBONE_CONFIGS
    for field_name, module, sd, is_encoder in _state_dicts(model, ckpt, path, with_policy):
        _check_and_load(module, sd, field_name, path, is_encoder, released)


def _state_dicts(model: GFNet, ckpt: dict, path, with_policy: bool):
    """(field, the module of ``model`` it fills, its state dict, whether it is an encoder) per state-dict entry."""
    for field_name, attr in STATE_DICT_FIELDS.items():
        if attr == "policy" and not with_policy:
            continue
        sd = ckpt[field_name]
        if not isinstance(sd, dict):
            raise NotACheckpointError(f"{path}: '{field_name}' is a {type(sd).__name__}, not a state dict")
        is_encoder = field_name in _ENCODER_FIELDS
        yield field_name, getattr(model, attr), strip_module_prefix(sd) if is_encoder else sd, is_encoder


def check_fits_spec(spec: GFNetSpec, ckpt: dict, path, with_policy: bool) -> None:
    """Sizes before allocation: the model ``spec`` describes, built on the ``meta`` device (no memory, no random
    draws), against the checkpoint's state dicts (keys, shapes, stored sizes) and its step count. A small file whose
    ``gfnet_spec`` asks for two million classes or 8192-channel convolutions is refused here, in milliseconds,
    instead of allocating gigabytes for random weights that its tensors could never fill."""
    with torch.device("meta"):
        probe = build_gfnet_from_spec(spec, with_policy=with_policy)
    for field_name, module, sd, is_encoder in _state_dicts(probe, ckpt, path, with_policy):
        _check_fits(module, sd, field_name, path, is_encoder, spec.config.model_name in BACKBONE_CONFIGS)
    max_looks = probe.classifier.max_looks
    if max_looks is not None and spec.T > max_looks:
        raise InvalidMetadataError(f"{path}: T={spec.T} steps (len(flops)) but the classifier has heads for only "
                                   f"{max_looks} looks; the file's 'flops' list is wrong. Re-save it with "
                                   "save_checkpoint.")


def load_checkpoint(
    path: str | os.PathLike,
    trusted_pickle: bool = False,
    with_policy: bool = True,
    map_location: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load a GFNet checkpoint (released or ours) into a fresh model.

    Args:
        path: ``*.pth.tar`` file.
        trusted_pickle: opt in to full unpickling for legacy files you trust (see :func:`read_checkpoint_dict`).
        with_policy: also build and load the patch policy (needs a ``policy`` entry).
        map_location: device for the model.

    Returns:
        :class:`LoadedCheckpoint` with the model in eval mode.

    Raises:
        TypeError: ``path`` is not a path or ``trusted_pickle`` not a bool; otherwise :class:`CheckpointError`
            subclasses (bad metadata, NaN/inf weights, mismatched state dicts, refused pickles, …).
    """
    ckpt = read_checkpoint_dict(path, trusted_pickle=trusted_pickle)
    spec = _spec_from_checkpoint(ckpt, path)
    if with_policy and "policy" not in ckpt:
        raise StateDictMismatchError(f"{path}: no 'policy' entry; load it with with_policy=False")
    check_fits_spec(spec, ckpt, path, with_policy)  # before anything is allocated
    model = build_gfnet_from_spec(spec, with_policy=with_policy)
    load_state_dicts(model, ckpt, path, with_policy=with_policy)
    model.eval().to(map_location)
    known = {"model_name", "patch_size", "flops", "model_flops", "policy_flops", "fc_flops",
             "anytime_classification", "budgeted_batch_classification", "dynamic_threshold", "gfnet_spec",
             *STATE_DICT_FIELDS}
    try:
        stored = dict(model_flops=_as_float(ckpt.get("model_flops")), policy_flops=_as_float(ckpt.get("policy_flops")),
                      fc_flops=_as_float(ckpt.get("fc_flops")),
                      anytime_classification=_as_list(ckpt.get("anytime_classification")),
                      dynamic_threshold=_as_list(ckpt.get("dynamic_threshold")))
    except (TypeError, ValueError, RuntimeError) as e:
        raise _metadata_error(path, "multiply-add counts or results", e) from None
    loaded = LoadedCheckpoint(
        model=model,
        model_name=str(ckpt["model_name"]),
        patch_size=spec.patch_size,
        T=spec.T,
        flops=_as_list(ckpt.get("flops")),
        budgeted_batch_classification=ckpt.get("budgeted_batch_classification"),
        extra={k: v for k, v in ckpt.items() if k not in known},
        **stored,
    )
    model.stored_results = stored_results(loaded, path)
    return loaded


def stored_results(loaded: LoadedCheckpoint, path) -> dict | None:
    """The results a checkpoint stores, as plain lists (``GFNet.stored_results``), or None when it stores
    neither ``anytime_classification`` nor ``budgeted_batch_classification`` nor ``dynamic_threshold``.

    Keys: ``source`` (the file), ``anytime_classification`` (top-1 % per step), ``budgeted_batch_classification``
    ([madds, top1]), ``dynamic_threshold`` ((P, T) rows, a single row as one), ``note`` (the file's
    ``anytime_classification_note``) and ``protocol`` (its ``results_protocol``: how this project measured them);
    each None when absent.

    Raises:
        InvalidMetadataError: the budgeted curve is not two lists of one length.
    """
    curve = loaded.budgeted_batch_classification
    thresholds = loaded.dynamic_threshold
    if loaded.anytime_classification is None and curve is None and thresholds is None:
        return None
    if curve is not None:
        try:
            madds, top1 = (_as_list(x) for x in curve)
            if len(madds) != len(top1):
                raise ValueError(f"{len(madds)} multiply-adds but {len(top1)} top-1 values")
            curve = [madds, top1]
        except (TypeError, ValueError, RuntimeError) as e:
            raise _metadata_error(path, "budgeted_batch_classification (a list of multiply-adds and a list of "
                                  "top-1 values)", e) from None
    if thresholds is not None and thresholds and not isinstance(thresholds[0], (list, tuple)):
        thresholds = [thresholds]  # one threshold vector
    return {"source": str(path), "anytime_classification": loaded.anytime_classification,
            "budgeted_batch_classification": curve, "dynamic_threshold": thresholds,
            "note": loaded.extra.get("anytime_classification_note"), "protocol": loaded.extra.get("results_protocol")}


def _as_list(x):
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return [float(v) if not isinstance(v, (list, tuple)) else v for v in x]


def _as_float(x):
    if x is None:
        return None
    return float(x.item() if isinstance(x, torch.Tensor) else x)


# --- writing ----------------------------------------------------------------------------------------


def checkpoint_dict(model: GFNet, madds: dict | None = None, module_prefix: bool = False, **extra) -> dict:
    """The released-format dict for a model.

    Args:
        model: the GFNet to store.
        madds: multiply-adds as :func:`feature_nets.madds.count_madds` returns them; counted when None.
        module_prefix: spell encoder keys with ``module.`` as released files do (default: without, as the
            original training stages wrote them).
        **extra: further entries (``anytime_classification``, ``dynamic_threshold``, optimizer state, …).
    """
    from .madds import count_madds

    if madds is None:
        madds = count_madds(model)
    pre = "module." if module_prefix else ""

    def enc(e):
        return {pre + k: v.detach().cpu().clone() for k, v in e.official_state_dict().items()}

    out = {
        "model_name": model.spec.config.model_name,
        "patch_size": model.patch_size,
        "model_prime_state_dict": enc(model.global_encoder),
        "model_state_dict": enc(model.local_encoder),
        "fc": {k: v.detach().cpu().clone() for k, v in model.classifier.state_dict().items()},
        "model_flops": float(madds["focus"]),
        "fc_flops": float(madds["classifier_step"]),
        "policy_flops": float(madds["policy_step"]),
        "flops": [float(x) for x in madds["cumulative"]],
        "gfnet_spec": model.spec.to_dict(),
    }
    if model.policy is not None:
        out["policy"] = {k: v.detach().cpu().clone() for k, v in model.policy.state_dict().items()}
    out.update(extra)
    return out


def save_checkpoint(model: GFNet, path: str | os.PathLike, madds: dict | None = None,
                    module_prefix: bool = False, **extra) -> Path:
    """Write a checkpoint in the released format, atomically (a crash never leaves half a file)."""
    return atomic_save(checkpoint_dict(model, madds=madds, module_prefix=module_prefix, **extra), path)
