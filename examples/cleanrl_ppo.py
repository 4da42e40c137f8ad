"""A CleanRL-style PPO loop on ``gym.make_vec("GFNet-ClutteredFashionMNIST-v0", ...)``, in one file, top to bottom.

The env is touched only through ``reset`` and ``step``: N images form one batch of episodes (one sub-env each), an
observation is the previous look's feature map (``obs_mode="feature_map"``, (C, h, w)), an action is one cell of
a 7×7 grid of patch locations (``action_mode="grid"``), the reward is the gain in the classifier's confidence in
the true class, and an episode ends after the focus steps the networks were trained for. The vector env resets
finished sub-envs within the same ``step`` (Gymnasium's same-step autoreset), so the loop needs no special case;
the finished episode's last answer is in ``info["final_info"]["correct"]``. The policy and value networks, GAE and
the clipped PPO update are as in CleanRL's ``ppo.py`` (discrete actions).

After training, the policy (arg-max actions) is played on test canvases it never saw.

It prints lines starting with:

* ``update`` — one per PPO update: env steps so far, mean return and top-1 (%) of the episodes finished in it;
* ``test:`` — the trained policy's last-step top-1 (%) on the test canvases, with random grid cells' on the same
  canvases for comparison.

Run ``python examples/cleanrl_ppo.py`` (real settings: 64 envs, 200k env steps) or with ``--tiny`` (8 envs,
3 updates, 64 test canvases: seconds on a CPU).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

import gfnet_env  # noqa: F401  (registers the GFNet env ids)

ENV_ID = "GFNet-ClutteredFashionMNIST-v0"
ENV_KWARGS = dict(vectorization_mode="vector_entry_point", obs_mode="feature_map", action_mode="grid", grid_size=7)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="8 envs, 3 updates, 64 test canvases (seconds on a CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--num-steps", type=int, default=8, help="steps per env per rollout (two 4-step episodes)")
    p.add_argument("--total-timesteps", type=int, default=200_000)
    p.add_argument("--learning-rate", type=float, default=3e-4)
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--gae-lambda", type=float, default=0.95)
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--update-epochs", type=int, default=4)
    p.add_argument("--clip-coef", type=float, default=0.2)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--vf-coef", type=float, default=0.5)
    p.add_argument("--max-grad-norm", type=float, default=0.5)
    p.add_argument("--test-episodes", type=int, default=2000)
    args = p.parse_args()
    if args.tiny:
        args.num_envs, args.total_timesteps, args.test_episodes = 8, 3 * 8 * args.num_steps, 64
    return args


class Agent(nn.Module):
    """Policy (logits over the grid cells) and value heads on a shared trunk over the flattened feature map."""

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(obs_shape)), 256), nn.Tanh(),
                                   nn.Linear(256, 128), nn.Tanh())
        self.actor = nn.Linear(128, n_actions)
        self.critic = nn.Linear(128, 1)
        nn.init.orthogonal_(self.actor.weight, 0.01)
        nn.init.zeros_(self.actor.bias)

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(self.trunk(x)).squeeze(-1)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None):
        hidden = self.trunk(x)
        dist = Categorical(logits=self.actor(hidden))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(hidden).squeeze(-1)


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    envs = gym.make_vec(ENV_ID, num_envs=args.num_envs, split="train", **ENV_KWARGS)
    obs_shape, n_actions = envs.single_observation_space.shape, int(envs.single_action_space.n)
    agent = Agent(obs_shape, n_actions)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    # rollout storage: (num_steps, num_envs, ...)
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    obs = torch.zeros((args.num_steps, args.num_envs) + obs_shape)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long)
    logprobs, rewards, dones, values = (torch.zeros((args.num_steps, args.num_envs)) for _ in range(4))

    next_obs, _ = envs.reset(seed=args.seed)
    next_obs, next_done = torch.as_tensor(next_obs), torch.zeros(args.num_envs)
    num_updates = max(1, args.total_timesteps // batch_size)
    global_step, start = 0, time.time()
    for update in range(1, num_updates + 1):
        finished_returns, finished_correct = [], []
        episode_return = np.zeros(args.num_envs)
        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[step], dones[step] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
            actions[step], logprobs[step], values[step] = action, logprob, value
            next_obs, reward, terminated, truncated, info = envs.step(action.numpy())
            done = np.logical_or(terminated, truncated)
            rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
            next_obs, next_done = torch.as_tensor(next_obs), torch.as_tensor(done, dtype=torch.float32)
            episode_return += reward
            if done.any():  # same-step autoreset: next_obs already starts the new episodes
                finished_returns += episode_return[done].tolist()
                finished_correct += info["final_info"]["correct"][done].tolist()
                episode_return[done] = 0.0

        # generalised advantage estimation (bootstrapped from the value of the observation after the rollout)
        with torch.no_grad():
            next_value = agent.get_value(next_obs)
            advantages = torch.zeros_like(rewards)
            lastgaelam = torch.zeros(args.num_envs)
            for t in reversed(range(args.num_steps)):
                nextnonterminal = 1.0 - (next_done if t == args.num_steps - 1 else dones[t + 1])
                nextvalues = next_value if t == args.num_steps - 1 else values[t + 1]
                delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
                advantages[t] = lastgaelam
            returns = advantages + values

        # the clipped PPO update over shuffled minibatches
        b_obs, b_actions = obs.reshape((-1,) + obs_shape), actions.reshape(-1)
        b_logprobs, b_advantages = logprobs.reshape(-1), advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_inds = np.arange(batch_size)
        for _ in range(args.update_epochs):
            np.random.shuffle(b_inds)
            for begin in range(0, batch_size, minibatch_size):
                mb = b_inds[begin:begin + minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], b_actions[mb])
                ratio = (newlogprob - b_logprobs[mb]).exp()
                mb_adv = b_advantages[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio,
                                    -mb_adv * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)).mean()
                v_loss = 0.5 * ((newvalue - b_returns[mb]) ** 2).mean()
                loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

        n = len(finished_returns)
        stats = (f"mean return {np.mean(finished_returns):+.3f}, top-1 {100 * np.mean(finished_correct):.1f} % "
                 f"over {n} episodes") if n else "no episode finished"
        print(f"update {update}/{num_updates}: {global_step} env steps, {stats} "
              f"({time.time() - start:.0f} s)", flush=True)
    envs.close()

    # the trained policy (arg-max actions) and random grid cells on the same test canvases
    test_top1 = {}
    for name in ("policy", "random"):
        n_envs = min(args.test_episodes, 250)
        with gym.make_vec(ENV_ID, num_envs=n_envs, split="test", **ENV_KWARGS) as test_envs:
            test_obs, _ = test_envs.reset(seed=args.seed)
            rng = np.random.default_rng(args.seed)
            correct: list[bool] = []
            while len(correct) < args.test_episodes:
                with torch.no_grad():
                    logits = agent.actor(agent.trunk(torch.as_tensor(test_obs)))
                act = logits.argmax(-1).numpy() if name == "policy" else rng.integers(0, n_actions, n_envs)
                test_obs, _, terminated, truncated, info = test_envs.step(act)
                done = np.logical_or(terminated, truncated)
                if done.any():
                    correct += info["final_info"]["correct"][done].tolist()
        test_top1[name] = 100 * np.mean(correct[:args.test_episodes])
    print(f"test: last-step top-1 of the trained policy {test_top1['policy']:.1f} %, of random grid cells "
          f"{test_top1['random']:.1f} % on the same {args.test_episodes} test canvases")


if __name__ == "__main__":
    main()
