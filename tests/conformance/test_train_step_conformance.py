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
:meth:`StageLoss.from_config` and :func:`train_step` — on the stored batch and actions and compares the
results: losses and norms to themselves, gradient projections to the gradient's norm, parameter projections to
the norm of the parameter's change (so that a missing weight-decay term shows), running-statistic projections
to the buffer's norm. The data's norms are float32 norms (``t.norm()``), computed here the same way. Every
number it checks against is read from the files, so any seed's data of the same format works.

Why two tiers. With fill-rule weights the step is chaotic in float32: the backward pass amplifies rounding
layer by layer (measured on the shipped data, one float32 order against another: gradient norms differ by
1e-7 in layer4.2, 1e-5 in layer4.0, 1e-3 in layer3 and up to 6e-3 in layer1; gradient *directions* by up to 5%
of the norm), and the second step starts from those parameters (its losses differ by up to 2%, its gradients'
directions are unrelated). It is not near-zero batch variance: no batch-norm channel's batch
variance is below 100·eps (the smallest is 0.07). The float32 summation order comes from the CPU kernels that ATen and oneDNN pick
for the CPU's vector width (AVX-512 vs AVX2; ``ATEN_CPU_CAPABILITY`` can only lower it) and the thread count,
and no setting on an AVX2 CPU gives the AVX-512 order (the shipped data reproduces bit for bit with 2 threads
on the AVX-512 machine that made it). Measured on an AVX2 CPU against a float64 run of the same step: the
reference's own error is as large as ours (iteration 0: gradient norms ≤ 1.6e-2, median 7.5e-4; projections
≤ 0.16 of the norm; the whole gradient's norm 1.8e-4; iteration 1: loss 1.5e-3, per-look losses ≤ 2.7e-2,
gradient norms ≤ 0.28, the whole gradient's norm 3.1e-2), so 1e-5 is only meaningful in the data's own order.

* Both tiers, within 1e-5 (quantities the chaos does not reach): the first iteration's loss and per-look
  losses (2.8e-6 on AVX2), the classifier's first gradient norms (9e-7), and the update itself: ``R·p`` after
  every iteration must follow, by the original's SGD (momentum, Nesterov, weight decay, the epoch's cosine
  rate read from the data), from ``R·p0`` and the gradient projections — for the reference's numbers (so the
  rule is the original's) and for ours — up to 4·2⁻²⁴·|p| for the float32 rounding of ``p`` (measured ≤ 1.4).
  This catches a wrong rate, schedule factor, momentum, Nesterov flag or weight decay whatever the gradient.
* Tier ``exact``, when the first forward pass reproduces the stored float32 losses bit for bit (the data's
  summation order): everything, both iterations, within 1e-5, as before.
* Tier ``measured``, otherwise: the chaotic quantities within :data:`MEASURED` bounds, about twice the
  reference's distance from float64 above (per-parameter gradient norms of iteration 0 within 3e-2, their
  median within 3e-3, the whole gradient's norm within 2e-3; iteration 1's losses within 1e-2 ...).

The tier and why are printed, recorded as the ``conformance_tier`` property and shown as a
:class:`ConformanceTier` warning; a failure message names the tier too. The CPU threads stay pinned to
``GFNET_CONFORMANCE_THREADS`` (default 2), the data's.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zlib

import pytest
import torch
from helpers import conformance_dir, fill_tensor

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

#: Relative tolerance of the exact comparisons (in the data's own summation order the difference is 0).
RTOL = 1e-5


class ConformanceTier(UserWarning):
    """Names the tier the train-step conformance test ran (shown in pytest's warnings summary)."""


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


def _sgd_projection(meta: dict, lr: dict[str, float], key: str, r_p0: float, grad_proj: list[dict],
                    param_proj: list[dict]) -> list[float]:
    """``R·p`` after each iteration as the original's SGD update (momentum, Nesterov, weight decay) makes it from
    ``R·p0`` and the iterations' gradient projections (the parameter before iteration i > 0 is ``param_proj[i−1]``).

    The update is linear, so the projections follow from the projections: with d = g + wd·p, buf = d (first
    step) or momentum·buf + d, p ← p − lr·(d + momentum·buf) (Nesterov) or p − lr·buf.
    """
    m, wd, a = float(meta["momentum"]), float(meta["weight_decay"]), lr[key.split("/")[0]]
    out, buf, p = [], None, r_p0
    for i, g in enumerate(grad_proj):
        d = float(g[key]) + wd * p
        buf = d if buf is None else m * buf + d
        p = p - a * (d + m * buf if meta["nesterov"] else buf)
        out.append(p)
        p = float(param_proj[i][key])
    return out


class _Checks:
    """Collects every failed comparison (rather than stopping at the first) for one message naming the tier."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def close(self, what: str, mine: dict[str, float], ref: dict[str, float], scale: dict[str, float],
              rtol: float, floor: dict[str, float] | None = None, with_ref: bool = True) -> None:
        """``|mine − ref| ≤ rtol · max(|scale|, |ref|) + floor`` for every key (``rtol · |scale| + floor`` when
        ``with_ref`` is False)."""
        if mine.keys() != ref.keys():
            self.failures.append(f"{what}: keys differ: {sorted(set(mine) ^ set(ref))[:5]}")
            return
        def excess(k):
            size = max(abs(scale[k]), abs(float(ref[k])) if with_ref else 0.0, 1e-12)
            tol = rtol * size + (floor[k] if floor else 0.0)
            return abs(mine[k] - float(ref[k])) / tol
        bad = [k for k in ref if excess(k) > 1.0]
        if bad:
            worst = max(bad, key=excess)
            self.failures.append(f"{what}: {len(bad)} of {len(ref)} outside {rtol:g} relative, e.g. {bad[:3]}; "
                                 f"worst {worst}: {mine[worst]!r} vs {float(ref[worst])!r} ({excess(worst):.3g}× the bound)")

    def value(self, what: str, mine: float, ref: float, rtol: float) -> None:
        self.close(what, {"": mine}, {"": ref}, {"": ref}, rtol)


def _total(norms: dict[str, float]) -> float:
    """The norm of the whole gradient (all parameters) from per-parameter norms."""
    return math.sqrt(sum(float(v) ** 2 for v in norms.values()))


def _median_rel(mine: dict[str, float], ref: dict[str, float]) -> float:
    d = sorted(abs(mine[k] - float(ref[k])) / max(abs(float(ref[k])), 1e-12) for k in ref)
    return d[len(d) // 2]


#: The data's key of each per-look loss term.
_TERM_KEY = {"cls": "loss_cla", "dsn": "loss_dsn"}

#: Bounds of the measured tier (see the module docstring, "Two tiers", for the measurements behind them).
MEASURED = {
    "sgd_ulps": 4.0,          # update identity: float32 rounding of p, in units of 2^-24·|p| (measured ≤ 1.4)
    "fc_grad_proj": 1e-4,     # classifier gradient projections / norm, iteration 0 (measured 1.8e-5)
    "grad_norm0": 3e-2,       # encoder gradient norms, iteration 0 (reference vs float64 ≤ 1.6e-2)
    "grad_proj0": 0.35,       # encoder gradient projections / norm, iteration 0 (reference vs float64 ≤ 0.16)
    "median_grad_norm0": 3e-3,  # median over parameters, iteration 0 (reference vs float64 7.5e-4)
    "total_grad_norm0": 2e-3,   # whole-gradient norm, iteration 0 (reference vs float64 1.8e-4)
    "loss": 1e-2,             # total loss, later iterations (reference vs float64 1.5e-3)
    "terms": 6e-2,            # per-look losses, later iterations (reference vs float64 ≤ 2.7e-2)
    "grad_norm": 0.6,         # per-parameter gradient norms, later iterations (reference vs float64 ≤ 0.28)
    "total_grad_norm": 8e-2,  # whole-gradient norm, later iterations (reference vs float64 3.1e-2)
    "delta_norm": 0.5,        # parameter change norms, later iterations (this CPU vs reference ≤ 0.2)
    "buffer_proj": 0.2,       # running-statistic projections / buffer norm (this CPU vs reference ≤ 5.2e-2)
}


@pytest.mark.parametrize("name", _runs())
def test_train_step_conformance(name, record_property):
    meta, data = _load(name)
    model, cfg = _model_and_config(meta)
    n_iter = len(data["loss"])
    prepare_trainable(model, cfg)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_schedule(optimizer, cfg, steps_per_epoch=n_iter)  # the stored steps lie in one epoch
    for _ in range(int(meta["epoch"]) * n_iter):
        scheduler.step()
    factor = 0.5 * (1.0 + math.cos(math.pi * int(meta["epoch"]) / int(meta["epochs"])))
    lr = {c: float(v) * factor for c, v in meta["lr"].items()}  # the original's rate per component this epoch
    set_train_mode(model, cfg)
    assert model.glance_interpolation == meta["glance_interpolation"]
    stage_loss = StageLoss.from_config(model, cfg)
    params, buffers = _named(model)
    start = {k: p.detach().clone() for k, p in params.items()}
    snapshots: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []  # per iteration: key -> (grad, param)
    assert params.keys() == data["grad_norm"][0].keys()
    assert buffers.keys() == data["buffer_proj"].keys()

    mine: dict[str, list] = {k: [] for k in ("loss", "cls", "dsn", "grad_norm", "param_delta_norm")}
    for i in range(n_iter):
        for g in optimizer.param_groups:
            assert math.isclose(g["lr"], g["initial_lr"] * factor, rel_tol=1e-12), (g["name"], g["lr"])
        images = data["images"][i].float()
        draws = data["actions"][i].transpose(0, 1)  # (T-1, B, 2) -> (B, T-1, 2)
        loss, _ = train_step(stage_loss, images, data["targets"][i], draws, optimizer, scheduler)
        mine["loss"].append(float(loss))
        for term in ("cls", "dsn"):
            mine[term].append(stage_loss.last_terms[term].tolist())
        grads = {k: p.grad for k, p in params.items()}
        assert all(g is not None for g in grads.values()), [k for k, g in grads.items() if g is None][:5]
        mine["grad_norm"].append({k: float(g.norm()) for k, g in grads.items()})
        mine["param_delta_norm"].append({k: float((p.detach() - start[k]).norm()) for k, p in params.items()})
        last = i == n_iter - 1  # earlier iterations' tensors are kept for the projections below
        snapshots.append({k: (g if last else g.clone(), params[k].detach() if last else params[k].detach().clone())
                          for k, g in grads.items()})

    # Projections, one matrix R per key for all iterations (drawing R is the expensive part).
    mine["grad_proj"] = [{} for _ in range(n_iter)]
    mine["param_proj"] = [{} for _ in range(n_iter)]
    start_proj, start_norm = {}, {}
    for k in params:
        r = _proj_matrix(k, params[k].shape)
        start_proj[k], start_norm[k] = _proj(start[k], r), float(start[k].double().norm())
        for i, snap in enumerate(snapshots):
            mine["grad_proj"][i][k], mine["param_proj"][i][k] = _proj(snap[k][0], r), _proj(snap[k][1], r)
    b_norm = {k: float(b.norm()) for k, b in buffers.items()}
    mine["buffer_proj"] = {k: _proj(b, _proj_matrix(k, b.shape)) for k, b in buffers.items()}

    # Tier: the data's float32 summation order is reproduced when the first forward pass gives the stored float32
    # losses bit for bit (the forward is not chaotic and no backward or update bug can change it).
    ref_first = [float(data["loss"][0]), *map(float, meta["loss_cla"][0]), *map(float, meta["loss_dsn"][0])]
    mine_first = [mine["loss"][0], *mine["cls"][0], *mine["dsn"][0]]
    same_order = len(ref_first) == len(mine_first) and all(a == b for a, b in zip(mine_first, ref_first))
    tier = "exact" if same_order else "measured"
    worst_first = max(abs(a - b) / abs(b) for a, b in zip(mine_first, ref_first))
    why = ("the first forward pass reproduces the stored float32 losses bit for bit: the data's summation order"
           if same_order else
           f"the first forward pass differs from the stored float32 losses (up to {worst_first:.1e} relative): "
           f"another float32 summation order (CPU capability {torch.backends.cpu.get_cpu_capability()})")
    message = f"train-step conformance {name}: tier {tier} — {why}"
    print(message)
    record_property("conformance_tier", tier)
    warnings.warn(message, ConformanceTier, stacklevel=1)

    c = _Checks()
    # Both tiers. (1) The first iteration's losses, which the chaos does not reach (measured 2.8e-6).
    c.value("iteration 0 loss", mine["loss"][0], float(data["loss"][0]), RTOL)
    for term in ("cls", "dsn"):
        ref = meta[_TERM_KEY[term]][0]
        c.close(f"iteration 0 {term} losses", dict(enumerate(mine[term][0])), dict(enumerate(ref)),
                dict(enumerate(ref)), RTOL)
    # (2) The update: R·p after every iteration must follow from R·p0 and the gradient projections by the
    # original's SGD, for the reference's numbers (the rule is the original's) and for ours (ours applies it), up
    # to the float32 rounding of p; relative to the change of p itself (not to R·p), so weight decay shows.
    floor = {k: MEASURED["sgd_ulps"] * 2.0 ** -24 * start_norm[k] for k in params}
    for who, src in (("reference", data), ("ours", mine)):
        pred = {k: _sgd_projection(meta, lr, k, start_proj[k], src["grad_proj"], src["param_proj"]) for k in params}
        for i in range(n_iter):
            c.close(f"iteration {i} SGD update of the {who} gradients", {k: pred[k][i] for k in params},
                    src["param_proj"][i], data["param_delta_norm"][i], RTOL, floor, with_ref=False)
    # (3) The classifier's first gradient (no batch norm upstream of it in the backward pass).
    fc = [k for k in params if k.startswith("fc/")]
    def sub(d):
        return {k: d[k] for k in fc}

    c.close("iteration 0 classifier grad_norm", sub(mine["grad_norm"][0]), sub(data["grad_norm"][0]),
            sub(mine["grad_norm"][0]), RTOL)

    if tier == "exact":
        for i in range(n_iter):
            c.value(f"iteration {i} loss", mine["loss"][i], float(data["loss"][i]), RTOL)
            for term in ("cls", "dsn"):
                ref = meta[_TERM_KEY[term]][i]
                c.close(f"iteration {i} {term} losses", dict(enumerate(mine[term][i])), dict(enumerate(ref)),
                        dict(enumerate(ref)), RTOL)
            c.close(f"iteration {i} grad_norm", mine["grad_norm"][i], data["grad_norm"][i], mine["grad_norm"][i],
                    RTOL)
            c.close(f"iteration {i} param_delta_norm", mine["param_delta_norm"][i], data["param_delta_norm"][i],
                    mine["param_delta_norm"][i], RTOL)
            c.close(f"iteration {i} grad_proj", mine["grad_proj"][i], data["grad_proj"][i], data["grad_norm"][i],
                    RTOL)
            c.close(f"iteration {i} param_proj", mine["param_proj"][i], data["param_proj"][i],
                    data["param_delta_norm"][i], RTOL)
        c.close("buffer_proj", mine["buffer_proj"], data["buffer_proj"], b_norm, RTOL)
    else:
        # The chaotic quantities, within bounds measured against a float64 run of the same step.
        M = MEASURED
        c.close("iteration 0 classifier grad_proj", sub(mine["grad_proj"][0]), sub(data["grad_proj"][0]),
                sub(data["grad_norm"][0]), M["fc_grad_proj"])
        c.close("iteration 0 grad_norm", mine["grad_norm"][0], data["grad_norm"][0], mine["grad_norm"][0],
                M["grad_norm0"])
        c.close("iteration 0 grad_proj", mine["grad_proj"][0], data["grad_proj"][0], data["grad_norm"][0],
                M["grad_proj0"])
        c.close("iteration 0 param_delta_norm", mine["param_delta_norm"][0], data["param_delta_norm"][0],
                mine["param_delta_norm"][0], M["grad_norm0"])
        c.value("iteration 0 median grad_norm difference", 1.0 + _median_rel(mine["grad_norm"][0],
                data["grad_norm"][0]), 1.0, M["median_grad_norm0"])
        c.value("iteration 0 whole-gradient norm", _total(mine["grad_norm"][0]), _total(data["grad_norm"][0]),
                M["total_grad_norm0"])
        for i in range(1, n_iter):
            c.value(f"iteration {i} loss", mine["loss"][i], float(data["loss"][i]), M["loss"])
            for term in ("cls", "dsn"):
                ref = meta[_TERM_KEY[term]][i]
                c.close(f"iteration {i} {term} losses", dict(enumerate(mine[term][i])), dict(enumerate(ref)),
                        dict(enumerate(ref)), M["terms"])
            c.close(f"iteration {i} grad_norm", mine["grad_norm"][i], data["grad_norm"][i], mine["grad_norm"][i],
                    M["grad_norm"])
            c.value(f"iteration {i} whole-gradient norm", _total(mine["grad_norm"][i]), _total(data["grad_norm"][i]),
                    M["total_grad_norm"])
            c.close(f"iteration {i} param_delta_norm", mine["param_delta_norm"][i], data["param_delta_norm"][i],
                    mine["param_delta_norm"][i], M["delta_norm"])
        c.close("buffer_proj", mine["buffer_proj"], data["buffer_proj"], b_norm, M["buffer_proj"])

    assert not c.failures, f"tier {tier} ({why}):\n" + "\n".join(c.failures)
