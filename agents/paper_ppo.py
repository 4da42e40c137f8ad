"""The paper's PPO for the patch proposal network (gfnet-reference §5, stage 2), written to be read top to bottom.

One rollout = one batch of B images looked at for T steps: the glance, then T − 1 focus steps. Before each
focus step the policy sees the previous feature map (a *state*), samples a crop location (an *action*,
clamped to [0, 1]², with the log-probability of the clamped action), and after the step receives the gain
in the true class's softmax probability (a *reward*). After the rollout, one PPO update:

1. discounted returns, backwards over the T − 1 rewards with γ (0.7); no GAE, no bootstrapping;
2. returns normalised over the whole (T − 1, B) batch: (R − mean) / (std + 1e-5), std unbiased (torch's default);
3. the policy re-evaluates all stored states from a zero GRU state: log-probs, values, entropy;
4. advantage = normalised return − V(s) (V detached);
5. loss = −min(ratio·A, clip(ratio, 1 − ε, 1 + ε)·A) + 0.5·MSE(V, R) − 0.01·entropy, per (step, image);
   the MSE is one scalar (mean over all steps and images) broadcast into every element (after the final
   mean this equals a per-element squared error; the entropy term is constant for a fixed std and adds no
   gradient, only a value to the loss: 2·(½·(1 + ln 2π)) + ln(0.1²) ≈ −1.767 per element);
6. backward of loss.mean(), one Adam step; repeated for ``epochs`` (1 in the paper).

The update (:class:`RolloutMemory` … :func:`ppo_update`) knows nothing about Gymnasium or encoders: the caller
fills the memory. Below it, the same file holds the rest of stage 2: :class:`PaperPPOAgent` (the policy as an
agent of the benchmark, ``paper-ppo``), :func:`train_paper_ppo` (the training loop over batches of images on the
batched env core) and :func:`save_policy_into_checkpoint` (the learned policy back into an official checkpoint).
"""

from __future__ import annotations

import copy
import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from feature_nets.policy import PatchPolicy

from .base import Agent, jsonable, register, write_agent_json

#: Added to the standard deviation when normalising returns (as in the original).
RETURN_NORM_EPS = 1e-5


@dataclass
class RolloutMemory:
    """What one rollout left for the update; one entry per focus step (T − 1 entries).

    Attributes:
        states: (B, C, h, w) feature maps the policy saw.
        actions: (B, 2) clamped actions taken.
        logprobs: (B,) log-probabilities of those actions under the acting policy.
        rewards: (1, B) rewards received after each step (p_t(y) − p_{t−1}(y)).
    """

    states: list[torch.Tensor] = field(default_factory=list)
    actions: list[torch.Tensor] = field(default_factory=list)
    logprobs: list[torch.Tensor] = field(default_factory=list)
    rewards: list[torch.Tensor] = field(default_factory=list)

    def clear(self) -> None:
        """Forget the rollout (call after each update)."""
        self.states.clear()
        self.actions.clear()
        self.logprobs.clear()
        self.rewards.clear()


def make_optimizer(
    policy: PatchPolicy, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Adam:
    """Adam over all policy parameters, as the paper's stage 2."""
    return torch.optim.Adam(policy.parameters(), lr=lr, betas=betas)


def discounted_returns(rewards: list[torch.Tensor], gamma: float) -> torch.Tensor:
    """Returns G_t = r_t + γ·G_{t+1}, computed backwards; (1, B) per step → (T − 1, B)."""
    returns = []
    running = 0.0
    for reward in reversed(rewards):
        running = reward + gamma * running
        returns.insert(0, running)
    return torch.cat(returns, dim=0)


def normalise_returns(returns: torch.Tensor) -> torch.Tensor:
    """(R − mean) / (std + 1e-5) over the whole (T − 1, B) tensor.

    The std is torch's default, the *unbiased* one (divides by N − 1), as in the original code. The
    conformance fixture (N = 12) tells the two apart: the unbiased std reproduces its loss and gradients to
    float precision, the biased one misses the loss by ~0.08 and the gradients by ~0.09.
    """
    return (returns - returns.mean()) / (returns.std() + RETURN_NORM_EPS)


def ppo_loss(
    policy: PatchPolicy,
    memory: RolloutMemory,
    gamma: float = 0.7,
    clip: float = 0.2,
    value_coef: float = 0.5,
    entropy_coef: float = 0.01,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The scalar PPO loss of one epoch (the value the original back-propagates) and diagnostics.

    Returns:
        loss: 0-dim tensor, the mean over (T − 1, B) of the per-element loss.
        info: ``loss``, ``policy_loss``, ``value_loss`` (the MSE), ``entropy``, ``ratio`` (mean),
            ``clip_fraction`` (share of ratios outside [1 − clip, 1 + clip]).
    """
    device = next(policy.parameters()).device

    # 1-2. returns, normalised over everything
    returns = discounted_returns(memory.rewards, gamma).to(device)
    returns = normalise_returns(returns)

    # stored rollout, (T − 1, B, ...)
    old_states = torch.stack(memory.states, 0).to(device).detach()
    old_actions = torch.stack(memory.actions, 0).to(device).detach()
    old_logprobs = torch.stack(memory.logprobs, 0).to(device).detach()

    # 3. re-evaluate with the current weights
    logprobs, values, entropy = policy.evaluate(old_states, old_actions)

    # 4-5. clipped surrogate + value loss − entropy bonus
    ratios = torch.exp(logprobs - old_logprobs)
    advantages = returns - values.detach()
    surr1 = ratios * advantages
    surr2 = torch.clamp(ratios, 1 - clip, 1 + clip) * advantages
    policy_loss = -torch.min(surr1, surr2)
    value_loss = F.mse_loss(values, returns)  # scalar: mean over all (T − 1)·B elements
    per_element = policy_loss + value_coef * value_loss - entropy_coef * entropy
    loss = per_element.mean()

    with torch.no_grad():
        info = {
            "loss": loss.item(),
            "policy_loss": policy_loss.mean().item(),
            "value_loss": value_loss.item(),
            "entropy": entropy.mean().item(),
            "ratio": ratios.mean().item(),
            "clip_fraction": ((ratios - 1).abs() > clip).float().mean().item(),
        }
    return loss, info


def ppo_update(
    policy: PatchPolicy,
    optimizer: torch.optim.Optimizer,
    memory: RolloutMemory,
    gamma: float = 0.7,
    clip: float = 0.2,
    value_coef: float = 0.5,
    entropy_coef: float = 0.01,
    epochs: int = 1,
    before_step: Callable[[PatchPolicy], None] | None = None,
) -> dict[str, float]:
    """One PPO update from a rollout (``epochs`` passes over it; 1 in the paper).

    Args:
        before_step: called with the policy after backward and before each optimizer step, e.g. to read
            the gradients.

    Returns:
        The diagnostics of :func:`ppo_loss` for the last epoch.
    """
    policy.train()
    info: dict[str, float] = {}
    for _ in range(epochs):
        loss, info = ppo_loss(policy, memory, gamma, clip, value_coef, entropy_coef)
        optimizer.zero_grad()
        loss.backward()
        if before_step is not None:
            before_step(policy)
        optimizer.step()
    return info


# =====================================================================================================
# The agent: the policy acting on feature-map observations, one GRU state per env.
# =====================================================================================================

#: ``format`` entry of the files :meth:`PaperPPOAgent.save` writes.
AGENT_FORMAT = "gfnet-paper-ppo"
#: File names inside a training run's folder.
AGENT_FILE = "paper_ppo.pt"
LATEST_FILE = "paper_ppo_latest.pt"


def policy_config(policy: PatchPolicy) -> dict:
    """Constructor arguments that rebuild ``policy``."""
    return {"feature_map_channels": policy.feature_map_channels, "feature_map_size": policy.feature_map_size,
            "hidden_dim": policy.hidden_dim, "conv": policy.conv, "action_std": policy.action_std}


def _device(device) -> torch.device:
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class PaperPPOAgent(Agent):
    """The paper's patch proposal network as an agent (``paper-ppo``).

    Observations are feature maps (N, C, h, w) (or a dict holding ``feature_map``); the policy's own GRU
    state, (1, N, H), is kept per env between ``act`` calls and cleared by ``reset``. Deterministic actions
    are the Gaussian's mean (the original test-time behaviour); stochastic ones are sampled with std 0.1
    and clamped to [0, 1], as in training.

    Args:
        policy: a :class:`~feature_nets.policy.PatchPolicy` (used as is, not copied).
        device: where the policy runs (``"auto"``: CUDA when available).
        seed: seed of the sampling noise for ``deterministic=False``.

    Attributes:
        policy: the network; write it into a GFNet checkpoint with :func:`save_policy_into_checkpoint`.
    """

    name = "paper-ppo"
    obs_mode = "feature_map"
    action_mode = "continuous"
    trainable = True

    def __init__(self, policy: PatchPolicy, device: str | torch.device = "auto", seed: int = 0) -> None:
        self.device = _device(device)
        self.policy = policy.to(self.device).eval()
        self.hidden: torch.Tensor | None = None
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.metadata: dict = {}

    @classmethod
    def from_checkpoint(cls, model, device: str | torch.device = "auto",
                        trusted_pickle: bool = False) -> "PaperPPOAgent":
        """The policy stored in a GFNet checkpoint (a path or a loaded :class:`~feature_nets.gfnet.GFNet`), copied."""
        if isinstance(model, (str, os.PathLike)):
            from feature_nets.checkpoint import load_checkpoint

            model = load_checkpoint(model, trusted_pickle=trusted_pickle).model
        if getattr(model, "policy", None) is None:
            raise ValueError("this GFNet checkpoint has no policy; train one with `gfnet train-policy`")
        return cls(copy.deepcopy(model.policy), device=device)

    # --- acting -------------------------------------------------------------------------------------
    def reset(self, num_envs: int) -> None:
        super().reset(num_envs)
        self.hidden = self.policy.initial_state(int(num_envs), device=self.device)

    @torch.no_grad()
    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        fmap = obs["feature_map"] if isinstance(obs, dict) else obs
        fmap = torch.as_tensor(np.asarray(fmap) if not torch.is_tensor(fmap) else fmap).to(self.device).float()
        if fmap.dim() != 4:
            raise ValueError(f"paper-ppo acts on feature maps (N, C, h, w); got shape {tuple(fmap.shape)} "
                             "(build the env with obs_mode='feature_map')")
        n = fmap.shape[0]
        if self.hidden is None or self.hidden.shape[1] != n:
            self.hidden = self.policy.initial_state(n, device=self.device)
        mean, _value, self.hidden = self.policy.step(fmap, self.hidden)
        if deterministic:
            action = mean
        else:
            action, _ = self.policy.sample(mean, generator=self.generator)
        return action.float().cpu().numpy()

    # --- files --------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write ``{"format", "policy_config", "policy_state_dict", "metadata"}`` (a torch file, tensors only)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {"format": AGENT_FORMAT, "version": 1, "policy_config": policy_config(self.policy),
                "policy_state_dict": {k: v.detach().cpu() for k, v in self.policy.state_dict().items()},
                "metadata": jsonable(self.metadata)}
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path, device: str | torch.device = "auto") -> "PaperPPOAgent":
        """Load a file written by :meth:`save` (or a training run's ``paper_ppo_latest.pt``)."""
        path = Path(path)
        if path.is_dir():
            path = path / AGENT_FILE
        if not path.exists():
            raise FileNotFoundError(f"no paper-ppo agent at {path}; train one with "
                                    "`gfnet train-agent --agent paper-ppo --env ID --out DIR`")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != AGENT_FORMAT:
            raise ValueError(f"{path} is not a paper-ppo agent file (no format={AGENT_FORMAT!r} entry)")
        policy = PatchPolicy(**blob["policy_config"])
        policy.load_state_dict(blob["policy_state_dict"])
        agent = cls(policy, device=device)
        agent.metadata = dict(blob.get("metadata", {}))
        return agent

    # --- training -----------------------------------------------------------------------------------
    @classmethod
    def learn(cls, env_id: str, steps: int, seed: int, out_dir, resume: bool = False, **env_kwargs) -> "PaperPPOAgent":
        """:func:`train_paper_ppo` (``batch_size``, ``lr``, ``device``, … may be passed in ``env_kwargs``)."""
        return train_paper_ppo(env_id, steps, out_dir, seed=seed, resume=resume, **env_kwargs)


register("paper-ppo", PaperPPOAgent)


# =====================================================================================================
# Training: the paper's stage 2, one PPO update per batch of images.
# =====================================================================================================

def _task_of(env_id: str) -> str:
    from gfnet_env import ENV_TASKS

    env_id = env_id.split(":")[-1]
    if env_id not in ENV_TASKS:
        raise ValueError(f"unknown GFNet env id {env_id!r}; registered: {sorted(ENV_TASKS)}")
    return ENV_TASKS[env_id]


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


def train_paper_ppo(
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
    **env_kwargs,
) -> PaperPPOAgent:
    """Train the paper's policy with its PPO on the frozen networks of ``env_id`` (reference §5, stage 2).

    Loop, one iteration per batch of B images (B = ``batch_size``):

    1. reset B slots of one batched core on the next B images (epochs are seeded permutations of the split);
    2. T − 1 focus steps: the policy reads the previous feature map, samples an action from its Gaussian
       (std 0.1), clamped to [0, 1] (log-prob of the clamped action), the env returns p_t(y) − p_{t−1}(y);
       the rollout memory stores states (B, C, h, w), actions (B, 2), log-probs (B,), rewards (1, B);
    3. one :func:`ppo_update` (γ = 0.7, clip 0.2, ``epochs`` = 1, Adam ``lr``).

    Args:
        env_id: a GFNet env id (``GFNet-ImageNet-v0``, ``GFNet-ClutteredFashionMNIST-v0``).
        steps: env steps to train for; one batch uses B·(T − 1), so ⌈steps / (B·(T−1))⌉ updates are made.
        out_dir: TensorBoard logs (``tensorboard/``), ``progress.csv``, the resumable ``paper_ppo_latest.pt``
            (every ``save_every`` updates, at the end and on any crash), the final ``paper_ppo.pt`` and
            ``agent.json``.
        seed: seeds the fresh policy's weights, the image order and the action noise.
        init_policy: start from a copy of this policy (e.g. a checkpoint's ``model.policy``) instead of a fresh one.
        resume: continue from ``out_dir/paper_ppo_latest.pt`` (exactly: weights, Adam state, image stream, noise).
        device: torch device of the networks and the policy.
        progress: show a tqdm progress bar.
        **env_kwargs: env arguments (``checkpoint=``, ``data_root=``, ``dataset=``, ``max_steps=``, ``reward=``, …);
            ``split`` defaults to ``"train"`` (not the env's evaluation split); ``obs_mode`` / ``action_mode`` are
            fixed to ``feature_map`` / ``continuous``.

    Returns:
        The trained :class:`PaperPPOAgent` (``agent.policy`` is the network).
    """
    from torch.utils.tensorboard import SummaryWriter

    from gfnet_env.env import make_core

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (returns are normalised over the batch), got {batch_size}")
    env_kwargs = dict(env_kwargs)
    env_kwargs.setdefault("split", "train")
    for key, want in (("obs_mode", "feature_map"), ("action_mode", "continuous")):
        if env_kwargs.get(key, want) != want:
            raise ValueError(f"paper-ppo trains on {key}={want!r}, got {env_kwargs[key]!r}")
        env_kwargs[key] = want
    if env_kwargs.get("early_exit") is not None:
        raise ValueError("paper-ppo rollouts have a fixed length: leave early_exit unset for training")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    core = make_core(_task_of(env_id), batch_size, device=device, **env_kwargs)
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
        blob = {"format": AGENT_FORMAT, "version": 1, "policy_config": policy_config(policy),
                "policy_state_dict": {k: v.detach().cpu() for k, v in policy.state_dict().items()},
                "optimizer": optimizer.state_dict(), "generator": generator.get_state().cpu(),
                "batches_done": batches_done, "metadata": jsonable(meta)}
        tmp = latest.with_name(latest.name + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, latest)

    writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start * per_batch if start else None)
    csv_path = out_dir / "progress.csv"
    fields = ["batch", "env_steps", "mean_return", "loss", "policy_loss", "value_loss", "clip_fraction",
              "seconds"] + [f"accuracy_step_{t}" for t in range(n_steps + 1)]
    new_csv = not (resume and csv_path.exists())
    csv_file = open(csv_path, "w" if new_csv else "a", newline="")
    csv_writer = csv.DictWriter(csv_file, fieldnames=fields)
    if new_csv:
        csv_writer.writeheader()

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_batches * per_batch, initial=start * per_batch, unit="step", desc="paper-ppo")
    dataset = core.dataset
    slots = np.arange(batch_size)
    memory = RolloutMemory()
    batch = start
    t0 = time.perf_counter()
    try:
        for batch in range(start, n_batches):
            # 1. the next B images
            indices, epoch = _image_order(seed, len(dataset), batch * batch_size, batch_size)
            if hasattr(dataset, "set_epoch") and getattr(dataset, "epoch", epoch) != epoch:
                dataset.set_epoch(epoch)
            core.reset_slots(slots, indices)
            correct = [float(core.reset_info(slots)["correct"].mean())]

            # 2. the rollout: T − 1 focus steps with sampled actions
            hidden = policy.initial_state(batch_size, device=dev)
            episode_return = np.zeros(batch_size)
            for _t in range(n_steps):
                state = core.fmap.clone()  # (B, C, h, w): a normal tensor (the core's are inference tensors)
                with torch.no_grad():
                    mean, _value, hidden = policy.step(state, hidden)
                action, logprob = policy.sample(mean, generator=generator)
                rewards, _terminated, info = core.step(action)
                memory.states.append(state)
                memory.actions.append(action)
                memory.logprobs.append(logprob)
                memory.rewards.append(torch.as_tensor(rewards, device=dev).view(1, batch_size))
                episode_return += rewards
                correct.append(float(info["correct"].mean()))

            # 3. one PPO update
            stats = ppo_update(policy, optimizer, memory, gamma=gamma, clip=clip, epochs=epochs)
            memory.clear()

            done_steps = (batch + 1) * per_batch
            row = {"batch": batch + 1, "env_steps": done_steps, "mean_return": float(episode_return.mean()),
                   "loss": stats["loss"], "policy_loss": stats["policy_loss"], "value_loss": stats["value_loss"],
                   "clip_fraction": stats["clip_fraction"], "seconds": time.perf_counter() - t0}
            row.update({f"accuracy_step_{t}": c for t, c in enumerate(correct)})
            csv_writer.writerow(row)
            for key in ("mean_return", "loss", "policy_loss", "value_loss", "clip_fraction"):
                writer.add_scalar(f"train/{key}", row[key], done_steps)
            for t, c in enumerate(correct):
                writer.add_scalar(f"train/accuracy_step_{t}", c, done_steps)
            if bar is not None:
                bar.update(per_batch)
                bar.set_postfix(ret=f"{row['mean_return']:.3f}", acc=f"{correct[-1]:.3f}")
            if (batch + 1) % save_every == 0:
                save_latest(batch + 1)
                csv_file.flush()
        batch = n_batches
    finally:
        # never lose a long run: whatever was done is saved, also on a crash or Ctrl-C
        save_latest(batch)
        csv_file.close()
        writer.close()
        if bar is not None:
            bar.close()

    agent = PaperPPOAgent(policy, device=dev, seed=seed)
    agent.metadata = {**meta, "batches": n_batches, "env_steps": n_batches * per_batch}
    agent.save(out_dir / AGENT_FILE)
    write_agent_json(out_dir, PaperPPOAgent.name, AGENT_FILE, env_id=env_id, env_kwargs=env_kwargs, seed=seed,
                     steps=steps)
    return agent


def save_policy_into_checkpoint(policy: PatchPolicy, checkpoint, out_path, trusted_pickle: bool = False,
                                **extra) -> Path:
    """Write a copy of a GFNet checkpoint (official format) whose ``policy`` entry is ``policy``'s weights.

    Every other entry is kept as stored (encoder keys keep their spelling), except the results measured
    with the old policy (``anytime_classification``, ``budgeted_batch_classification``,
    ``dynamic_threshold``), which are dropped. ``extra`` entries are added. The file is written atomically.
    """
    from feature_nets.checkpoint import read_checkpoint_dict

    blob = dict(read_checkpoint_dict(checkpoint, trusted_pickle=trusted_pickle))
    for stale in ("anytime_classification", "budgeted_batch_classification", "dynamic_threshold"):
        blob.pop(stale, None)
    blob["policy"] = {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}
    blob.update(extra)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, out_path)
    return out_path
