"""An agent of your own, registered by name and benchmarked against the paper's PPO on the embedded task.

``GlanceTourAgent`` looks at the glance's feature map once per episode, ranks its cells by how much the channels
vary there (a cheap "something is here" score), and puts one focus patch on each of the top cells in turn. It is
written against the agent protocol (``agents.base.Agent``: ``reset``, ``act``, and ``bind`` for the env's static
facts), registered with ``agents.register``, and then benchmarked like any built-in agent: every agent on the same
images in the same order, the paired difference to ``paper-ppo`` (the policy shipped with the embedded task's
checkpoint) with its bootstrap interval.

It prints lines starting with:

* ``registered:`` — the new agent's name, in the registry next to the built-ins;
* ``top-1 per step`` — one line per agent: top-1 (%) after the glance and after each focus step;
* ``verdict:`` — glance-tour's last-step top-1 minus paper-ppo's, in points, with its paired 95 % interval, and
  whether the interval excludes zero.

Run ``python examples/custom_agent.py`` (real settings: 2,000 test canvases) or with ``--tiny`` (40 canvases:
seconds on a CPU). The same agent works from the command line: ``gfnet benchmark --import examples/custom_agent.py
--agents glance-tour,paper-ppo ...``.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

import agents
from agents.base import Agent
from agents.benchmark import run_benchmark


class GlanceTourAgent(Agent):
    """Focus patches on the glance map's cells of largest channel spread, best first, one per step.

    Observations: the ``dict`` mode's ``feature_map`` (N, C, h, w); the first call after ``reset`` sees the
    glance's map, which covers the whole image. Actions: (N, 2) crop corners as fractions of S − P (continuous,
    unit range), so that the P×P patch is centred on the chosen cell (clipped to the image).
    """

    name = "glance-tour"
    obs_mode = "dict"
    action_mode = "continuous"

    def bind(self, view) -> None:
        super().bind(view)
        c, h, w = view.feature_map_shape
        # its own cost: the ranking (a spread over C channels at h·w cells, about 2·C·h·w multiply-adds) once per
        # episode, shared by its max_steps decisions (numpy work, which the benchmark cannot count by itself)
        self.decision_madds = 2.0 * c * h * w / max(1, view.max_steps)

    def reset(self, num_envs: int) -> None:
        super().reset(num_envs)
        self.order: np.ndarray | None = None  # (N, h·w) cells of each episode's glance map, best first
        self.step = 0

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        fmap = np.asarray(obs["feature_map"], dtype=np.float32)  # (N, C, h, w)
        n, _, h, w = fmap.shape
        if self.order is None or len(self.order) != n:  # the first look of a batch: rank the glance's cells
            spread = fmap.std(axis=1).reshape(n, h * w)
            self.order, self.step = np.argsort(-spread, axis=1, kind="stable"), 0
        cell = self.order[:, self.step % (h * w)]
        self.step += 1
        centre = np.stack([(cell // w + 0.5) / h, (cell % w + 0.5) / w], 1) * self.view.image_size  # pixels
        s, p = self.view.image_size, self.view.patch_size
        return np.clip((centre - p / 2) / max(1, s - p), 0.0, 1.0).astype(np.float32)


agents.register("glance-tour", GlanceTourAgent, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="40 canvases (seconds on a CPU)")
    parser.add_argument("--out", default=None, help="results folder (default: a temporary folder)")
    args = parser.parse_args()
    episodes = 40 if args.tiny else 2000
    out = args.out or tempfile.mkdtemp(prefix="gfnet_custom_agent_")

    print(f"registered: glance-tour (agents.available() has {len(agents.available())} agents)", flush=True)
    # every agent on the same test canvases in the same order; paper-ppo is the reference of the paired comparison
    results = run_benchmark("GFNet-ClutteredFashionMNIST-v0", ["glance-tour", "paper-ppo"], out, episodes=episodes,
                            reference="paper-ppo", batch_size=min(episodes, 250), verbose=not args.tiny)
    for name, entry in results["agents"].items():
        steps = " / ".join(f"{x:.1f}" for x in entry["anytime_top1"])
        print(f"top-1 per step (glance, then each focus step) of {name}: {steps}")
    vs = results["agents"]["glance-tour"]["vs_reference"]
    lo, hi = vs["top1_difference_ci"][-1]
    print(f"verdict: glance-tour − {vs['reference']} at the last step: {vs['top1_difference'][-1]:+.1f} points, "
          f"paired 95 % interval [{lo:+.1f}, {hi:+.1f}] on {results['episodes']} images"
          f"{' (excludes 0)' if vs['significant'] else ' (includes 0: not distinguishable here)'}; results in {out}")


if __name__ == "__main__":
    main()
