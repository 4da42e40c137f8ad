"""Stage 2 of GFNet training: the paper's PPO for the patch policy on the frozen networks of an env.

The algorithm is docs/training.md, "Stage 2: policy (PPO)"; the update itself is :mod:`agents.paper_ppo.ppo`.
One iteration per batch of B images:

1. the next B images: each epoch of the split is a permutation seeded by (seed, epoch), so a resumed run sees
   the same images in the same order;
2. one :func:`gfnet_env.rollout.rollout` of them on a batched env core (glance + T − 1 focus steps) with the
   policy sampling its actions; the rollout memory receives states, actions, log-probs and rewards;
3. one :func:`~agents.paper_ppo.ppo.ppo_update`.

TensorBoard gets the scalars of every batch and, a few times per run (at its start, after every fifth of the
batches and at the end), a picture of deterministic episodes on the first ``episode_images`` images of the
evaluation split (tag ``episodes/looks``, :mod:`agents.episode_images`).

The env is stepped only through its public API (:func:`gfnet_env.factory.make_core` and
:func:`gfnet_env.rollout.rollout`); the networks stay frozen, only the policy learns.

Resume is exact after Ctrl-C as after ``kill -9``: ``paper_ppo_latest.pt`` is only ever written with the state
of a batch boundary (an interrupted batch is rolled back to its start before the save), atomically; every row
of ``progress.csv`` is flushed as a whole, and resuming truncates the file to the resumed batch count (dropping
a torn last row or rows of batches redone).
"""

from __future__ import annotations

import copy
import csv
import io
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from feature_nets.files import atomic_write_text
from feature_nets.policy import PatchPolicy

from ..trained import write_agent_json
from .files import AGENT_FILE, LATEST_FILE, write_policy_file
from .ppo import RolloutMemory, make_optimizer, ppo_update

__all__ = ["TrainedPolicy", "collect_rollout", "train_policy"]

#: Registry name the run's ``agent.json`` records.
AGENT_NAME = "paper-ppo"


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


class _EpisodePictures:
    """Pictures of the live policy's deterministic episodes on the first ``n_images`` images of the evaluation
    split (:mod:`agents.episode_images`), the same images each time so they compare across the run.

    The core shares the training networks (no second copy) and settings (feature maps, continuous actions:
    the policy's own); it draws no random numbers, so a resumed run trains exactly as an uninterrupted one.
    """

    def __init__(self, env_id: str, env_kwargs: dict, n_images: int, core, policy: PatchPolicy) -> None:
        from ..episode_images import evaluation_core

        self.policy = policy
        self.core = evaluation_core(env_id, env_kwargs, n_images, model=core.model, device=core.device)
        self.indices = list(range(min(n_images, len(self.core.dataset))))

    def _actor(self):
        """A fresh ``obs -> actions`` function of the live policy's mean action (one picture's episodes: the
        recurrent state starts empty). Not :class:`~agents.paper_ppo.agent.PaperPPOAgent`: that module imports
        this one."""
        hidden = None

        @torch.no_grad()
        def act(obs) -> np.ndarray:
            nonlocal hidden
            fmap = torch.as_tensor(np.asarray(obs)).to(self.core.device).float()
            mean, hidden = self.policy.mean_action(fmap, hidden)
            return mean.float().cpu().numpy()

        return act

    def log(self, writer, env_steps: int) -> None:
        """Add the picture, (H, W, 3) uint8, to ``writer`` as ``episodes/looks`` at ``env_steps``."""
        from ..episode_images import TAG, episode_image

        was_training = self.policy.training
        self.policy.eval()
        try:
            image = episode_image(self.core, self._actor(), self.indices, deterministic=True)
        finally:
            self.policy.train(was_training)
        writer.add_image(TAG, image, env_steps, dataformats="HWC")

    def close(self) -> None:
        self.core.close()


def _snapshot(policy: PatchPolicy, optimizer, generator: torch.Generator) -> tuple:
    """Copies of the policy weights, the optimizer state and the noise generator's state (a batch boundary)."""
    return ({k: v.detach().clone() for k, v in policy.state_dict().items()}, copy.deepcopy(optimizer.state_dict()),
            generator.get_state())


def _restore(snapshot: tuple, policy: PatchPolicy, optimizer, generator: torch.Generator) -> None:
    weights, optim, noise = snapshot
    policy.load_state_dict(weights)
    optimizer.load_state_dict(optim)
    generator.set_state(noise)


def _truncate_progress(path: Path, fields: list[str], batches: int) -> None:
    """Keep the header and the whole rows of batches 1..``batches`` of ``progress.csv`` (rewritten atomically);
    a torn row (a crash or full disk mid-write) and rows of batches the resumed run redoes are dropped."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    kept = []
    if lines and next(csv.reader([lines[0]]), None) == fields:
        for line in lines[1:]:
            row = next(csv.reader([line]), [])
            if len(kept) == batches or len(row) != len(fields) or row[0] != str(len(kept) + 1):
                break
            kept.append(line)
    if len(kept) < batches:
        warnings.warn(f"{path}: {batches - len(kept)} of the {batches} resumed batches have no whole row",
                      stacklevel=3)
    out = io.StringIO()
    csv.writer(out).writerow(fields)
    atomic_write_text(path, out.getvalue() + "".join(line + "\r\n" for line in kept))


def collect_rollout(core, policy: PatchPolicy, generator: torch.Generator, indices: list[int],
                    memory: RolloutMemory):
    """One batch of episodes with sampled actions; fills ``memory`` and returns the
    :class:`~gfnet_env.rollout.Rollout`.

    Before each focus step the policy reads the previous feature map (B, C, h, w) as a tensor on the core's
    device, samples an action from its Gaussian (std 0.1), clamped to [0, 1] (log-prob of the clamped
    action), and the env returns p_t(y) − p_{t−1}(y). The memory gets one entry per step: states
    (B, C, h, w), actions (B, 2), log-probs (B,) and rewards (1, B).
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

    episodes = rollout(core, act, indices, as_tensor=True)
    for rewards in episodes.rewards:  # (T − 1, B) → one (1, B) tensor per step
        memory.rewards.append(torch.as_tensor(rewards, device=core.device).view(1, len(indices)))
    return episodes


def train_policy(
    env_id: str,
    steps: int,
    out_dir,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 3e-4,
    init_policy: PatchPolicy | None = None,
    resume: bool = False,
    device: str = "auto",
    gamma: float = 0.7,
    clip: float = 0.2,
    epochs: int = 1,
    save_every: int = 50,
    progress: bool = False,
    episode_images: int = 4,
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
            after Ctrl-C or ``kill -9`` alike), truncating ``progress.csv`` to the resumed batches.
        device: torch device of the networks and the policy.
        progress: show a tqdm progress bar.
        episode_images: images of the evaluation split (``val``; a ``dataset=``'s own first images) drawn with
            the policy's deterministic episodes to TensorBoard (``episodes/looks``) at the start, after every
            fifth of the batches and at the end; 0: none.
        **env_kwargs: env arguments (``checkpoint=``, ``data_root=``, ``dataset=``, ``max_steps=``, ``reward=``, …);
            ``split`` defaults to ``"train"`` (not the env's evaluation split); ``obs_mode`` / ``action_mode`` are
            fixed to ``feature_map`` / ``continuous``.

    Returns:
        :class:`TrainedPolicy` (:func:`agents.paper_ppo.agent.train_paper_ppo` wraps it as an agent).
    """
    from torch.utils.tensorboard import SummaryWriter

    from gfnet_env.factory import make_core, task_of

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (returns are normalised over the batch), got {batch_size}")
    if isinstance(episode_images, bool) or int(episode_images) != episode_images or episode_images < 0:
        raise ValueError(f"episode_images must be an int >= 0 (0: none), got {episode_images!r}")
    env_kwargs = dict(env_kwargs)
    env_kwargs.setdefault("split", "train")
    for key, want in (("obs_mode", "feature_map"), ("action_mode", "continuous")):
        if env_kwargs.get(key, want) != want:
            raise ValueError(f"paper-ppo trains on {key}={want!r}, got {env_kwargs[key]!r}")
        env_kwargs[key] = want
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    core = make_core(task_of(env_id), batch_size, device=device, **env_kwargs)
    try:
        # --- the policy, its optimiser and its noise (from a fresh start or the latest save) -------------
        dev = core.device
        if init_policy is not None:
            policy = copy.deepcopy(init_policy)
        else:
            cfg, (c, h, _w) = core.model.spec.config, core.model.feature_map_shape
            policy = PatchPolicy(c, h, cfg.policy_hidden_dim, cfg.policy_conv)
        policy.to(dev)
        optimizer = make_optimizer(policy, lr=lr)
        generator = torch.Generator(device=dev).manual_seed(seed)

        n_steps = core.max_steps
        per_batch = batch_size * n_steps
        n_batches = max(1, math.ceil(steps / per_batch))
        start = 0
        latest = out_dir / LATEST_FILE
        if resume and latest.exists():
            blob = torch.load(latest, map_location="cpu", weights_only=True)
            policy.load_state_dict(blob["policy_state_dict"])
            optimizer.load_state_dict(blob["optimizer"])
            generator.set_state(blob["generator"].to(generator.get_state().device))
            start = int(blob["batches_done"])
        elif resume:
            print(f"--resume: nothing to resume in {out_dir} (no {LATEST_FILE}); starting from scratch")

        meta = {"env_id": env_id, "env_kwargs": env_kwargs, "seed": seed, "steps": steps, "batch_size": batch_size,
                "lr": lr, "gamma": gamma, "clip": clip, "epochs": epochs}

        def save_latest(batches_done: int) -> None:
            """Only ever called at a batch boundary: weights, Adam and noise state all after ``batches_done``."""
            write_policy_file(policy, latest, meta, optimizer=optimizer.state_dict(),
                              generator=generator.get_state().cpu(), batches_done=batches_done)

        # --- logs: TensorBoard, progress.csv (truncated to the resumed batches), a progress bar ---------
        writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start * per_batch if start else None)
        csv_path = out_dir / "progress.csv"
        fields = ["batch", "env_steps", "mean_return", "loss", "policy_loss", "value_loss", "clip_fraction",
                  "seconds"] + [f"accuracy_step_{t}" for t in range(n_steps + 1)]
        new_csv = not (resume and csv_path.exists())
        if not new_csv:
            _truncate_progress(csv_path, fields, start)
        # closed in the loop's finally below, after the last row
        csv_file = open(csv_path, "w" if new_csv else "a", newline="")  # noqa: SIM115
        csv_writer = csv.DictWriter(csv_file, fieldnames=fields)
        if new_csv:
            csv_writer.writeheader()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_batches * per_batch, initial=start * per_batch, unit="step", desc="paper-ppo")

        # --- the loop: one rollout and one PPO update per batch of images -----------------------------
        dataset = core.dataset
        memory = RolloutMemory()
        done = start  # batches whose update is complete; the state is consistent with it outside a batch
        snapshot = None  # the state at the start of the batch in progress
        pictures = None  # episode pictures on fixed evaluation images (episode_images > 0)
        draw_at = _picture_batches(n_batches)
        t0 = time.perf_counter()
        try:
            if episode_images and start < n_batches:
                pictures = _EpisodePictures(env_id, env_kwargs, int(episode_images), core, policy)
                pictures.log(writer, start * per_batch)  # the policy the run starts from (fresh, given, resumed)
            for batch in range(start, n_batches):
                snapshot = _snapshot(policy, optimizer, generator)
                # 1. the next B images
                indices, epoch = _image_order(seed, len(dataset), batch * batch_size, batch_size)
                if hasattr(dataset, "set_epoch") and getattr(dataset, "epoch", epoch) != epoch:
                    dataset.set_epoch(epoch)

                # 2. the rollout: T − 1 focus steps with sampled actions
                episodes = collect_rollout(core, policy, generator, indices, memory)
                correct = (episodes.probs.argmax(-1) == episodes.targets[None]).double().mean(1).tolist()

                # 3. one PPO update
                stats = ppo_update(policy, optimizer, memory, gamma=gamma, clip=clip, epochs=epochs)
                memory.clear()

                done_steps = (batch + 1) * per_batch
                row = {"batch": batch + 1, "env_steps": done_steps, "mean_return": float(episodes.returns.mean()),
                       "loss": stats["loss"], "policy_loss": stats["policy_loss"], "value_loss": stats["value_loss"],
                       "clip_fraction": stats["clip_fraction"], "seconds": time.perf_counter() - t0}
                row.update({f"accuracy_step_{t}": c for t, c in enumerate(correct)})
                csv_writer.writerow(row)
                csv_file.flush()  # whole rows only reach the file (a torn one is dropped on resume)
                done, snapshot = batch + 1, None  # a batch boundary again
                for key in ("mean_return", "loss", "policy_loss", "value_loss", "clip_fraction"):
                    writer.add_scalar(f"train/{key}", row[key], done_steps)
                for t, c in enumerate(correct):
                    writer.add_scalar(f"train/accuracy_step_{t}", c, done_steps)
                if bar is not None:
                    bar.update(per_batch)
                    bar.set_postfix(ret=f"{row['mean_return']:.3f}", acc=f"{correct[-1]:.3f}")
                if pictures is not None and done in draw_at:
                    pictures.log(writer, done_steps)
                if done % save_every == 0:
                    save_latest(done)
        finally:
            # never lose a long run: the last batch boundary is saved, also on a crash or Ctrl-C (a batch
            # interrupted midway is rolled back to its start: its rollout drew noise, its update moved weights)
            try:
                memory.clear()
                if snapshot is not None:
                    _restore(snapshot, policy, optimizer, generator)
                save_latest(done)
            finally:
                try:
                    csv_file.close()
                except OSError:
                    pass  # a row torn by a full disk is dropped when resuming
                writer.close()
                if bar is not None:
                    bar.close()
                if pictures is not None:
                    pictures.close()
    finally:
        core.close()

    metadata = {**meta, "batches": n_batches, "env_steps": n_batches * per_batch}
    write_policy_file(policy, out_dir / AGENT_FILE, metadata)
    write_agent_json(out_dir, AGENT_NAME, AGENT_FILE, env_id=env_id, env_kwargs=env_kwargs, seed=seed, steps=steps)
    return TrainedPolicy(policy, dev, metadata)
