"""Stage 2 of GFNet training: the paper's PPO for the patch policy on the frozen networks of an env.

The algorithm is docs/training.md, "Stage 2: policy (PPO)"; the update itself is :mod:`agents.paper_ppo.ppo`.
One iteration per batch of B images:

1. the next B images: each epoch of the split is a permutation seeded by (seed, epoch), so a resumed run sees
   the same images in the same order;
2. one :func:`gfnet_env.rollout.rollout` of them on a batched env core (glance + T − 1 focus steps) with the
   policy sampling its actions; the rollout memory receives states, actions, log-probs and rewards;
3. one :func:`~agents.paper_ppo.ppo.ppo_update`.

What the run records goes through one :class:`~agents.run_log.RunLog`, closed however the run ends: a row of
``progress.csv`` and the TensorBoard scalars of every batch, the progress bar, and, a few times per run (at its
start, after every fifth of the batches and at the end), a picture of deterministic episodes on the first
``episode_images`` images of the evaluation split (tag ``episodes/looks``, :mod:`agents.episode_images`).

The env is stepped only through its public API (:func:`gfnet_env.factory.make_core` and
:func:`gfnet_env.rollout.rollout`); the networks stay frozen, only the policy learns.

``stop=True`` trains ``paper-ppo-stop`` the same way: a :class:`~feature_nets.policy.StopPatchPolicy` (a Bernoulli
stop head beside the Gaussian) on an env with the stop action (``stop_action=True``, forced); episodes then end at
different steps, and the memory's masks keep the steps after an episode's end out of the update
(:mod:`agents.paper_ppo.ppo`). Give the looks a price with ``step_cost`` (reward per multiply-add), or stopping
never pays.

Under torchrun (``torchrun --nproc-per-node N $(which gfnet) train-policy ...``; docs/training.md, "Stage 2 on N
processes") each of the N ranks rolls out its share of every batch of B images (images r, r + N, … of it, so B/N
each; B must be a multiple of N) on its own device (``cuda:LOCAL_RANK``, else the CPU with gloo) with its own
action noise, computes the PPO loss over its episodes (returns normalised over them) and the gradients are
averaged over the ranks before every Adam step (:func:`feature_nets.training.distributed.average_gradients`), so
the replicas stay equal; the logged rows are over all B episodes, and rank 0 alone writes the run folder (the
latest save holds every rank's noise state: a run resumes with the same N). One process is exactly the
one-process loop above.

Resume is exact after Ctrl-C as after ``kill -9``: ``paper_ppo_latest.pt`` is only ever written with the state
of a batch boundary (an interrupted batch is rolled back to its start before the save), atomically; every row
of ``progress.csv`` is flushed as a whole, and resuming truncates the file to the resumed batch count (dropping
a torn last row or rows of batches redone).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_nets.policy import PatchPolicy, StopPatchPolicy

from ..run_log import RunLog
from ..trained import settings_changes, settings_refusal, write_agent_json
from .files import AGENT_FILE, LATEST_FILE, load_policy_blob, write_policy_file
from .ppo import RolloutMemory, make_optimizer, ppo_update

__all__ = ["TrainedPolicy", "collect_rollout", "train_policy"]

#: Registry name the run's ``agent.json`` records (``paper-ppo-stop`` for ``stop=True``).
AGENT_NAME = "paper-ppo"
STOP_AGENT_NAME = "paper-ppo-stop"


@dataclass
class TrainedPolicy:
    """What a training run produced (also written to its folder).

    Attributes:
        policy: the trained :class:`~feature_nets.policy.PatchPolicy` (on ``device``).
        device: where it was trained.
        metadata: the run's settings and size (env id and kwargs, seed, steps, batches, learning rate, …).
    """

    policy: PatchPolicy
    device: torch.device
    metadata: dict


def _image_order(seed: int, n_images: int, start: int, count: int) -> tuple[list[int], int]:
    """Dataset indices of stream positions start..start+count−1: each epoch is a fresh permutation,
    a pure function of (seed, epoch), so a resumed run sees the same images. Returns (indices, epoch of start)."""
    out, perms = [], {}
    for pos in range(start, start + count):
        epoch = pos // n_images
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, epoch]).permutation(n_images)
        out.append(int(perms[epoch][pos % n_images]))
    return out, start // n_images


def _picture_batches(n_batches: int, times: int = 5) -> set[int]:
    """Batch counts after which a run of ``n_batches`` draws its episode pictures: every ``1/times`` of the
    run, the last batch included (fewer when ``n_batches < times``); the start is drawn separately."""
    return {max(1, round(k * n_batches / times)) for k in range(1, times + 1)}


def _mean_actor(policy: PatchPolicy, device) -> Callable[[Any], np.ndarray]:
    """A fresh ``obs -> actions`` function of ``policy``'s mean action (one picture's episodes: the recurrent
    state starts empty). Not :class:`~agents.paper_ppo.agent.PaperPPOAgent`: that module imports this one."""
    hidden = None

    @torch.no_grad()
    def act(obs) -> np.ndarray:
        nonlocal hidden
        fmap = torch.as_tensor(np.asarray(obs)).to(device).float()
        mean, hidden = policy.mean_action(fmap, hidden)
        return mean.float().cpu().numpy()

    return act


def collect_rollout(core, policy: PatchPolicy, generator: torch.Generator, indices: list[int],
                    memory: RolloutMemory):
    """One batch of episodes with sampled actions; fills ``memory`` and returns the
    :class:`~gfnet_env.rollout.Rollout`.

    Before each focus step the policy reads the previous feature map (B, C, h, w) as a tensor on the core's
    device, samples an action from its Gaussian (std 0.1), clamped to [0, 1] (log-prob of the clamped
    action), and the env returns p_t(y) − p_{t−1}(y). The memory gets one entry per step: states
    (B, C, h, w), actions (B, 2), log-probs (B,) and rewards (1, B).

    A :class:`~feature_nets.policy.StopPatchPolicy` acts with (B, 3) actions (the third: stop, 0 or 1), and its
    episodes end at different steps: the memory then also gets masks (1, B) per step, 1 where the episode was
    running when the policy acted, and every list is padded to T − 1 entries when all episodes ended sooner.
    """
    from gfnet_env.rollout import rollout

    hidden = policy.initial_state(len(indices), device=core.device)

    def act(state: torch.Tensor) -> torch.Tensor:
        nonlocal hidden
        with torch.no_grad():
            mean, _value, hidden = policy.step(state, hidden)
        action, logprob = policy.sample(mean, generator=generator)
        memory.states.append(state)
        memory.actions.append(action)
        memory.logprobs.append(logprob)
        return action  # stays on the device: the core takes tensor actions

    start = len(memory.states)
    episodes = rollout(core, act, indices, as_tensor=True)
    for rewards in episodes.rewards:  # (T − 1, B) → one (1, B) tensor per step
        memory.rewards.append(torch.as_tensor(rewards, device=core.device).view(1, len(indices)))
    if isinstance(policy, StopPatchPolicy):
        n_steps = episodes.rewards.shape[0]
        for _ in range(n_steps - (len(memory.states) - start)):  # every episode ended early: pad (masked out)
            memory.states.append(memory.states[-1])
            memory.actions.append(memory.actions[-1])
            memory.logprobs.append(memory.logprobs[-1])
        # decision t ran while t < looks taken, and at t = looks taken where the policy stopped there
        ran_until = torch.as_tensor(episodes.exit_step + episodes.stopped.astype(np.int64), device=core.device)
        for t in range(n_steps):
            memory.masks.append((t < ran_until).float().view(1, len(indices)))
    return episodes


def _checked_env_kwargs(steps: int, batch_size: int, episode_images: int, env_kwargs: dict, stop: bool = False) -> dict:
    """Refuse arguments the loop cannot train with; return the env kwargs it trains on (``split`` defaults to
    ``train``; ``obs_mode`` / ``action_mode`` / ``action_range`` / ``stop_action`` fixed to what the policy reads
    and emits)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (returns are normalised over the batch), got {batch_size}")
    if isinstance(episode_images, bool) or int(episode_images) != episode_images or episode_images < 0:
        raise ValueError(f"episode_images must be an int >= 0 (0: none), got {episode_images!r}")
    env_kwargs = dict(env_kwargs)
    env_kwargs.setdefault("split", "train")
    name = STOP_AGENT_NAME if stop else AGENT_NAME
    fixed = [("obs_mode", "feature_map"), ("action_mode", "continuous")]
    if stop:
        fixed += [("action_range", "unit"), ("stop_action", True)]
    elif env_kwargs.get("stop_action"):
        raise ValueError(f"paper-ppo never stops; train {STOP_AGENT_NAME} for an env with the stop action")
    for key, want in fixed:
        if env_kwargs.get(key, want) != want:
            raise ValueError(f"{name} trains on {key}={want!r}, got {env_kwargs[key]!r}")
        env_kwargs[key] = want
    if env_kwargs.get("early_exit") is not None:
        raise ValueError("paper-ppo rollouts have a fixed length: leave early_exit unset for training")
    return env_kwargs


@dataclass
class _Learner:
    """What a batch boundary fixes: the policy, its optimiser and its action noise (saved, restored, resumed)."""

    policy: PatchPolicy
    optimizer: torch.optim.Optimizer
    generator: torch.Generator

    @classmethod
    def start(cls, core, init_policy: PatchPolicy | None, lr: float, seed: int, stop: bool = False) -> "_Learner":
        """A copy of ``init_policy`` or a fresh policy sized to the core's feature map (drawn from torch's global
        generator, seeded by the caller), Adam, and the noise generator seeded with ``seed``, on the core's device.
        ``stop``: a :class:`~feature_nets.policy.StopPatchPolicy` (a plain ``init_policy`` gets a fresh stop head)."""
        if init_policy is not None:
            policy = copy.deepcopy(init_policy).requires_grad_(True)  # a loaded checkpoint's policy comes frozen
            if stop and not isinstance(policy, StopPatchPolicy):
                policy = StopPatchPolicy.from_policy(policy)
            elif not stop and isinstance(policy, StopPatchPolicy):
                raise ValueError(f"init_policy has a stop head: train {STOP_AGENT_NAME} (stop=True) with it")
        else:
            cfg, (c, h, _w) = core.model.spec.config, core.model.feature_map_shape
            policy = (StopPatchPolicy if stop else PatchPolicy)(c, h, cfg.policy_hidden_dim, cfg.policy_conv)
        policy.to(core.device)
        return cls(policy, make_optimizer(policy, lr=lr), torch.Generator(device=core.device).manual_seed(seed))

    def load(self, path: Path, rank: int = 0, world: int = 1) -> dict:
        """Continue from the latest save at ``path``; returns the file's dict (``batches_done``, ``metadata``, …).
        Rank ``rank`` of ``world`` takes its own noise state (a save of N processes holds N)."""
        blob = load_policy_blob(path)  # the trust gate, as for every file
        saved = blob.get("generators") or [blob["generator"]]
        if len(saved) != world:
            raise ValueError(f"{path} was saved by a run on {len(saved)} process(es); resume it on as many "
                             f"(torchrun --nproc-per-node {len(saved)}), not {world}")
        self.policy.load_state_dict(blob["policy_state_dict"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.generator.set_state(saved[rank].to(self.generator.get_state().device))
        return blob

    def set_lr(self, lr: float) -> None:
        """Adam's learning rate from now on (loading its state restores the saved one)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def save(self, path: Path, meta: dict, batches_done: int, images_done: int, env_steps_done: int,
             rank: int = 0, world: int = 1) -> None:
        """Write the resumable save atomically; only ever called at a batch boundary, so weights, Adam and noise
        state are all those after ``batches_done`` (which took ``images_done`` images and ``env_steps_done`` steps).
        On N processes every rank calls it (the noise states of all ranks are gathered) and rank 0 writes."""
        noise = self.generator.get_state().cpu()
        extra = {}
        if world > 1:
            from feature_nets.training.distributed import gather_objects

            extra["generators"] = gather_objects(noise)
        if rank == 0:
            write_policy_file(self.policy, path, meta, optimizer=self.optimizer.state_dict(), generator=noise,
                              batches_done=batches_done, images_done=images_done, env_steps_done=env_steps_done,
                              **extra)

    def snapshot(self) -> tuple:
        """Copies of the weights, the optimiser state and the noise generator's state (a batch boundary)."""
        return ({k: v.detach().clone() for k, v in self.policy.state_dict().items()},
                copy.deepcopy(self.optimizer.state_dict()), self.generator.get_state())

    def restore(self, snapshot: tuple) -> None:
        weights, optim, noise = snapshot
        self.policy.load_state_dict(weights)
        self.optimizer.load_state_dict(optim)
        self.generator.set_state(noise)


@dataclass
class _Plan:
    """The run's fixed settings: sizes, PPO constants, where it saves and what it records."""

    env_id: str
    env_kwargs: dict
    out_dir: Path
    seed: int
    batch_size: int
    n_steps: int      # focus steps per episode (T − 1)
    n_batches: int
    start: int        # batches already done (a resumed run)
    gamma: float
    clip: float
    epochs: int
    save_every: int
    meta: dict        # the settings recorded in every policy file
    stop: bool = False  # paper-ppo-stop: also records the looks taken per episode
    images_before: int = 0  # images and env steps of the batches before ``start`` (made with the saved batch size,
    steps_before: int = 0   # which a resume with --force-settings may have changed)
    rank: int = 0     # torchrun: this process's rank of ``world``; it rolls out images rank, rank + world, … of a batch
    world: int = 1

    @property
    def main(self) -> bool:
        """The process that writes the run folder (rank 0)."""
        return self.rank == 0

    @property
    def per_batch(self) -> int:
        return self.batch_size * self.n_steps

    def images_at(self, batch: int) -> int:
        """Images drawn before batch number ``batch`` (from 0): where its images start in the seeded order."""
        return self.images_before + (batch - self.start) * self.batch_size

    def steps_at(self, batch: int) -> int:
        """Env steps made by the first ``batch`` batches."""
        return self.steps_before + (batch - self.start) * self.per_batch

    @property
    def latest(self) -> Path:
        return self.out_dir / LATEST_FILE

    def csv_fields(self) -> list[str]:
        return ["batch", "env_steps", "mean_return", "loss", "policy_loss", "value_loss", "clip_fraction",
                "seconds"] + [f"accuracy_step_{t}" for t in range(self.n_steps + 1)] + \
            (["mean_looks", "stopped"] if self.stop else [])


def _one_batch(plan: _Plan, learner: _Learner, core, memory: RolloutMemory, batch: int, t0: float) -> dict:
    """Steps 1–3 of the module docstring for batch number ``batch`` (from 0); returns its ``progress.csv`` row."""
    # 1. the next B images
    dataset = core.dataset
    indices, epoch = _image_order(plan.seed, len(dataset), plan.images_at(batch), plan.batch_size)
    if hasattr(dataset, "set_epoch") and getattr(dataset, "epoch", epoch) != epoch:
        dataset.set_epoch(epoch)
    # 2. the rollout: T − 1 focus steps with sampled actions (this rank's share of the batch)
    episodes = collect_rollout(core, learner.policy, learner.generator, indices[plan.rank::plan.world], memory)
    # 3. one PPO update (gradients averaged over the ranks before the step)
    average = None
    if plan.world > 1:
        from feature_nets.training.distributed import average_gradients as average
    stats = ppo_update(learner.policy, learner.optimizer, memory, gamma=plan.gamma, clip=plan.clip,
                       epochs=plan.epochs, before_step=average)
    memory.clear()
    correct = episodes.probs.argmax(-1) == episodes.targets[None]
    returns, exit_step, stopped = episodes.returns, episodes.exit_step, episodes.stopped
    if plan.world > 1:  # the row describes the whole batch: every rank's episodes, the ranks' mean losses
        from feature_nets.training.distributed import gather_objects

        parts = gather_objects((correct, returns, exit_step, stopped, stats))
        correct = torch.cat([p[0] for p in parts], 1)
        returns, exit_step, stopped = (np.concatenate([p[k] for p in parts]) for k in (1, 2, 3))
        stats = {k: float(np.mean([p[4][k] for p in parts])) for k in stats}
    row = {"batch": batch + 1, "env_steps": plan.steps_at(batch + 1),
           "mean_return": float(returns.mean()), "loss": stats["loss"],
           "policy_loss": stats["policy_loss"], "value_loss": stats["value_loss"],
           "clip_fraction": stats["clip_fraction"], "seconds": time.perf_counter() - t0}
    row.update({f"accuracy_step_{t}": c for t, c in enumerate(correct.double().mean(1).tolist())})
    if plan.stop:  # how many looks the episodes took, and the share that ended by the stop action
        row.update(mean_looks=float(exit_step.mean()), stopped=float(stopped.mean()))
    return row


def _log_batch(log: RunLog, row: dict, n_steps: int) -> None:
    """A finished batch's TensorBoard scalars (``train/…``) and progress bar (mean return, last-step accuracy)."""
    keys = ["mean_return", "loss", "policy_loss", "value_loss", "clip_fraction"]
    keys += [f"accuracy_step_{t}" for t in range(n_steps + 1)] + [k for k in ("mean_looks", "stopped") if k in row]
    log.add_scalars({f"train/{key}": row[key] for key in keys}, row["env_steps"])
    log.advance(row["env_steps"], ret=f"{row['mean_return']:.3f}", acc=f"{row[f'accuracy_step_{n_steps}']:.3f}")


def _draw(log: RunLog, policy: PatchPolicy, device, step: int) -> None:
    """The episode picture of the live policy's mean action at ``step`` (in eval mode, restored after)."""
    was_training = policy.training
    policy.eval()
    try:
        log.picture(_mean_actor(policy, device), step)
    finally:
        policy.train(was_training)


def _train_batches(plan: _Plan, learner: _Learner, core, log: RunLog, episode_images: int) -> None:
    """The loop: one rollout and one PPO update per batch, each finished batch logged; pictures at the start, after
    every fifth of the batches and at the end; the resumable save every ``save_every`` batches.

    Never loses a long run: the last batch boundary is saved, also on a crash or Ctrl-C (a batch interrupted
    midway is rolled back to its start first: its rollout drew noise, its update moved weights).
    """
    from ..episode_images import evaluation_core

    memory = RolloutMemory()
    done = plan.start  # batches whose update is complete; the state is consistent with it outside a batch
    snapshot = None  # the state at the start of the batch in progress
    draw_at = _picture_batches(plan.n_batches)
    t0 = time.perf_counter()
    try:
        if episode_images and plan.main and plan.start < plan.n_batches:
            # the training networks and settings, no second copy; it draws no random numbers, so a resumed run
            # trains exactly as an uninterrupted one
            log.open_pictures(evaluation_core(plan.env_id, plan.env_kwargs, int(episode_images), model=core.model,
                                              device=core.device), int(episode_images))
            _draw(log, learner.policy, core.device, plan.steps_before)  # the policy the run starts from
        for batch in range(plan.start, plan.n_batches):
            snapshot = learner.snapshot()
            row = _one_batch(plan, learner, core, memory, batch, t0)
            if plan.main:
                log.write_row(row)
            done, snapshot = batch + 1, None  # a batch boundary again
            if plan.main:
                _log_batch(log, row, plan.n_steps)
                if done in draw_at:
                    _draw(log, learner.policy, core.device, row["env_steps"])
            if done % plan.save_every == 0:
                learner.save(plan.latest, plan.meta, done, plan.images_at(done), plan.steps_at(done), plan.rank,
                             plan.world)
    finally:
        memory.clear()
        if snapshot is not None:
            learner.restore(snapshot)
        learner.save(plan.latest, plan.meta, done, plan.images_at(done), plan.steps_at(done), plan.rank, plan.world)


def _resume(plan: _Plan, learner: _Learner, blob: dict, lr: float, steps: int, force: bool) -> None:
    """Continue ``plan`` from the loaded save ``blob``: check the settings against the saved ones (refused unless
    ``force``; forced ones applied and recorded) and place the run after its saved batches."""
    saved = blob.get("metadata") or {}
    changes = settings_changes(saved, plan.meta)
    if changes and not force:
        raise settings_refusal(changes, f"the run saved in {plan.latest}")
    done = int(blob["batches_done"])
    old_batch = int(saved.get("batch_size", plan.batch_size))
    plan.start = done
    plan.images_before = int(blob.get("images_done", done * old_batch))
    plan.steps_before = int(blob.get("env_steps_done", done * old_batch * plan.n_steps))
    plan.n_batches = done + max(0, math.ceil((steps - plan.steps_before) / plan.per_batch))
    history = list(saved.get("forced_settings") or [])
    if changes:
        learner.set_lr(lr)
        history.append({"batch": done, "env_steps": plan.steps_before,
                        "changed": {k: {"saved": old, "now": new} for k, (old, new) in changes.items()}})
        print(f"--force-settings: from batch {done + 1} on, " + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new)
                                                                       in changes.items()))
    if history:
        plan.meta["forced_settings"] = history


def _open_logs(log: RunLog, plan: _Plan, resume: bool, progress: bool) -> None:
    """TensorBoard (events of batches a resumed run redoes hidden), ``progress.csv`` (truncated to the resumed
    batches) and the progress bar."""
    log.open_tensorboard(purge_step=plan.steps_before if plan.start else None)
    log.open_csv(plan.csv_fields(), keep_rows=plan.start if resume else None)
    if progress:
        log.open_progress(plan.steps_at(plan.n_batches), plan.steps_before,
                          desc=STOP_AGENT_NAME if plan.stop else AGENT_NAME)


def train_policy(
    env_id: str,
    steps: int,
    out_dir,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 3e-4,
    init_policy: PatchPolicy | None = None,
    resume: bool = False,
    force_settings: bool = False,
    device: str = "auto",
    gamma: float = 0.7,
    clip: float = 0.2,
    epochs: int = 1,
    save_every: int = 50,
    progress: bool = False,
    episode_images: int = 4,
    stop: bool = False,
    on_start: Callable[[], None] | None = None,
    **env_kwargs,
) -> TrainedPolicy:
    """Train the paper's policy with its PPO on the frozen networks of ``env_id``.

    Loop, one iteration per batch of B images (B = ``batch_size``): the next B images (epochs are seeded
    permutations of the split), one :func:`collect_rollout` of T − 1 focus steps, one :func:`ppo_update`
    (γ = 0.7, clip 0.2, ``epochs`` = 1, Adam ``lr``).

    Args:
        env_id: a GFNet env id (``GFNet-ImageNet-v0``, ``GFNet-ClutteredFashionMNIST-v0``).
        steps: env steps to train for; one batch uses B·(T − 1), so ⌈steps / (B·(T−1))⌉ updates are made.
        out_dir: TensorBoard logs (``tensorboard/``), ``progress.csv``, the resumable ``paper_ppo_latest.pt``
            (every ``save_every`` updates, at the end and on any crash), the final ``paper_ppo.pt`` and
            ``agent.json``.
        seed: seeds the fresh policy's weights, the image order and the action noise.
        init_policy: start from a copy of this policy (e.g. a checkpoint's ``model.policy``) instead of a fresh one.
        resume: continue from ``out_dir/paper_ppo_latest.pt`` (exactly: weights, Adam state, image stream, noise;
            after Ctrl-C or ``kill -9`` alike), truncating ``progress.csv`` to the resumed batches. Settings that
            differ from the saved run's (``seed``, ``batch_size``, ``lr``, env, …; ``steps`` may grow) are refused,
            naming them, unless ``force_settings``.
        force_settings: resume with other settings anyway: they apply from the resumed batch on (the new ``lr`` in
            Adam, the new ``batch_size`` for the remaining batches, the new ``seed`` ordering their images; the
            action noise continues its saved stream), and each such resume is recorded in the metadata under
            ``forced_settings`` (the batch, the env steps and every changed setting, saved and new).
        device: torch device of the networks and the policy.
        progress: show a tqdm progress bar.
        episode_images: images of the evaluation split (``val``; a ``dataset=``'s own first images) drawn with
            the policy's deterministic episodes to TensorBoard (``episodes/looks``) at the start, after every
            fifth of the batches and at the end; 0: none.
        **env_kwargs: env arguments (``checkpoint=``, ``data_root=``, ``dataset=``, ``max_steps=``, ``reward=``, …);
            ``split`` defaults to ``"train"`` (not the env's evaluation split); ``obs_mode`` / ``action_mode`` are
            fixed to ``feature_map`` / ``continuous``.
        stop: train ``paper-ppo-stop``: a :class:`~feature_nets.policy.StopPatchPolicy` on the env with the stop
            action (``stop_action=True`` and the unit action range, forced); give ``step_cost`` > 0.
        on_start: called once the inputs are checked (env, policy, the state resumed), just before anything is
            written into ``out_dir`` (``gfnet train-agent`` marks the folder unfinished there).

    Under torchrun (``WORLD_SIZE`` = N > 1) ``batch_size`` is the global batch B (a multiple of N; B/N images per
    rank), ``device`` each rank's (``cuda:LOCAL_RANK`` for ``auto``), and only rank 0 writes ``out_dir`` (module
    docstring); every rank returns the same policy.

    Returns:
        :class:`TrainedPolicy` (:func:`agents.paper_ppo.agent.train_paper_ppo` wraps it as an agent).
    """
    from feature_nets.training.distributed import torchrun_group

    env_kwargs = _checked_env_kwargs(steps, batch_size, episode_images, env_kwargs, stop=stop)
    out_dir = Path(out_dir)
    with torchrun_group(device) as group:  # torchrun's ranks (one process: None)
        rank, world = (group.rank, group.world_size) if group is not None else (0, 1)
        if world > 1:
            if batch_size % world:
                raise ValueError(f"batch_size {batch_size} is the global batch of the {world} processes: give a "
                                 f"multiple of {world} (each rank rolls out batch_size / {world} images)")
            device = str(group.device)
        if rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
        policy, plan, trained_on = _train(env_id, steps, out_dir, seed, batch_size, lr, init_policy, resume,
                                          force_settings, device, gamma, clip, epochs, save_every,
                                          progress and rank == 0, episode_images if rank == 0 else 0, stop,
                                          on_start if rank == 0 else None, env_kwargs, rank, world)
    metadata = {**plan.meta, "batches": plan.n_batches, "env_steps": plan.steps_at(plan.n_batches)}
    if rank == 0:
        write_policy_file(policy, out_dir / AGENT_FILE, metadata)
        write_agent_json(out_dir, STOP_AGENT_NAME if stop else AGENT_NAME, AGENT_FILE, env_id=env_id,
                         env_kwargs=env_kwargs, seed=seed, steps=steps)
    return TrainedPolicy(policy, trained_on, metadata)


def _train(env_id, steps, out_dir, seed, batch_size, lr, init_policy, resume, force_settings, device, gamma, clip,
           epochs, save_every, progress, episode_images, stop, on_start, env_kwargs, rank, world):
    """:func:`train_policy` on this process (rank ``rank`` of ``world``) once its inputs are checked: returns the
    trained policy, the run's plan and the device it trained on."""
    from gfnet_env.factory import make_core, task_of

    torch.manual_seed(seed)  # the fresh policy's weights: the same on every rank
    core = make_core(task_of(env_id), batch_size // world, device=device, **env_kwargs)
    try:
        # the action noise: the seed itself in one process (and on rank 0), a stream of its own on every other rank
        noise_seed = seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
        learner = _Learner.start(core, init_policy, lr, noise_seed, stop=stop)
        n_steps = core.max_steps
        meta = {"env_id": env_id, "env_kwargs": env_kwargs, "seed": seed, "steps": steps, "batch_size": batch_size,
                "lr": lr, "gamma": gamma, "clip": clip, "epochs": epochs}
        if world > 1:
            meta["processes"] = world
        plan = _Plan(env_id, env_kwargs, out_dir, seed, batch_size, n_steps,
                     n_batches=max(1, math.ceil(steps / (batch_size * n_steps))), start=0, gamma=gamma, clip=clip,
                     epochs=epochs, save_every=save_every, meta=meta, stop=stop, rank=rank, world=world)
        if resume and plan.latest.exists():
            _resume(plan, learner, learner.load(plan.latest, rank, world), lr, steps, force_settings)
        elif resume and rank == 0:
            print(f"--resume: nothing to resume in {out_dir} (no {LATEST_FILE}); starting from scratch")
        if on_start is not None:
            on_start()
        with RunLog(out_dir if rank == 0 else None) as log:
            if rank == 0:
                _open_logs(log, plan, resume, progress)
            _train_batches(plan, learner, core, log, episode_images)
    finally:
        core.close()
    return learner.policy, plan, core.device

