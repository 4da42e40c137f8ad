"""Stable-Baselines3 agents: PPO, SAC, A2C, TD3, DQN (grid actions) and sb3-contrib's RecurrentPPO.

Hyperparameters come from one table, :data:`agents.sb3_recipes.RECIPES` (the default; what ``gfnet
train-agent`` uses), overridable key by key (``hparams=``). Training goes through
:func:`gfnet_env.make_sb3_vec_env` (one batched core, in a ``VecMonitor``: episode returns logged), with

* TensorBoard logs under ``out_dir/tensorboard``;
* an ``EvalCallback`` on a held-out split (``val`` by default) every ``eval_freq`` env steps, writing
  ``out_dir/eval/evaluations.npz`` and the best model to ``out_dir/best/``;
* checkpoints ``out_dir/checkpoints/<algo>_<N>_steps.zip`` (the newest ``keep_checkpoints``, default 2; the
  replay buffer of off-policy algorithms only when asked: ``keep_replay_buffers``), written atomically at a
  rollout start every ``checkpoint_freq`` env steps, at the end, and when a run crashes or is interrupted (an
  on-policy run first rolls back to the start of its unfinished rollout:
  :func:`agents.sb3_files.checkpoint_callback`);
* a picture of a few deterministic episodes in TensorBoard at each evaluation (``episode_images``,
  :mod:`agents.episode_images`);
* ``resume=True``: continue from the newest *valid* checkpoint (and its replay buffer) with
  ``reset_num_timesteps=False`` until ``steps`` env steps in total;
* a warning when an evaluation after half the budget is at or below the mean return of uniformly random
  actions on the same evaluation env (measured before training).

Step counts: SB3 collects whole rollouts, so ``steps`` is rounded up to a multiple of ``n_steps·n_envs`` /
``train_freq·n_envs`` (printed; ``num_timesteps`` is recorded); a resumed run makes as many as an uninterrupted one.

Loading never runs code from a file unless ``trust_agent=True`` (:mod:`agents.sb3_files`).

The final model is ``out_dir/<sb3_algo>.zip``, its sidecar ``<sb3_algo>.json`` (env kwargs and hparams) and
``out_dir/agent.json``; without a sidecar (a shipped zip) the env settings are read off the model's spaces.

Example::

    agent = train_sb3("ppo", "GFNet-ClutteredFashionMNIST-v0", None, "runs/ppo")   # the ppo recipe
    agent = agents.load_agent("sb3-ppo", "runs/ppo"); agent.reset(8); actions = agent.act(obs_batch)
"""

from __future__ import annotations

import importlib
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from feature_nets.files import atomic_write_text

from .base import Agent, PathLike, Run, RunContext, train_hint
from .sb3_files import (below_random_callback, best_model_callback, check_trust_flag, checkpoint_callback,
                        latest_checkpoint, load_replay_buffer, load_sb3_model, random_policy_reward,
                        safe_custom_objects, save_model, step_unit)
from .sb3_recipes import OFF_POLICY
from .trained import jsonable, write_agent_json

#: registry name -> (module, class) of the SB3 algorithm.
ALGORITHMS: dict[str, tuple[str, str]] = {
    "ppo": ("stable_baselines3", "PPO"),
    "sac": ("stable_baselines3", "SAC"),
    "a2c": ("stable_baselines3", "A2C"),
    "td3": ("stable_baselines3", "TD3"),
    "dqn": ("stable_baselines3", "DQN"),
    "recurrent-ppo": ("sb3_contrib", "RecurrentPPO"),
}
#: action modes each algorithm supports (the first is its default).
ACTION_MODES = {"ppo": ("continuous", "grid"), "a2c": ("continuous", "grid"), "recurrent-ppo": ("continuous", "grid"),
                "sac": ("continuous",), "td3": ("continuous",), "dqn": ("grid",)}
#: Agents shipped for an env, by (env id, agent name) → file under gfnet_env/weights/.
SHIPPED_AGENTS = {("GFNet-ClutteredFashionMNIST-v0", "sb3-ppo"): "sb3_ppo_cluttered_fmnist.zip"}


def algo_key(algo: str) -> str:
    """``"sb3-ppo"`` / ``"ppo"`` / ``"PPO"`` → ``"ppo"``."""
    key = algo.lower().removeprefix("sb3-").replace("_", "-")
    if key not in ALGORITHMS:
        raise ValueError(f"unknown SB3 algorithm {algo!r}; choose one of {['sb3-' + k for k in ALGORITHMS]}")
    return key


def algorithm_class(algo: str):
    module, cls = ALGORITHMS[algo_key(algo)]
    return getattr(importlib.import_module(module), cls)


def settings_from_spaces(observation_space, action_space) -> dict[str, Any]:
    """Env settings (``obs_mode``, ``action_mode``, ``grid_size``) an SB3 model's spaces imply."""
    from gymnasium import spaces

    if isinstance(observation_space, spaces.Dict):
        obs_mode = "dict"
    elif len(observation_space.shape) == 3:
        obs_mode = "feature_map"
    else:
        obs_mode = "gru"
    out: dict[str, Any] = {"obs_mode": obs_mode}
    if isinstance(action_space, spaces.Discrete):
        g = math.isqrt(int(action_space.n))
        if g * g != int(action_space.n):
            raise ValueError(f"a Discrete({action_space.n}) action space is not a G×G grid")
        out.update(action_mode="grid", grid_size=g)
    else:
        out["action_mode"] = "continuous"
        out["action_range"] = "symmetric" if float(action_space.low.min()) < 0 else "unit"
    return out


class SB3Agent(Agent):
    """A trained Stable-Baselines3 model as an agent.

    Args:
        model: the SB3 model (``PPO``, ``SAC``, … or ``RecurrentPPO``).
        env_kwargs: env kwargs it was trained with (the sidecar json); ``obs_mode`` / ``action_mode`` /
            ``grid_size`` are checked against the model's spaces.
        path: load the model from this zip instead (``model`` must then be None).
        device: torch device for loading.
        trust_agent: ``True`` to let SB3 unpickle ``path`` fully (it may run code); by default only
            known-safe data types are built (:func:`agents.sb3_files.load_sb3_model`).

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
        return np.clip(np.asarray(actions, dtype=np.float32).reshape(-1, 2), low, 1.0)

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
        data types only; anything else is an :class:`~agents.sb3_files.UntrustedAgentError` saying how to opt
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
        ``eval_episodes``, ``trust_agent`` (for ``--resume``), ``hparams``, ``keep_replay_buffers``,
        ``keep_checkpoints`` and the progress bar; the CLI trains with the recipe (:mod:`agents.sb3_recipes`)."""
        keys = ("n_envs", "obs_mode", "action_mode", "grid_size", "device", "eval_episodes", "trust_agent",
                "hparams", "keep_replay_buffers", "keep_checkpoints")
        out = {k: options[k] for k in keys if options.get(k) is not None}
        if "progress" in options:
            out["progress_bar"] = options["progress"]
        out["recipe"] = True
        return out

    @classmethod
    def learn(cls, env_id: str, steps: int | None, seed: int, out_dir: PathLike, resume: bool = False,
              **env_kwargs) -> "SB3Agent":
        """:func:`train_sb3` with this agent's algorithm (``n_envs``, ``obs_mode``, ``recipe``, ``hparams``, …
        may be in ``env_kwargs``)."""
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

def _default_eval_split(env_id: str, env_kwargs: dict) -> str | None:
    if "dataset" in env_kwargs:
        return None  # a user dataset has no split; evaluate on it (pass eval_env_kwargs to hold out)
    return "val"


def train_sb3(
    algo: str,
    env_id: str,
    steps: int | None,
    out_dir: PathLike,
    seed: int = 0,
    n_envs: int | None = None,
    obs_mode: str | None = None,
    action_mode: str | None = None,
    grid_size: int | None = None,
    device: str = "auto",
    eval_split: str | None = None,
    eval_env_kwargs: dict | None = None,
    eval_episodes: int = 100,
    eval_freq: int | None = None,
    checkpoint_freq: int | None = None,
    resume: bool = False,
    trust_agent: bool = False,
    progress_bar: bool = False,
    algo_kwargs: dict | None = None,
    hparams: dict | None = None,
    recipe: bool = True,
    keep_replay_buffers: str = "none",
    keep_checkpoints: int | None = 2,
    episode_images: int = 4,
    callback=None,
    verbose: int = 0,
    **env_kwargs,
) -> SB3Agent:
    """Train an SB3 algorithm on a GFNet env.

    Args:
        algo: ``ppo``, ``sac``, ``a2c``, ``td3``, ``dqn``, ``recurrent-ppo`` (``sb3-`` prefix accepted).
        env_id: a GFNet env id.
        steps: total env steps (SB3 ``total_timesteps``; on resume, the total including earlier runs), rounded
            up to whole rollouts (see the module docstring); None: the recipe's.
        out_dir: logs, checkpoints and the final model (see the module docstring).
        seed: seeds SB3 (weights, exploration) and the env's image draws.
        n_envs, obs_mode, action_mode, grid_size: override the recipe's (None: the recipe's).
        device: torch device of the env's networks and of the SB3 model.
        eval_split: split of the EvalCallback's env (default ``val``; the training data itself when a
            ``dataset`` is passed); ``eval_env_kwargs`` override any eval env kwarg.
        eval_episodes, eval_freq: episodes per evaluation and env steps between evaluations.
        checkpoint_freq: env steps between checkpoints (default steps / 10).
        resume: continue from the newest valid checkpoint in ``out_dir/checkpoints``.
        trust_agent: ``True`` to unpickle the checkpoint fully when resuming (it may run code).
        progress_bar: a tqdm progress bar (no ``rich`` needed).
        algo_kwargs: constructor arguments of the algorithm (over the recipe's).
        hparams: any recipe key (:mod:`agents.sb3_recipes`) or constructor argument; overrides everything.
        recipe: True (default): start from :data:`agents.sb3_recipes.RECIPES`, as ``gfnet train-agent`` does;
            False: from :func:`agents.sb3_recipes.legacy_recipe` (GRU observations, SB3's networks, 16 envs — the
            settings before the recipe table, which do not learn on the embedded task).
        keep_replay_buffers: off-policy checkpoints save no replay buffer (``none``, the default: a resumed run
            starts with an empty buffer), the ``latest`` one (older ones deleted) or ``all``.
        keep_checkpoints: model checkpoints kept (the newest K; None: all). ``out_dir/best`` keeps the best.
        episode_images: episodes drawn into TensorBoard (``episodes/looks``) at each evaluation; 0: none.
        callback: extra SB3 callback(s), run after the checkpoint and evaluation callbacks.
        **env_kwargs: env arguments (``checkpoint=``, ``data_root=``, ``dataset=``, ``reward=``, …); ``split``
            defaults to ``"train"`` (not the env's evaluation split).

    Returns:
        The trained :class:`SB3Agent`.
    """
    from stable_baselines3.common.callbacks import CallbackList, EvalCallback

    from gfnet_env import make_sb3_vec_env

    from .episode_images import episode_image_callback
    from .sb3_files import progress_callback
    from .sb3_recipes import ENV_KEYS, policy_kwargs, replay_buffer_size, resolve_recipe, sized_rollout, split_recipe

    algo = algo_key(algo)
    agent_cls = AGENT_CLASSES[algo]
    check_trust_flag(trust_agent)
    if keep_replay_buffers not in ("latest", "all", "none"):
        raise ValueError(f"keep_replay_buffers must be 'latest', 'all' or 'none', got {keep_replay_buffers!r}")
    values = resolve_recipe(algo, recipe, hparams, steps=steps, n_envs=n_envs, obs_mode=obs_mode,
                            action_mode=action_mode, grid_size=grid_size,
                            action_range=env_kwargs.pop("action_range", None))
    settings, kwargs = split_recipe(values)
    kwargs = {**kwargs, **(algo_kwargs or {}), **{k: v for k, v in (hparams or {}).items() if k not in ENV_KEYS}}
    steps, n_envs, action_mode = settings.get("steps"), int(settings["n_envs"]), settings["action_mode"]
    if action_mode not in ACTION_MODES[algo]:
        raise ValueError(f"{agent_cls.name} supports action_mode {ACTION_MODES[algo]}, not {action_mode!r}")
    if steps is None or steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out_dir = Path(out_dir)
    env_settings = {k: settings[k] for k in ("obs_mode", "action_mode", "grid_size", "action_range")
                    if settings.get(k) is not None}
    env_kwargs = {"split": "train", **env_kwargs, **env_settings}

    prefix = algo.replace("-", "_")
    ckpt_dir = out_dir / "checkpoints"
    tb_dir = str(out_dir / "tensorboard")
    cls = algorithm_class(algo)
    off_policy = algo in OFF_POLICY
    found = None
    if resume:
        for stale in ckpt_dir.glob(f"{prefix}_*.tmp"):  # left by a run killed while saving
            stale.unlink(missing_ok=True)
        found = latest_checkpoint(ckpt_dir, prefix, replay_buffer=off_policy)
        if found is not None and not trust_agent:
            safe_custom_objects(found[0])  # refuse an untrusted file before building any env

    train_env = make_sb3_vec_env(env_id, n_envs=n_envs, seed=seed, device=device, **env_kwargs)
    eval_kwargs = dict(env_kwargs)
    split = eval_split if eval_split is not None else _default_eval_split(env_id, env_kwargs)
    if split is not None:
        eval_kwargs["split"] = split
    eval_kwargs.update(eval_env_kwargs or {})
    eval_n = max(1, min(n_envs, eval_episodes))
    eval_env = make_sb3_vec_env(env_id, n_envs=eval_n, seed=seed + 10_000, device=device, **eval_kwargs)

    if found is not None:
        path, done = found
        model = load_sb3_model(cls, path, trust_agent=trust_agent, env=train_env, device=device,
                               tensorboard_log=tb_dir)
        buffer = ckpt_dir / f"{prefix}_replay_buffer_{done}_steps.pkl"
        if off_policy and buffer.exists():
            load_replay_buffer(model, buffer, trust_agent=trust_agent)
        print(f"resuming {agent_cls.name} from {path} ({model.num_timesteps} steps done)") if verbose else None
    else:
        if resume:
            print(f"--resume: no checkpoint in {ckpt_dir}; starting from scratch")
        dict_obs = settings["obs_mode"] == "dict"
        policy = ("MultiInputLstmPolicy" if dict_obs else "MlpLstmPolicy") if algo == "recurrent-ppo" else \
            ("MultiInputPolicy" if dict_obs else "MlpPolicy")
        obs_space = train_env.observation_space
        obs_bytes = 4 * (sum(int(np.prod(s.shape or (1,))) for s in obs_space.spaces.values())
                         if hasattr(obs_space, "spaces") else int(np.prod(obs_space.shape)))
        noise = settings.get("action_noise_std")
        if noise:
            if action_mode != "continuous":
                raise ValueError(f"action_noise_std needs continuous actions, not {action_mode!r}")
            from stable_baselines3.common.noise import NormalActionNoise

            dim = int(np.prod(train_env.action_space.shape))
            kwargs["action_noise"] = NormalActionNoise(np.zeros(dim), float(noise) * np.ones(dim))
        if off_policy:
            wanted = int(kwargs.get("buffer_size", 1_000_000))
            kwargs["buffer_size"] = replay_buffer_size(wanted, obs_bytes, settings.get("buffer_bytes"))
            if kwargs["buffer_size"] < wanted:
                print(f"{agent_cls.name}: replay buffer capped at {kwargs['buffer_size']} transitions "
                      f"({2 * obs_bytes} bytes each; buffer_bytes={settings.get('buffer_bytes')})")
        else:
            sized_rollout(kwargs, settings.get("rollout_steps"), n_envs)
        pk = policy_kwargs(settings, kwargs)
        kwargs.pop("policy_kwargs", None)
        try:
            model = cls(policy, train_env, seed=seed, device=device, tensorboard_log=tb_dir, verbose=verbose,
                        **({"policy_kwargs": pk} if pk else {}), **kwargs)
        except TypeError as e:  # an unknown --hparams key; nothing written to out_dir yet
            train_env.close()
            eval_env.close()
            raise ValueError(f"{agent_cls.name}: {e} (keys: agents/sb3_recipes.py or the SB3 constructor)") from e
    out_dir.mkdir(parents=True, exist_ok=True)

    remaining = steps - int(model.num_timesteps)
    unit = step_unit(model)
    if unit and remaining > 0 and steps % unit:
        print(f"{agent_cls.name}: SB3 trains in whole rollouts of {unit} env steps (n_envs={model.n_envs}); "
              f"--steps {steps} trains {math.ceil(steps / unit) * unit} in total")
    if unit and not off_policy and unit * 5 > steps:
        warnings.warn(f"{agent_cls.name}: one rollout is {unit} env steps (n_steps·n_envs) of {steps}: fewer "
                      f"than 5 updates; lower n_steps or n_envs, or train longer", stacklevel=2)
    if keep_checkpoints is not None and int(keep_checkpoints) < 1:
        raise ValueError(f"keep_checkpoints must be >= 1 or None (all), got {keep_checkpoints}")
    checkpoints = checkpoint_callback(ckpt_dir, prefix, checkpoint_freq or max(steps // 10, n_envs),
                                      replay_buffer=off_policy and keep_replay_buffers != "none",
                                      keep_all_buffers=keep_replay_buffers == "all",
                                      keep_checkpoints=keep_checkpoints)
    # the bar: uniformly random actions on the evaluation env (same episodes count), measured before training
    random_reward = random_policy_reward(eval_env, eval_episodes, seed=seed + 20_000) if remaining > 0 else None
    callbacks = [checkpoints,
                 EvalCallback(eval_env, n_eval_episodes=eval_episodes,
                              eval_freq=max(1, (eval_freq or max(steps // 10, n_envs)) // n_envs),
                              log_path=str(out_dir / "eval"), best_model_save_path=None,
                              callback_on_new_best=best_model_callback(out_dir / "best" / "best_model.zip"),
                              callback_after_eval=None if random_reward is None else
                              below_random_callback(random_reward, steps // 2, agent_cls.name),
                              deterministic=True, verbose=verbose, warn=False)]
    if progress_bar:
        # the bar's end is the step count SB3 will reach: whole rollouts / collections (printed above)
        callbacks.append(progress_callback(math.ceil(steps / unit) * unit if unit else steps, desc=agent_cls.name))
    if episode_images:  # a few deterministic episodes drawn into TensorBoard (split as the evaluation's)
        callbacks.append(episode_image_callback(env_id, eval_kwargs, eval_freq or max(steps // 10, n_envs),
                                                wrap=agent_cls, n_images=int(episode_images), split=None,
                                                device=device))
    callbacks += list(callback) if isinstance(callback, (list, tuple)) else [callback] if callback else []

    try:
        if remaining > 0:
            try:
                model.learn(total_timesteps=remaining, callback=CallbackList(callbacks),
                            reset_num_timesteps=found is None, tb_log_name=prefix)
            except BaseException:
                # also on a crash or Ctrl-C nothing done is lost: save the last consistent state
                checkpoints.rollback()
                checkpoints.save()
                raise
            checkpoints.save()
    finally:
        train_env.close()
        eval_env.close()

    agent = agent_cls(model, env_kwargs=jsonable(env_kwargs))
    agent.metadata = {"env_id": env_id, "seed": seed, "steps": steps, "hparams": jsonable(values)}
    file = f"sb3_{prefix}.zip"
    agent.save(out_dir / file)
    write_agent_json(out_dir, agent_cls.name, file, env_id=env_id, env_kwargs=env_kwargs, seed=seed, steps=steps,
                     num_timesteps=int(model.num_timesteps))
    return agent


def export_for_inference(zip_in: PathLike, zip_out: PathLike, trust_agent: bool = False) -> Path:
    """Copy an SB3 model zip without its optimizer moments (about 2/3 of the file for Adam).

    The policy acts exactly the same; training resumed from the copy restarts Adam's running averages.
    Used to keep the shipped agent small. ``trust_agent`` as in :meth:`SB3Agent.load`.
    """
    zip_in, zip_out = Path(zip_in), Path(zip_out)
    meta = json.loads(zip_in.with_suffix(".json").read_text()) if zip_in.with_suffix(".json").exists() else {}
    model = load_sb3_model(algorithm_class(meta.get("algo", "ppo")), zip_in, trust_agent=trust_agent, device="cpu")
    # PPO/A2C/DQN/RecurrentPPO keep one optimizer on the policy, SAC/TD3 one each on the actor and the critic
    for part in (model.policy, getattr(model.policy, "actor", None), getattr(model.policy, "critic", None)):
        optimizer = getattr(part, "optimizer", None)
        if optimizer is not None:
            optimizer.state.clear()
    return save_model(model, zip_out)
