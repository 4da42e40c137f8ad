"""PPO with TorchRL on the embedded task (GFNet-ClutteredFashionMNIST-v0): a collector, GAE and ClipPPOLoss.

The env is :func:`gfnet_env.make_torchrl_env` — the batched GFNet core as a TorchRL ``EnvBase`` — with the
observation and actions of the ``sb3-ppo`` recipe (agents/sb3/recipes.py): the encoder's feature map of the last
look, and one of the 7×7 grid of patch locations. The policy is an MLP over the flattened feature map giving 49
logits (a categorical distribution), the value an MLP beside it; γ = 0.9 over the 4-look episode.

Run::

    python examples/torchrl_ppo.py --out runs/torchrl_ppo                  # the full run (--steps 200000)
    python examples/torchrl_ppo.py --out runs/torchrl_ppo2 --workers 2     # 2 collector worker processes
    python examples/torchrl_ppo.py --tiny                                  # 1,024 frames, under a minute

With ``--workers K`` TorchRL's ``MultiSyncCollector`` steps K envs in K worker processes (each with
``--envs / K`` episodes in its batch, its own images seed) and the learner gathers their batches: the same
script scales to more processes, GPUs (``--device cuda``) and nodes by TorchRL's distributed collectors.

It prints lines starting with:

* ``frames`` — one per collected batch (frames F/TOTAL, episodes E, return R, top-1 A %, seconds): env steps so
  far, episodes that ended in the batch, their mean return (the gain in p(true class) from glance to last look)
  and the share of them answered correctly (training images, sampled actions);
* ``saved the agent to`` — where the trained agent was saved, then ``gfnet benchmark`` — the exact command that
  evaluates it against random patches. The saved folder holds
``policy.pt`` (the actor's weights) and ``agent.json``; importing this file (``gfnet benchmark --import
examples/torchrl_ppo.py``) registers the agent ``torchrl-ppo`` that loads it and acts greedily (the most likely
cell).
"""

from __future__ import annotations

import argparse
import functools
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import agents
from agents.base import Agent, PathLike, RunContext
from agents.trained import write_agent_json
from feature_nets.devices import resolve_device
from feature_nets.files import atomic_save

ENV_ID = "GFNet-ClutteredFashionMNIST-v0"
AGENT = "torchrl-ppo"
#: The env settings the agent acts in (those of the sb3-ppo recipe).
ENV_SETTINGS = dict(obs_mode="feature_map", action_mode="grid", grid_size=7)


# --- the networks -----------------------------------------------------------------------------------------------
def mlp(inputs: int, hidden: list[int], outputs: int) -> nn.Sequential:
    """Flatten, then Linear+ReLU layers of ``hidden`` widths, then a linear output of ``outputs`` units."""
    layers: list[nn.Module] = [nn.Flatten(start_dim=-3)]
    for width in hidden:
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        inputs = width
    layers.append(nn.Linear(inputs, outputs))
    return nn.Sequential(*layers)


# --- the agent the benchmark runs ------------------------------------------------------------------------------
class TorchRLPPOAgent(Agent):
    """The trained actor as a benchmark agent: feature map in, the most likely grid cell out."""

    name = AGENT
    obs_mode = ENV_SETTINGS["obs_mode"]
    action_mode = ENV_SETTINGS["action_mode"]
    grid_size = ENV_SETTINGS["grid_size"]
    trainable = True

    def __init__(self, actor: nn.Module, device: str | torch.device = "cpu") -> None:
        self.actor, self.device = actor.eval(), torch.device(device)

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        with torch.no_grad():
            logits = self.actor(torch.as_tensor(obs, device=self.device))
        if deterministic:
            return logits.argmax(-1).cpu().numpy()
        return torch.distributions.Categorical(logits=logits).sample().cpu().numpy()

    @classmethod
    def runs(cls, ctx: RunContext):
        raise ValueError(f"{AGENT} needs a trained copy: `python examples/torchrl_ppo.py --out DIR`, then "
                         f"--agent-dir {AGENT}=DIR")

    @classmethod
    def load(cls, path: PathLike, device: str = "auto") -> "TorchRLPPOAgent":
        device = resolve_device(device)
        saved = torch.load(path, map_location=device, weights_only=True)
        actor = mlp(saved["inputs"], saved["hidden"], saved["outputs"])
        actor.load_state_dict(saved["state_dict"])
        return cls(actor.to(device), device)


agents.register(AGENT, TorchRLPPOAgent, overwrite=True)  # so that `gfnet benchmark --import THIS_FILE` finds it


def save_agent(actor: nn.Sequential, inputs: int, hidden: list[int], outputs: int, out: Path, meta: dict) -> Path:
    """Write ``policy.pt`` (the actor's weights and shape) and ``agent.json`` into ``out`` (both atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in actor.state_dict().items()}
    atomic_save({"inputs": inputs, "hidden": hidden, "outputs": outputs, "state_dict": state}, out / "policy.pt")
    write_agent_json(out, AGENT, "policy.pt", env_id=ENV_ID, env_kwargs=ENV_SETTINGS, **meta)
    return out


# --- training ---------------------------------------------------------------------------------------------------
def make_env(num_envs: int, seed: int, device: str):
    """The training env: ``num_envs`` episodes on training canvases (a top-level function: worker processes
    build their env by calling it)."""
    import gfnet_env

    return gfnet_env.make_torchrl_env(ENV_ID, num_envs=num_envs, split="train", device=device, seed=seed,
                                      **ENV_SETTINGS)


def train(args: argparse.Namespace) -> Path:
    from tensordict.nn import TensorDictModule
    from torchrl.collectors import Collector, MultiSyncCollector
    from torchrl.data import LazyTensorStorage, ReplayBuffer, SamplerWithoutReplacement
    from torchrl.modules import ProbabilisticActor, ValueOperator
    from torchrl.objectives import ClipPPOLoss
    from torchrl.objectives.value import GAE

    torch.manual_seed(args.seed)
    per_worker = args.envs // args.workers
    probe = make_env(1, args.seed, args.device)  # read the spaces once
    obs_shape, n_actions = probe.observation_spec["observation"].shape[1:], int(probe.action_spec.space.n)
    probe.close()
    inputs = math.prod(obs_shape)

    # The policy: feature map -> logits -> Categorical; the value: feature map -> V.
    actor_net = mlp(inputs, args.pi, n_actions).to(args.device)
    actor = ProbabilisticActor(TensorDictModule(actor_net, in_keys=["observation"], out_keys=["logits"]),
                               in_keys=["logits"], distribution_class=torch.distributions.Categorical,
                               return_log_prob=True)
    critic = ValueOperator(mlp(inputs, args.vf, 1).to(args.device), in_keys=["observation"])

    # The collector: one env in this process, or --workers processes each stepping its own env.
    frames = args.rollout
    if args.workers == 1:
        collector = Collector(make_env(args.envs, args.seed, args.device), actor, frames_per_batch=frames,
                              total_frames=args.steps, device=args.device,
                              auto_register_policy_transforms=False)
    else:
        env_fns = [functools.partial(make_env, per_worker, args.seed + 1000 * w, "cpu") for w in range(args.workers)]
        collector = MultiSyncCollector(env_fns, actor, frames_per_batch=frames, total_frames=args.steps,
                                       device="cpu", cat_results=0, auto_register_policy_transforms=False)

    # PPO: GAE advantages, clipped surrogate + value loss, minibatches drawn without replacement.
    advantage = GAE(gamma=args.gamma, lmbda=args.lmbda, value_network=critic, average_gae=True)
    loss_fn = ClipPPOLoss(actor, critic, clip_epsilon=args.clip, entropy_coeff=args.entropy, critic_coeff=0.5,
                          loss_critic_type="l2")
    optim = torch.optim.Adam(loss_fn.parameters(), lr=args.lr)
    buffer = ReplayBuffer(storage=LazyTensorStorage(frames), sampler=SamplerWithoutReplacement(),
                          batch_size=args.batch_size)

    start, done_frames = time.time(), 0
    for batch in collector:
        done_frames += batch.numel()
        ended = batch["next", "done"].squeeze(-1)
        correct = batch["next", "info", "correct"][ended].float()
        with torch.no_grad():
            advantage(batch)
        buffer.extend(batch.reshape(-1))
        for _ in range(args.epochs):
            for _ in range(max(1, frames // args.batch_size)):
                losses = loss_fn(buffer.sample())
                loss = losses["loss_objective"] + losses["loss_critic"] + losses["loss_entropy"]
                optim.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(loss_fn.parameters(), 0.5)
                optim.step()
        collector.update_policy_weights_()
        episode_returns = episode_sums(batch["next", "reward"].squeeze(-1), ended)
        print(f"frames {done_frames}/{args.steps}  episodes {int(ended.sum())}  "
              f"return {episode_returns.mean().item():.3f}  top-1 {100 * correct.mean().item():.1f} %  "
              f"({time.time() - start:.0f} s)", flush=True)
    collector.shutdown()
    meta = dict(steps=done_frames, seed=args.seed, workers=args.workers, envs=args.envs,
                train_seconds=round(time.time() - start, 1))
    return save_agent(actor_net, inputs, args.pi, n_actions, Path(args.out), meta)


def episode_sums(rewards: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
    """Returns of the episodes that ended in a (N, T) batch: the rewards summed since each env's previous end
    (an episode that began in an earlier batch counts only its steps in this one)."""
    out = []
    for r, e in zip(rewards, ended):
        total = 0.0
        for reward, end in zip(r.tolist(), e.tolist()):
            total += reward
            if end:
                out.append(total)
                total = 0.0
    return torch.tensor(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="folder the trained agent is saved to (default: a temporary one)")
    p.add_argument("--steps", type=int, default=200_000, help="env steps (frames) to train for")
    p.add_argument("--envs", type=int, default=64, help="episodes stepped as one batch (over all workers)")
    p.add_argument("--workers", type=int, default=1, help="collector worker processes (MultiSyncCollector if > 1)")
    p.add_argument("--rollout", type=int, default=4096, help="frames per collected batch (one PPO update)")
    p.add_argument("--epochs", type=int, default=10, help="passes over each batch")
    p.add_argument("--batch-size", type=int, default=512, help="minibatch size")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--gamma", type=float, default=0.9)
    p.add_argument("--lmbda", type=float, default=0.95, help="GAE λ")
    p.add_argument("--clip", type=float, default=0.2, help="PPO clip ε")
    p.add_argument("--entropy", type=float, default=0.0, help="entropy bonus coefficient")
    p.add_argument("--pi", type=int, nargs="+", default=[256, 256], help="actor hidden widths")
    p.add_argument("--vf", type=int, nargs="+", default=[64, 64], help="critic hidden widths")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device of the env, the policy and the learner")
    p.add_argument("--threads", type=int, default=None, help="torch threads of this process (default: torch's)")
    p.add_argument("--tiny", action="store_true", help="a few small batches (a smoke test, under a minute)")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.envs, args.rollout, args.epochs, args.batch_size = 1024, 16, 256, 2, 128
    if args.workers < 1 or args.envs % args.workers:
        p.error(f"--envs {args.envs} must be a multiple of --workers {args.workers} (each worker steps --envs / "
                "--workers episodes)")
    if args.out is None:
        args.out = tempfile.mkdtemp(prefix="torchrl_ppo_")
    if args.threads:
        torch.set_num_threads(args.threads)
    import gfnet_env

    gfnet_env.keep_freed_memory()
    out = train(args)
    print(f"saved the agent to {out}")
    print("benchmark it against random patches with:")
    print(f"  gfnet benchmark --env {ENV_ID} --import examples/torchrl_ppo.py --agents random,{AGENT} "
          f"--agent-dir {AGENT}={out} --reference random --episodes 2000 --seeds 3 --out results/{AGENT}")


if __name__ == "__main__":
    main()
