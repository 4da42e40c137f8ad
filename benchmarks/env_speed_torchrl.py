"""Env-steps/s of the faces of one GFNet core: the TorchRL env, the Gymnasium vector env, the SB3 adapter.

Every face steps the same networks over the same images with the same pre-drawn random actions (N envs, K batched
steps after a warm-up, episodes auto-reset as each face does it). Lines:

* ``torchrl``     — :func:`gfnet_env.make_torchrl_env`, ``env.step_and_maybe_reset`` (what collectors call);
  observations stay device tensors, actions are device tensors;
* ``gymwrapper``  — TorchRL's ``GymWrapper`` over the Gymnasium vector env with ``tensor_obs=True`` (the
  alternative to the native env: the wrapper converts Gymnasium's outputs to a TensorDict);
* ``vector``      — ``gym.make_vec(..., vectorization_mode="vector_entry_point")``: numpy observations on the host;
* ``vector-torch``— the same with ``tensor_obs=True``: observations as device tensors;
* ``sb3``         — :func:`gfnet_env.make_sb3_vec_env` (``step_async`` + ``step_wait``; numpy on the host);
* ``core``        — the bare batched core (``core.step`` + ``observe(as_tensor=True)`` + same-step resets): the
  floor every face adds its overhead to.

Last lines: ``ratio_torchrl_vector=…``, ``ratio_torchrl_sb3=…``, ``ratio_torchrl_gymwrapper=…`` (torchrl's rate over
the other's, measured in this one run).

Example::

    python benchmarks/env_speed_torchrl.py                                   # CPU, embedded task, 64 envs
    python benchmarks/env_speed_torchrl.py --device cuda --num-envs 256      # GPU line (gpu_suite.sh)
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import gfnet_env

ENV_ID = "GFNet-ClutteredFashionMNIST-v0"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default=ENV_ID)
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--steps", type=int, default=200, help="batched steps timed per face (after a warm-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--obs-mode", default="feature_map")
    p.add_argument("--action-mode", default="grid")
    p.add_argument("--faces", default="core,torchrl,gymwrapper,vector,vector-torch,sb3",
                   help="comma-separated faces to time")
    p.add_argument("--env-kwarg", action="append", default=[], metavar="K=V",
                   help="more env arguments (strings; e.g. checkpoint=PATH data_root=ROOT)")
    return p.parse_args(argv)


def draw_actions(space, steps: int, n: int, seed: int = 0) -> np.ndarray:
    """(steps, N, ...) random actions of the single action space (grid cells, or continuous boxes)."""
    rng = np.random.default_rng(seed)
    if hasattr(space, "n"):
        return rng.integers(0, int(space.n), (steps, n))
    return rng.uniform(space.low, space.high, (steps, n, *space.shape)).astype(np.float32)


def rate(step, steps: int, n: int, warmup: int) -> float:
    """Env-steps/s of ``step(k)`` over batched steps ``warmup .. warmup + steps``."""
    for k in range(warmup):
        step(k)
    t = time.perf_counter()
    for k in range(warmup, warmup + steps):
        step(k)
    return steps * n / (time.perf_counter() - t)


def time_face(face: str, args, kwargs: dict, acts: np.ndarray, warmup: int) -> float:
    n, dev = args.num_envs, args.device
    if face == "core":
        from gfnet_env.factory import make_core

        core = make_core(args.env, n, device=dev, **kwargs)
        core.seed_slot(0, 0)
        core.reset_slots(np.arange(n))
        acts_dev = torch.as_tensor(acts, device=core.device)

        def step(k):
            _, term, _ = core.step(acts_dev[k])
            core.observe(as_tensor=True)
            if term.any():
                core.reset_slots(np.flatnonzero(term))

        try:
            return rate(step, args.steps, n, warmup)
        finally:
            core.close()
    if face in ("torchrl", "gymwrapper"):
        if face == "torchrl":
            env = gfnet_env.make_torchrl_env(args.env, num_envs=n, device=dev, seed=0, **kwargs)
        else:
            from torchrl.envs.libs.gym import GymWrapper

            venv = gym.make_vec(args.env, num_envs=n, vectorization_mode="vector_entry_point", device=dev,
                                tensor_obs=True, **kwargs)
            env = GymWrapper(venv, device=dev, categorical_action_encoding=True)
            env.set_seed(0)
        acts_dev = torch.as_tensor(acts, device=env.device)
        state = {"td": env.reset()}

        def step(k):
            td = state["td"]
            td.set("action", acts_dev[k])
            _, state["td"] = env.step_and_maybe_reset(td)

        try:
            return rate(step, args.steps, n, warmup)
        finally:
            env.close()
    if face in ("vector", "vector-torch"):
        venv = gym.make_vec(args.env, num_envs=n, vectorization_mode="vector_entry_point", device=dev,
                            tensor_obs=face == "vector-torch", **kwargs)
        venv.reset(seed=0)
        batch = torch.as_tensor(acts, device=venv.core.device) if face == "vector-torch" else acts
        try:
            return rate(lambda k: venv.step(batch[k]), args.steps, n, warmup)
        finally:
            venv.close()
    if face == "sb3":
        vec = gfnet_env.make_sb3_vec_env(args.env, n_envs=n, device=dev, seed=0, monitor=False, **kwargs)
        vec.reset()
        try:
            return rate(lambda k: vec.step(acts[k]), args.steps, n, warmup)
        finally:
            vec.close()
    raise ValueError(f"unknown face {face!r}")


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    kwargs = dict(obs_mode=args.obs_mode, action_mode=args.action_mode)
    kwargs.update(kv.split("=", 1) for kv in args.env_kwarg)
    gfnet_env.keep_freed_memory()
    from gfnet_env.factory import make_core

    with make_core(args.env, 1, device=args.device, **kwargs) as probe:
        space, T = probe.action_space, probe.max_steps
    warmup = 2 * T
    acts = draw_actions(space, warmup + args.steps, args.num_envs)
    faces = [f.strip() for f in args.faces.split(",") if f.strip()]
    rates = {face: time_face(face, args, kwargs, acts, warmup) for face in faces}
    print(f"{args.env}, obs_mode={args.obs_mode}, action_mode={args.action_mode}, {args.num_envs} envs, "
          f"{args.steps} batched steps, device {args.device} ({torch.get_num_threads()} torch threads)")
    for face, r in rates.items():
        print(f"{face:13s} {r:9.1f} env-steps/s")
    for other in ("vector", "sb3", "gymwrapper"):
        if "torchrl" in rates and other in rates:
            print(f"ratio_torchrl_{other}={rates['torchrl'] / rates[other]:.2f}")
    return rates


if __name__ == "__main__":
    main()
