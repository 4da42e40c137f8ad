"""A trained Stable-Baselines3 model as an agent (PPO, SAC, A2C, TD3, DQN, RecurrentPPO), and :func:`train_sb3`.

Hyperparameters come from one table, :data:`agents.sb3.recipes.RECIPES` (what ``gfnet train-agent`` and
:func:`train_sb3` use), overridable key by key (``hparams=``). Training goes through
:func:`gfnet_env.make_sb3_vec_env` (one batched core, in a ``VecMonitor``: episode returns logged), with

* TensorBoard logs under ``out_dir/tensorboard``;
* an ``EvalCallback`` on a held-out split (``val`` by default) every ``eval_freq`` env steps, writing
  ``out_dir/eval/evaluations.npz`` and the best model to ``out_dir/best/``;
* checkpoints ``out_dir/checkpoints/<algo>_<N>_steps.zip`` (the newest ``keep_checkpoints``, default 2; the
  replay buffer of off-policy algorithms only when asked: ``keep_replay_buffers``), written atomically at a
  rollout start every ``checkpoint_freq`` env steps, at the end, and when a run crashes or is interrupted (an
  on-policy run first rolls back to the start of its unfinished rollout:
  :func:`agents.sb3.callbacks.checkpoint_callback`);
* a picture of a few deterministic episodes in TensorBoard at each evaluation (``episode_images``,
  :mod:`agents.episode_images`);
* ``resume=True``: continue from the newest *valid* checkpoint (and its replay buffer) with
  ``reset_num_timesteps=False`` until ``steps`` env steps in total;
* a warning when an evaluation after half the budget is at or below the mean return of uniformly random
  actions on the same evaluation env (measured before training).

Step counts: SB3 collects whole rollouts, so ``steps`` is rounded up to a multiple of ``n_steps·n_envs`` /
``train_freq·n_envs`` (printed; ``num_timesteps`` is recorded); a resumed run makes as many as an uninterrupted one.

Loading never runs code from a file unless ``trust_agent=True`` (:mod:`agents.sb3.files`).

The final model is ``out_dir/<sb3_algo>.zip``, its sidecar ``<sb3_algo>.json`` (env kwargs and hparams) and
``out_dir/agent.json``; without a sidecar (a shipped zip) the env settings are read off the model's spaces.

Example::

    agent = train_sb3("ppo", "GFNet-ClutteredFashionMNIST-v0", None, "runs/ppo")   # the ppo recipe
    agent = agents.load_agent("sb3-ppo", "runs/ppo"); agent.reset(8); actions = agent.act(obs_batch)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from feature_nets.files import atomic_write_text

from ..base import Agent, PathLike, Run, RunContext, train_hint
from ..trained import jsonable, write_agent_json
from .algorithms import algo_key, algorithm_class, settings_from_spaces
from .files import load_sb3_model, save_model
from .trainer import train_model

#: Agents shipped for an env, by (env id, agent name) → file under gfnet_env/weights/.
SHIPPED_AGENTS = {("GFNet-ClutteredFashionMNIST-v0", "sb3-ppo"): "sb3_ppo_cluttered_fmnist.zip"}


class SB3Agent(Agent):
    """A trained Stable-Baselines3 model as an agent.

    Args:
        model: the SB3 model (``PPO``, ``SAC``, … or ``RecurrentPPO``).
        env_kwargs: env kwargs it was trained with (the sidecar json); ``obs_mode`` / ``action_mode`` /
            ``grid_size`` / ``action_range`` / ``stop_action`` are read off the model's spaces
            (:func:`~agents.sb3.algorithms.settings_from_spaces`: ``Discrete(G·G + 1)`` or a ``Box`` of 3 is an
            agent that stops).
        path: load the model from this zip instead (``model`` must then be None).
        device: torch device for loading.
        trust_agent: ``True`` to let SB3 unpickle ``path`` fully (it may run code); by default only
            known-safe data types are built (:func:`agents.sb3.files.load_sb3_model`).

    RecurrentPPO keeps its LSTM state and episode-start flags per env between ``act`` calls; ``reset`` clears them.
    """

    algo: str = "ppo"
    trainable = True

    def __init__(self, model=None, env_kwargs: dict | None = None, path: PathLike | None = None,
                 device: str = "auto", trust_agent: bool = False) -> None:
        if model is None:
            if path is None:
                raise ValueError(f"{self.name} needs a trained model: train one with "
                                 f"`gfnet train-agent --agent {self.name} --env ID --out DIR`, then "
                                 f"agents.load_agent({self.name!r}, DIR) or agents.make({self.name!r}, path=ZIP)")
            loaded = type(self).load(path, device=device, trust_agent=trust_agent)
            model, env_kwargs = loaded.model, loaded.env_kwargs
        self.model = model
        self.env_kwargs = dict(env_kwargs or {})
        found = settings_from_spaces(model.observation_space, model.action_space)
        self.obs_mode = found["obs_mode"]
        self.action_mode = found["action_mode"]
        self.grid_size = found.get("grid_size")
        self.action_range = found.get("action_range", "unit")
        self.stop_action = bool(found.get("stop_action", False))  # Discrete(G·G + 1) / Box(3,): it stops
        self.recurrent = algo_key(self.algo) == "recurrent-ppo"
        self._state = None
        self._episode_start: np.ndarray | None = None
        self.metadata: dict[str, Any] = {}

    def reset(self, num_envs: int) -> None:
        super().reset(num_envs)
        self._state = None
        self._episode_start = np.ones(int(num_envs), dtype=bool)

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        if self.recurrent:
            n = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
            if self._episode_start is None or len(self._episode_start) != n:
                self.reset(n)
            actions, self._state = self.model.predict(obs, state=self._state, episode_start=self._episode_start,
                                                      deterministic=deterministic)
            self._episode_start = np.zeros(n, dtype=bool)
        else:
            actions, _ = self.model.predict(obs, deterministic=deterministic)
        if self.action_mode == "grid":
            return np.asarray(actions).reshape(-1).astype(np.int64)
        low = -1.0 if self.action_range == "symmetric" else 0.0  # the env maps [-1, 1] to [0, 1] itself
        dim = 3 if self.stop_action else 2  # a stopping agent's third component is its stop decision
        return np.clip(np.asarray(actions, dtype=np.float32).reshape(-1, dim), low, 1.0)

    # --- files --------------------------------------------------------------------------------------
    def save(self, path: PathLike) -> Path:
        """``path`` (.zip, SB3's format) plus ``path.with_suffix('.json')`` holding the env kwargs, each atomically."""
        path = Path(path)
        if path.suffix != ".zip":
            path = path.with_suffix(".zip")
        save_model(self.model, path)
        sidecar = {"agent": self.name, "algo": algo_key(self.algo), "num_timesteps": int(self.model.num_timesteps),
                   "env_kwargs": jsonable({**self.env_kwargs, **self.env_settings()}), **jsonable(self.metadata)}
        atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: PathLike, device: str = "auto", trust_agent: bool = False) -> "SB3Agent":
        """Load an SB3 zip (and its sidecar json when present).

        Without ``trust_agent=True`` the zip's pickled entries are built by a restricted unpickler (known-safe
        data types only; anything else is an :class:`~agents.sb3.files.UntrustedAgentError` saying how to opt
        in). The shipped agent loads this way.
        """
        path = Path(path)
        if path.is_dir():
            path = path / f"{cls.name.replace('-', '_')}.zip"
        if not path.exists():
            raise FileNotFoundError(f"no {cls.name} model at {path}; train one with "
                                    f"`gfnet train-agent --agent {cls.name} --env ID --out DIR`")
        model = load_sb3_model(algorithm_class(cls.algo), path, trust_agent=trust_agent, device=device)
        sidecar = path.with_suffix(".json")
        meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        agent = cls(model, env_kwargs=meta.pop("env_kwargs", {}))
        agent.metadata = meta
        return agent

    @classmethod
    def runs(cls, ctx: RunContext) -> tuple[list[Run], str]:
        """The weights shipped for the env (default networks only), else a ``ValueError`` saying how to train."""
        from gfnet_env.tasks import WEIGHTS_DIR

        shipped = SHIPPED_AGENTS.get((ctx.env_id, ctx.name))
        if shipped and "checkpoint" not in ctx.env_kwargs and (WEIGHTS_DIR / shipped).exists():
            path = WEIGHTS_DIR / shipped
            return [Run(str(path), lambda: cls.load(path, device=ctx.device))], f"shipped: {path.name}"
        raise ValueError(train_hint(ctx.name, ctx.env_id))

    @classmethod
    def train_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``n_envs``, ``obs_mode``, ``action_mode``, ``grid_size`` (None: the recipe's), ``device``,
        ``eval_episodes``, ``trust_agent`` and ``force_settings`` (for ``--resume``), ``hparams``,
        ``keep_replay_buffers``, ``keep_checkpoints``, ``on_start`` (called once the inputs are checked, before the
        first write) and the progress bar; the CLI trains with the recipe (:mod:`agents.sb3.recipes`)."""
        keys = ("n_envs", "obs_mode", "action_mode", "grid_size", "device", "eval_episodes", "trust_agent",
                "hparams", "keep_replay_buffers", "keep_checkpoints", "force_settings", "on_start")
        out = {k: options[k] for k in keys if options.get(k) is not None}
        if "progress" in options:
            out["progress_bar"] = options["progress"]
        return out

    @classmethod
    def learn(cls, env_id: str, steps: int | None, seed: int, out_dir: PathLike, resume: bool = False,
              **env_kwargs) -> "SB3Agent":
        """:func:`train_sb3` with this agent's algorithm (``n_envs``, ``obs_mode``, ``hparams``, … may be in
        ``env_kwargs``)."""
        return train_sb3(cls.algo, env_id, steps, out_dir, seed=seed, resume=resume, **env_kwargs)


def _agent_class(algo: str) -> type[SB3Agent]:
    name = "sb3-" + algo
    cls_name = "SB3" + "".join(part.upper() if part in ("ppo", "sac", "a2c", "td3", "dqn") else part.capitalize()
                               for part in algo.split("-")) + "Agent"
    return type(cls_name, (SB3Agent,), {"name": name, "algo": algo, "__doc__": f"``{name}``: {SB3Agent.__doc__}"})


SB3PPOAgent = _agent_class("ppo")
SB3SACAgent = _agent_class("sac")
SB3A2CAgent = _agent_class("a2c")
SB3TD3Agent = _agent_class("td3")
SB3DQNAgent = _agent_class("dqn")
SB3RecurrentPPOAgent = _agent_class("recurrent-ppo")
AGENT_CLASSES: dict[str, type[SB3Agent]] = {c.algo: c for c in (SB3PPOAgent, SB3SACAgent, SB3A2CAgent, SB3TD3Agent,
                                                                  SB3DQNAgent, SB3RecurrentPPOAgent)}


# =====================================================================================================
# Training
# =====================================================================================================


def train_sb3(algo: str, env_id: str, steps: int | None, out_dir: PathLike, seed: int = 0, **options) -> SB3Agent:
    """Train an SB3 algorithm on a GFNet env and save it as an agent in ``out_dir``.

    ``options`` are those of :func:`agents.sb3.trainer.train_model` (``n_envs``, ``resume``, ``hparams``, …, and
    env arguments). Writes ``out_dir/sb3_<algo>.zip``, its sidecar json and ``out_dir/agent.json``.
    """
    agent_cls = AGENT_CLASSES[algo_key(algo)]
    run = train_model(agent_cls.algo, agent_cls, env_id, steps, out_dir, seed=seed, **options)
    agent = agent_cls(run.model, env_kwargs=run.env_kwargs)
    agent.metadata = {"env_id": env_id, "seed": seed, "steps": run.steps, "hparams": run.hparams,
                      **({"forced_settings": run.forced_settings} if run.forced_settings else {})}
    file = f"sb3_{agent_cls.algo.replace('-', '_')}.zip"
    out_dir = Path(out_dir)
    agent.save(out_dir / file)
    write_agent_json(out_dir, agent_cls.name, file, env_id=env_id, env_kwargs=run.env_kwargs, seed=seed,
                     steps=run.steps, num_timesteps=int(run.model.num_timesteps),
                     **({"forced_settings": run.forced_settings} if run.forced_settings else {}))
    return agent
