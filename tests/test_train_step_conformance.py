"""Stage-1 training steps against the original training code (``pytest -k train_step_conformance``).

The data (``training/`` under the conformance folder, see tests/conformance_utils.py and docs/training.md,
"Conformance with the original training code") holds consecutive stage-1 steps of the original training code:
the settings, the images (B, 3, S, S), labels (B,) and focus actions (T−1, B, 2) of each step, the loss of
every look, and per parameter (keyed ``component/bare_key`` with ``component`` one of ``model`` = local
encoder, ``model_prime`` = global encoder, ``fc`` = classifier) the gradient's L2 norm, a fixed random
projection of the gradient and of the parameter after the optimiser step, the norm of the parameter's change
since the start, and the projections of the running statistics after the last step. The weights come from the
fill rule (tests/conformance_utils.py).

This test runs the project's own pieces — :meth:`TrainConfig.for_model` (the family recipe),
:func:`prepare_trainable`, :func:`set_train_mode`, :func:`build_optimizer`, :func:`build_schedule`,
:meth:`StageLoss.from_config` and :func:`train_step` — on the stored batch and actions, and compares everything
within 1e-5 relative: losses and norms to themselves, gradient projections to the gradient's norm, parameter
projections to the norm of the parameter's change (so that a missing weight-decay term shows), running-statistic
projections to the buffer's norm. The data's norms are float32 norms (``t.norm()``), computed here the same way.
Every number it checks against is read from the files, so any seed's data of the same format works.

Threads: with fill-rule weights the step is chaotic — batch-norm channels whose batch variance is near zero
amplify rounding by up to 1/sqrt(eps) — so a different float32 summation order moves gradients by 1e-4 to 1e-2
and the second step by more. With 2 CPU threads this implementation reproduces the shipped steps bit for bit
(with 1 or 4 it does not), so the test pins ``GFNET_CONFORMANCE_THREADS`` (default 2) threads.
"""

from __future__ import annotations

import json
import math
import os
import zlib

import pytest
import torch

from conformance_utils import conformance_dir, fill_tensor
from feature_nets.gfnet import GFNet, build_gfnet
from feature_nets.training import (
    StageLoss,
    TrainConfig,
    build_optimizer,
    build_schedule,
    prepare_trainable,
    set_train_mode,
    train_step,
)

#: Relative tolerance (an independent implementation of the original gets 0 on CPU).
RTOL = 1e-5
#: Seed offset of the projection matrices, as the data's format defines it.
PROJ_SEED = 12345


def _runs() -> list[str]:
    return sorted(p.stem for p in (conformance_dir() / "training").glob("train_stage1_*.json"))


def _load(name: str) -> tuple[dict, dict]:
    d = conformance_dir() / "training"
    with open(d / f"{name}.json") as f:
        meta = json.load(f)
    return meta, torch.load(d / f"{name}.pt", map_location="cpu", weights_only=True)


def _components(model: GFNet) -> dict[str, torch.nn.Module]:
    """Fill-rule component name -> module."""
    return {"model": model.local_encoder, "model_prime": model.global_encoder, "fc": model.classifier}


def _official(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict with the released key names (the encoders' official names, the classifier's own)."""
    fn = getattr(module, "official_state_dict", None)
    return fn() if fn is not None else module.state_dict()


def _fill(model: GFNet, seed: int) -> None:
    """Load fill-rule weights into the local and global encoders and the classifier."""
    for component, module in _components(model).items():
        filled = {k: fill_tensor(component, k, list(v.shape), str(v.dtype), seed) for k, v in _official(module).items()}
        if hasattr(module, "load_official_state_dict"):
            module.load_official_state_dict(filled)
        else:
            module.load_state_dict(filled)


def _named(model: GFNet) -> tuple[dict[str, torch.nn.Parameter], dict[str, torch.Tensor]]:
    """``component/bare_key`` -> parameter, and -> float buffer, matched through shared storage."""
    params, buffers = {}, {}
    for component, module in _components(model).items():
        by_storage = {(p.data_ptr(), tuple(p.shape)): p for p in module.parameters()}
        for key, t in _official(module).items():
            p = by_storage.get((t.data_ptr(), tuple(t.shape)))
            if p is not None:
                params[f"{component}/{key}"] = p
            elif t.is_floating_point():
                buffers[f"{component}/{key}"] = t
    return params, buffers


def _proj_matrix(key: str, shape: torch.Size) -> torch.Tensor:
    """The key's fixed float64 standard-normal projection matrix R, of the tensor's shape."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()) + PROJ_SEED)
    return torch.randn(shape, dtype=torch.float64, generator=g)


def _proj(t: torch.Tensor, r: torch.Tensor) -> float:
    """``sum(t · R)`` in float64."""
    return float((t.detach().double() * r).sum())


def _close(mine: float, ref: float, scale: float) -> bool:
    return abs(mine - ref) <= RTOL * max(abs(scale), abs(ref), 1e-12)


def _assert_all_close(what: str, mine: dict[str, float], ref: dict[str, float], scale: dict[str, float]) -> None:
    assert mine.keys() == ref.keys(), f"{what}: keys differ: {sorted(set(mine) ^ set(ref))[:5]}"
    bad = [k for k in ref if not _close(mine[k], float(ref[k]), scale[k])]
    worst = max(ref, key=lambda k: abs(mine[k] - float(ref[k])) / max(abs(scale[k]), abs(float(ref[k])), 1e-12))
    assert not bad, (f"{what}: {len(bad)} of {len(ref)} differ by more than {RTOL} relative, e.g. {bad[:3]}; "
                     f"worst {worst}: {mine[worst]} vs {float(ref[worst])}")


def _model_and_config(meta: dict, fill: bool = True) -> tuple[GFNet, TrainConfig]:
    """The model of the data's settings (fill-rule weights unless ``fill`` is False) and its family recipe."""
    model = build_gfnet(meta["model_name"], patch_size=int(meta["patch_size"]), T=int(meta["T"]), with_policy=False)
    assert model.image_size == int(meta["image_size"])
    if fill:
        _fill(model, int(meta["seed"]))
    cfg = TrainConfig.for_model(model, stage=int(meta["stage"]), batch_size=int(meta["batch"]), progress=False)
    return model, cfg


@pytest.fixture(autouse=True)
def _threads():
    """The CPU thread count the data was made with (the float32 summation order depends on it)."""
    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("GFNET_CONFORMANCE_THREADS", "2")))
    yield
    torch.set_num_threads(n)


def test_train_step_conformance_data_present():
    assert _runs(), f"no train_stage1_*.json under {conformance_dir() / 'training'}"


@pytest.mark.parametrize("name", _runs())
def test_train_step_conformance_recipe(name):
    """The family recipe is the original's: rates per group, momentum, Nesterov, weight decay, dsn, schedule."""
    meta, _ = _load(name)
    model, cfg = _model_and_config(meta, fill=False)
    assert (cfg.momentum, cfg.nesterov, cfg.weight_decay) == (meta["momentum"], meta["nesterov"], meta["weight_decay"])
    assert cfg.dsn_ratio == meta["dsn_ratio"] and cfg.epochs == meta["epochs"]
    assert cfg.glance_interpolation == meta["glance_interpolation"]
    prepare_trainable(model, cfg)
    optimizer = build_optimizer(model, cfg)
    names = {"local_encoder": "model", "global_encoder": "model_prime", "classifier": "fc"}
    assert [names[g["name"]] for g in optimizer.param_groups] == list(meta["lr"])  # the original's group order
    assert all(g["weight_decay"] == meta["weight_decay"] for g in optimizer.param_groups)
    assert {names[g["name"]]: g["lr"] for g in optimizer.param_groups} == meta["lr"]


@pytest.mark.parametrize("name", _runs())
def test_train_step_conformance(name):
    meta, data = _load(name)
    model, cfg = _model_and_config(meta)
    n_iter = len(data["loss"])
    prepare_trainable(model, cfg)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_schedule(optimizer, cfg, steps_per_epoch=n_iter)  # the stored steps lie in one epoch
    for _ in range(int(meta["epoch"]) * n_iter):
        scheduler.step()
    factor = 0.5 * (1.0 + math.cos(math.pi * int(meta["epoch"]) / int(meta["epochs"])))
    set_train_mode(model, cfg)
    assert model.glance_interpolation == meta["glance_interpolation"]
    stage_loss = StageLoss.from_config(model, cfg)
    params, buffers = _named(model)
    start = {k: p.detach().clone() for k, p in params.items()}
    snapshots: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []  # per iteration: key -> (grad, param)
    assert params.keys() == data["grad_norm"][0].keys()
    assert buffers.keys() == data["buffer_proj"].keys()

    for i in range(n_iter):
        for g in optimizer.param_groups:
            assert math.isclose(g["lr"], g["initial_lr"] * factor, rel_tol=1e-12), (g["name"], g["lr"])
        images = data["images"][i].float()
        draws = data["actions"][i].transpose(0, 1)  # (T-1, B, 2) -> (B, T-1, 2)
        loss, _ = train_step(stage_loss, images, data["targets"][i], draws, optimizer, scheduler)

        assert math.isclose(float(loss), float(data["loss"][i]), rel_tol=RTOL), (i, float(loss), float(data["loss"][i]))
        for term, ref in (("cls", meta["loss_cla"][i]), ("dsn", meta["loss_dsn"][i])):
            got = stage_loss.last_terms[term].tolist()
            assert len(got) == len(ref) and all(math.isclose(a, b, rel_tol=RTOL) for a, b in zip(got, ref)), \
                (i, term, got, ref)

        grads = {k: p.grad for k, p in params.items()}
        assert all(g is not None for g in grads.values()), [k for k, g in grads.items() if g is None][:5]
        norms = {k: float(g.norm()) for k, g in grads.items()}
        _assert_all_close(f"iteration {i} grad_norm", norms, data["grad_norm"][i], norms)
        delta = {k: float((p.detach() - start[k]).norm()) for k, p in params.items()}
        _assert_all_close(f"iteration {i} param_delta_norm", delta, data["param_delta_norm"][i], delta)
        last = i == n_iter - 1  # earlier iterations' tensors are kept for the projections below
        snapshots.append({k: (g if last else g.clone(), params[k].detach() if last else params[k].detach().clone())
                          for k, g in grads.items()})

    # Projections, one matrix R per key for all iterations (drawing R is the expensive part).
    grad_proj = [{} for _ in range(n_iter)]
    param_proj = [{} for _ in range(n_iter)]
    for k in params:
        r = _proj_matrix(k, params[k].shape)
        for i, snap in enumerate(snapshots):
            grad_proj[i][k], param_proj[i][k] = _proj(snap[k][0], r), _proj(snap[k][1], r)
    for i in range(n_iter):
        _assert_all_close(f"iteration {i} grad_proj", grad_proj[i], data["grad_proj"][i], data["grad_norm"][i])
        _assert_all_close(f"iteration {i} param_proj", param_proj[i], data["param_proj"][i],
                          data["param_delta_norm"][i])
    b_norm = {k: float(b.norm()) for k, b in buffers.items()}
    _assert_all_close("buffer_proj", {k: _proj(b, _proj_matrix(k, b.shape)) for k, b in buffers.items()},
                      data["buffer_proj"], b_norm)
