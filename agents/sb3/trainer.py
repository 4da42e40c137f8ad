"""Training a Stable-Baselines3 algorithm on a GFNet env: the model, its run folder and its callbacks.

:func:`train_model` runs these steps, each a function below:

1. :func:`_resolve` — the algorithm's recipe (:mod:`agents.sb3.recipes`) with the caller's values over it, split
   into env settings and constructor arguments;
2. :func:`_find_checkpoint` (``resume``) — the newest valid checkpoint, refused before any env is built when
   loading it would run code that is not trusted;
3. :func:`_make_envs` — the training env and the evaluation env (held-out split, own seed);
4. :func:`_load_model` or :func:`_new_model` — the checkpoint's model, or a fresh one built from the recipe;
5. :func:`_callbacks` — consistent checkpoints, evaluation (best model, below-random warning), the progress bar
   and episode pictures (both drawn by one :class:`~agents.run_log.RunLog`, released however the run ends);
6. :func:`_learn` — ``model.learn`` that leaves a consistent checkpoint behind on success, crash or Ctrl-C.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..base import PathLike
from ..run_log import RunLog
from ..trained import jsonable, settings_changes, settings_refusal
from .algorithms import ACTION_MODES, algo_key, algorithm_class
from .callbacks import (below_random_callback, best_model_callback, checkpoint_callback, episode_image_callback,
                        progress_callback, random_policy_reward, step_unit)
from feature_nets.files import atomic_write_text

from .files import (_read_data, check_trust_flag, latest_checkpoint, load_replay_buffer, load_sb3_model,
                    safe_custom_objects)
from .recipes import OFF_POLICY


@dataclass
class TrainedModel:
    """What :func:`train_model` returns: the SB3 model and what its agent records about the run."""

    model: Any
    env_kwargs: dict[str, Any]  # of the training env (``split`` and the recipe's env settings included)
    hparams: dict[str, Any]     # the resolved recipe, with the values the model ran with
    steps: int                  # the requested total (SB3 may have made more: ``model.num_timesteps``)
    forced_settings: list | None = None  # resumes with other settings (--force-settings): when, and what changed


def _default_eval_split(env_id: str, env_kwargs: dict) -> str | None:
    """The task's validation split (:attr:`gfnet_env.tasks.Task.validation_split`) for the EvalCallback's env."""
    if "dataset" in env_kwargs:
        return None  # a user dataset has no split; evaluate on it (pass eval_env_kwargs to hold out)
    from gfnet_env.tasks import get_task

    task = get_task(env_id)
    return task.validation_split if "split" in task.kwargs else None


def train_model(
    algo: str,
    wrap: Callable[[Any], Any],
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
    force_settings: bool = False,
    trust_agent: bool = False,
    progress_bar: bool = False,
    algo_kwargs: dict | None = None,
    hparams: dict | None = None,
    keep_replay_buffers: str = "none",
    keep_checkpoints: int | None = 2,
    episode_images: int = 4,
    callback=None,
    verbose: int = 0,
    on_start: Callable[[], None] | None = None,
    **env_kwargs,
) -> TrainedModel:
    """Train an SB3 algorithm on a GFNet env (:func:`agents.sb3.agent.train_sb3` wraps the model as an agent).

    Args:
        wrap: the agent class of the algorithm, called on the live model to act in the TensorBoard pictures.
        algo: ``ppo``, ``sac``, ``a2c``, ``td3``, ``dqn``, ``recurrent-ppo`` (``sb3-`` prefix accepted).
        env_id: a GFNet env id.
        steps: total env steps (SB3 ``total_timesteps``; on resume, the total including earlier runs), rounded
            up to whole rollouts (see :mod:`agents.sb3.agent`); None: the recipe's.
        out_dir: logs, checkpoints and the final model (see :mod:`agents.sb3.agent`).
        seed: seeds SB3 (weights, exploration) and the env's image draws.
        n_envs, obs_mode, action_mode, grid_size: override the recipe's (None: the recipe's).
        device: torch device of the env's networks and of the SB3 model.
        eval_split: split of the EvalCallback's env (default ``val``; the training data itself when a
            ``dataset`` is passed); ``eval_env_kwargs`` override any eval env kwarg.
        eval_episodes, eval_freq: episodes per evaluation and env steps between evaluations.
        checkpoint_freq: env steps between checkpoints (default steps / 10).
        resume: continue from the newest valid checkpoint in ``out_dir/checkpoints``. Settings that differ from the
            saved run's (``out_dir/train_settings.json``: seed, env, every recipe value and constructor argument;
            ``steps`` may grow) are refused before any env is built, naming them, unless ``force_settings``.
        force_settings: resume with other settings anyway: constructor arguments are applied to the loaded model
            (``learning_rate=0.5`` is the rate it then trains with), env settings to the new envs; the change is
            recorded (``train_settings.json``, the agent's metadata and ``agent.json``: ``forced_settings``).
        trust_agent: ``True`` to unpickle the checkpoint fully when resuming (it may run code).
        progress_bar: a tqdm progress bar (no ``rich`` needed).
        algo_kwargs: constructor arguments of the algorithm (over the recipe's).
        hparams: any recipe key (:mod:`agents.sb3.recipes`) or constructor argument; overrides everything.
        keep_replay_buffers: off-policy checkpoints save no replay buffer (``none``, the default: a resumed run
            starts with an empty buffer), the ``latest`` one (older ones deleted) or ``all``.
        keep_checkpoints: model checkpoints kept (the newest K; None: all). ``out_dir/best`` keeps the best.
        episode_images: episodes drawn into TensorBoard (``episodes/looks``) at each evaluation; 0: none.
        callback: extra SB3 callback(s), run after the checkpoint and evaluation callbacks.
        on_start: called once the inputs are checked (recipe, envs, the model or the checkpoint resumed), just
            before anything is written into ``out_dir`` (``gfnet train-agent`` marks the folder unfinished there).
        **env_kwargs: env arguments (``checkpoint=``, ``data_root=``, ``dataset=``, ``reward=``, …); ``split``
            defaults to ``"train"`` (not the env's evaluation split).

    Returns:
        The trained model with the training env's kwargs and the resolved recipe.
    """
    algo = algo_key(algo)
    name = "sb3-" + algo
    check_trust_flag(trust_agent)
    if keep_replay_buffers not in ("latest", "all", "none"):
        raise ValueError(f"keep_replay_buffers must be 'latest', 'all' or 'none', got {keep_replay_buffers!r}")
    if keep_checkpoints is not None and int(keep_checkpoints) < 1:
        raise ValueError(f"keep_checkpoints must be >= 1 or None (all), got {keep_checkpoints}")
    recipe = _resolve(algo, steps, hparams, algo_kwargs, env_kwargs, n_envs=n_envs, obs_mode=obs_mode,
                      action_mode=action_mode, grid_size=grid_size)
    out_dir = Path(out_dir)
    prefix = algo.replace("-", "_")
    ckpt_dir = out_dir / "checkpoints"
    off_policy = algo in OFF_POLICY
    found = _find_checkpoint(ckpt_dir, prefix, off_policy, trust_agent) if resume else None
    settings = _run_settings(env_id, seed, recipe)
    history, overrides = _check_resume_settings(out_dir, found, settings, recipe, force_settings)

    train_env, eval_env, eval_kwargs = _make_envs(env_id, recipe, seed, device, eval_split, eval_env_kwargs,
                                                  eval_episodes)
    try:
        tb_dir = str(out_dir / "tensorboard")
        if found is not None:
            model = _load_model(algo, found, ckpt_dir, train_env, trust_agent, device, tb_dir, overrides)
            print(f"resuming {name} from {found[0]} ({model.num_timesteps} steps done)") if verbose else None
        else:
            if resume:
                print(f"--resume: no checkpoint in {ckpt_dir}; starting from scratch")
            model = _new_model(algo, recipe, train_env, seed, device, tb_dir, verbose)
        if on_start is not None:
            on_start()
        out_dir.mkdir(parents=True, exist_ok=True)
        if found is None or history or not (out_dir / SETTINGS_FILE).exists():
            _write_settings(out_dir, settings, history)

        remaining = recipe.steps - int(model.num_timesteps)
        _check_step_count(model, recipe.steps, remaining, name, off_policy)
        # the bar: uniformly random actions on the evaluation env (same episodes count), measured before training
        random_reward = random_policy_reward(eval_env, eval_episodes, seed=seed + 20_000) if remaining > 0 else None
        with RunLog() as log:  # the progress bar and the pictures' core, released however learn() ends
            checkpoints, callbacks = _callbacks(
                model, algo, out_dir, recipe, eval_env, eval_kwargs, env_id, wrap, log,
                eval_episodes=eval_episodes, eval_freq=eval_freq, checkpoint_freq=checkpoint_freq,
                random_reward=random_reward, progress_bar=progress_bar, episode_images=episode_images,
                keep_replay_buffers=keep_replay_buffers, keep_checkpoints=keep_checkpoints, device=device,
                verbose=verbose, callback=callback)
            if remaining > 0:
                _learn(model, remaining, callbacks, checkpoints, reset_num_timesteps=found is None, prefix=prefix)
    finally:
        train_env.close()
        eval_env.close()

    return TrainedModel(model, jsonable(recipe.env_kwargs), jsonable(_ran_values(model, recipe.values)), recipe.steps,
                        history or None)


#: The settings a run was started with (and each forced change), beside its checkpoints.
SETTINGS_FILE = "train_settings.json"


def _run_settings(env_id: str, seed: int, recipe: "_Recipe") -> dict[str, Any]:
    """What a resume must match: the env, the seed, every recipe value and constructor argument (JSON forms)."""
    return jsonable({"env_id": env_id, "seed": seed, "env_kwargs": recipe.env_kwargs,
                     **{k: v for k, v in recipe.values.items() if k != "steps"}, **recipe.kwargs})


def _saved_settings(out_dir: Path, found: tuple[Path, int], now: dict) -> tuple[dict[str, Any], bool]:
    """(the saved run's settings, whether they are complete): its ``train_settings.json`` over the plain values the
    checkpoint's model itself holds (``learning_rate`` 3e-4 where the recipe left SB3's default, ``gamma``,
    ``n_steps``, ``seed``, …); for a run written before the settings file existed, only the latter."""
    data = _read_data(found[0])
    held = {k: data[k] for k in now if k in data and isinstance(data[k], (int, float, str, bool))}
    path = out_dir / SETTINGS_FILE
    if path.is_file():
        return {**held, **json.loads(path.read_text())}, True
    return held, False


def _check_resume_settings(out_dir: Path, found, settings: dict, recipe: "_Recipe", force: bool
                           ) -> tuple[list, dict[str, Any]]:
    """(the forced-settings history to record, constructor arguments to apply to the loaded model); a resume whose
    settings differ from the saved run's is refused unless ``force``."""
    if found is None:
        return [], {}
    saved, complete = _saved_settings(out_dir, found, settings)
    # a setting the saved run left to SB3's default and the model does not hold cannot be compared
    changes = settings_changes(saved, settings if complete else {k: v for k, v in settings.items() if k in saved})
    if changes and not force:
        raise settings_refusal(changes, f"the run in {out_dir} ({out_dir / SETTINGS_FILE})")
    history = list(saved.get("forced_settings") or [])
    if changes:
        history.append({"env_steps": found[1], "changed": {k: {"saved": old, "now": new}
                                                           for k, (old, new) in changes.items()}})
        print(f"--force-settings: from env step {found[1]} on, " + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new)
                                                                           in changes.items()))
    return history, {k: recipe.kwargs[k] for k in changes if k in recipe.kwargs}


def _write_settings(out_dir: Path, settings: dict, history: list) -> None:
    atomic_write_text(out_dir / SETTINGS_FILE, json.dumps({**settings, **({"forced_settings": history} if history
                                                                          else {})}, indent=1, sort_keys=True))


def _ran_values(model, values: dict[str, Any]) -> dict[str, Any]:
    """The recipe with each constructor argument as the model holds it (a plain number or string), so that what is
    recorded is what trained (a resumed model keeps its own unless forced)."""
    from .recipes import ENV_KEYS

    out = dict(values)
    for k in values:
        held = getattr(model, k, None)
        if k not in ENV_KEYS and isinstance(held, (int, float, str, bool)):
            out[k] = held
    return out


@dataclass
class _Recipe:
    """A resolved recipe: what the run records, the env it trains on and the algorithm's constructor arguments."""

    values: dict[str, Any]      # the recipe with the caller's values over it (recorded as the agent's hparams)
    settings: dict[str, Any]    # its :data:`~agents.sb3.recipes.ENV_KEYS` entries
    kwargs: dict[str, Any]      # constructor arguments: the recipe's, then algo_kwargs, then hparams
    env_kwargs: dict[str, Any]  # of the training env: ``split="train"``, the caller's, the recipe's env settings
    steps: int
    n_envs: int


def _resolve(algo: str, steps: int | None, hparams: dict | None, algo_kwargs: dict | None, env_kwargs: dict,
             **given: Any) -> _Recipe:
    """The recipe of ``algo`` < ``given`` (``n_envs=``, ``obs_mode=``, …; None: the recipe's) < ``hparams``, checked
    (steps, action mode) before anything is built; ``action_range`` is taken out of ``env_kwargs`` into the recipe."""
    from .recipes import ENV_KEYS, check_hparams, resolve_recipe, split_recipe

    values = resolve_recipe(algo, hparams, steps=steps, **given, action_range=env_kwargs.pop("action_range", None))
    settings, kwargs = split_recipe(values)
    kwargs = {**kwargs, **(algo_kwargs or {}), **{k: v for k, v in (hparams or {}).items() if k not in ENV_KEYS}}
    check_hparams({**settings, **kwargs})  # gamma=-5, learning_rate=nan, n_steps=0: refused before anything is built
    steps, action_mode = settings.get("steps"), settings["action_mode"]
    if action_mode not in ACTION_MODES[algo]:
        raise ValueError(f"sb3-{algo} supports action_mode {ACTION_MODES[algo]}, not {action_mode!r}")
    if steps is None or steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    env_settings = {k: settings[k] for k in ("obs_mode", "action_mode", "grid_size", "action_range")
                    if settings.get(k) is not None}
    return _Recipe(values, settings, kwargs, {"split": "train", **env_kwargs, **env_settings}, steps,
                   int(settings["n_envs"]))


def _find_checkpoint(ckpt_dir: Path, prefix: str, off_policy: bool, trust_agent: bool) -> tuple[Path, int] | None:
    """The newest valid checkpoint (path, env steps) to resume from, after deleting the temporary files of a run
    killed while saving; an untrusted file is refused here, before any env is built."""
    for stale in ckpt_dir.glob(f"{prefix}_*.tmp"):
        stale.unlink(missing_ok=True)
    found = latest_checkpoint(ckpt_dir, prefix, replay_buffer=off_policy)
    if found is not None and not trust_agent:
        safe_custom_objects(found[0])
    return found


def _make_envs(env_id: str, recipe: _Recipe, seed: int, device: str, eval_split: str | None,
               eval_env_kwargs: dict | None, eval_episodes: int) -> tuple[Any, Any, dict]:
    """The training vec env and the evaluation vec env (its split, ``seed + 10000``, at most ``eval_episodes``
    envs); returns both and the evaluation env's kwargs (the pictures are drawn on the same split)."""
    from gfnet_env.sb3 import make_sb3_vec_env

    env_kwargs, n_envs = recipe.env_kwargs, recipe.n_envs
    train_env = make_sb3_vec_env(env_id, n_envs=n_envs, seed=seed, device=device, **env_kwargs)
    eval_kwargs = dict(env_kwargs)
    split = eval_split if eval_split is not None else _default_eval_split(env_id, env_kwargs)
    if split is not None:
        eval_kwargs["split"] = split
    eval_kwargs.update(eval_env_kwargs or {})
    eval_n = max(1, min(n_envs, eval_episodes))
    try:
        eval_env = make_sb3_vec_env(env_id, n_envs=eval_n, seed=seed + 10_000, device=device, **eval_kwargs)
    except BaseException:
        train_env.close()
        raise
    return train_env, eval_env, eval_kwargs


def _load_model(algo: str, found: tuple[Path, int], ckpt_dir: Path, train_env, trust_agent: bool, device: str,
                tb_dir: str, overrides: dict[str, Any] | None = None):
    """The checkpoint's model on ``train_env``, with its replay buffer when one was saved beside it; ``overrides``:
    constructor arguments set on it before SB3 sets it up (a forced resume's new values)."""
    path, done = found
    model = load_sb3_model(algorithm_class(algo), path, trust_agent=trust_agent, env=train_env, device=device,
                           tensorboard_log=tb_dir, **(overrides or {}))
    buffer = ckpt_dir / f"{algo.replace('-', '_')}_replay_buffer_{done}_steps.pkl"
    if algo in OFF_POLICY and buffer.exists():
        load_replay_buffer(model, buffer, trust_agent=trust_agent)
    return model


def _new_model(algo: str, recipe: _Recipe, train_env, seed: int, device: str, tb_dir: str, verbose: int):
    """A fresh model from the recipe: SB3's policy class for the observation, exploration noise, the replay
    buffer capped to the memory (off-policy) or the rollout sized to ``n_envs`` (on-policy), ``policy_kwargs``."""
    from .recipes import policy_kwargs, replay_buffer_size, sized_rollout

    name, settings, kwargs = "sb3-" + algo, recipe.settings, dict(recipe.kwargs)
    dict_obs = settings["obs_mode"] == "dict"
    policy = ("MultiInputLstmPolicy" if dict_obs else "MlpLstmPolicy") if algo == "recurrent-ppo" else \
        ("MultiInputPolicy" if dict_obs else "MlpPolicy")
    obs_space = train_env.observation_space
    obs_bytes = 4 * (sum(int(np.prod(s.shape or (1,))) for s in obs_space.spaces.values())
                     if hasattr(obs_space, "spaces") else int(np.prod(obs_space.shape)))
    noise = settings.get("action_noise_std")
    if noise:
        if settings["action_mode"] != "continuous":
            raise ValueError(f"action_noise_std needs continuous actions, not {settings['action_mode']!r}")
        from stable_baselines3.common.noise import NormalActionNoise

        dim = int(np.prod(train_env.action_space.shape))
        kwargs["action_noise"] = NormalActionNoise(np.zeros(dim), float(noise) * np.ones(dim))
    if algo in OFF_POLICY:
        wanted = int(kwargs.get("buffer_size", 1_000_000))
        kwargs["buffer_size"] = replay_buffer_size(wanted, obs_bytes, settings.get("buffer_bytes"))
        if kwargs["buffer_size"] < wanted:
            print(f"{name}: replay buffer capped at {kwargs['buffer_size']} transitions "
                  f"({2 * obs_bytes} bytes each; buffer_bytes={settings.get('buffer_bytes')})")
    else:
        sized_rollout(kwargs, settings.get("rollout_steps"), recipe.n_envs)
    _check_memory(algo, kwargs, settings, train_env, recipe.n_envs, obs_bytes, device)
    pk = policy_kwargs(settings, kwargs)
    kwargs.pop("policy_kwargs", None)
    try:
        return algorithm_class(algo)(policy, train_env, seed=seed, device=device, tensorboard_log=tb_dir,
                                     verbose=verbose, **({"policy_kwargs": pk} if pk else {}), **kwargs)
    except TypeError as e:  # an unknown --hparams key; nothing written to out_dir yet
        raise ValueError(f"{name}: {e} (keys: agents/sb3/recipes.py or the SB3 constructor)") from e


def _check_memory(algo: str, kwargs: dict, settings: dict, train_env, n_envs: int, obs_bytes: int, device: str) -> None:
    """:func:`agents.sb3.recipes.check_model_memory` with the free memory of the model's device and of the host."""
    import torch

    from feature_nets.devices import resolve_device
    from gfnet_env.checks import available_memory

    from .recipes import check_model_memory

    action_dim = int(np.prod(train_env.action_space.shape)) if train_env.action_space.shape else 1
    host = available_memory(torch.device("cpu"))
    dev = resolve_device(device)
    check_model_memory(algo, kwargs, settings, obs_bytes // 4, action_dim, n_envs,
                       available_memory(dev) if dev.type == "cuda" else host, host)


def _check_step_count(model, steps: int, remaining: int, name: str, off_policy: bool) -> None:
    """Say how many env steps SB3 will really make (whole rollouts / collections), and warn when one rollout is
    more than a fifth of the run (fewer than 5 updates)."""
    unit = step_unit(model)
    if unit and remaining > 0 and steps % unit:
        print(f"{name}: SB3 trains in whole rollouts of {unit} env steps (n_envs={model.n_envs}); "
              f"--steps {steps} trains {math.ceil(steps / unit) * unit} in total")
    if unit and not off_policy and unit * 5 > steps:
        warnings.warn(f"{name}: one rollout is {unit} env steps (n_steps·n_envs) of {steps}: fewer "
                      f"than 5 updates; lower n_steps or n_envs, or train longer", stacklevel=4)


def _callbacks(model, algo: str, out_dir: Path, recipe: _Recipe, eval_env, eval_kwargs: dict,
               env_id: str, wrap, log: RunLog, *, eval_episodes: int, eval_freq: int | None,
               checkpoint_freq: int | None, random_reward: float | None, progress_bar: bool, episode_images: int,
               keep_replay_buffers: str, keep_checkpoints: int | None, device: str, verbose: int, callback):
    """The run's callbacks, in order: consistent checkpoints, the evaluation (best model, below-random warning),
    the progress bar and the episode pictures (both through ``log``), then the caller's. Returns (the checkpoint
    callback, the list)."""
    from stable_baselines3.common.callbacks import EvalCallback

    name, prefix, off_policy = "sb3-" + algo, algo.replace("-", "_"), algo in OFF_POLICY
    steps, n_envs = recipe.steps, recipe.n_envs
    checkpoints = checkpoint_callback(out_dir / "checkpoints", prefix, checkpoint_freq or max(steps // 10, n_envs),
                                      replay_buffer=off_policy and keep_replay_buffers != "none",
                                      keep_all_buffers=keep_replay_buffers == "all",
                                      keep_checkpoints=keep_checkpoints)
    callbacks = [checkpoints,
                 EvalCallback(eval_env, n_eval_episodes=eval_episodes,
                              eval_freq=max(1, (eval_freq or max(steps // 10, n_envs)) // n_envs),
                              log_path=str(out_dir / "eval"), best_model_save_path=None,
                              callback_on_new_best=best_model_callback(out_dir / "best" / "best_model.zip"),
                              callback_after_eval=None if random_reward is None else
                              below_random_callback(random_reward, steps // 2, name),
                              deterministic=True, verbose=verbose, warn=False)]
    if progress_bar:
        # the bar's end is the step count SB3 will reach: whole rollouts / collections (printed before)
        unit = step_unit(model)
        callbacks.append(progress_callback(math.ceil(steps / unit) * unit if unit else steps, desc=name,
                                           run_log=log))
    if episode_images:  # a few deterministic episodes drawn into TensorBoard (split as the evaluation's)
        callbacks.append(episode_image_callback(env_id, eval_kwargs, eval_freq or max(steps // 10, n_envs),
                                                wrap=wrap, n_images=int(episode_images), split=None,
                                                device=device, run_log=log))
    callbacks += list(callback) if isinstance(callback, (list, tuple)) else [callback] if callback else []
    return checkpoints, callbacks


def _learn(model, remaining: int, callbacks: list, checkpoints, reset_num_timesteps: bool, prefix: str) -> None:
    """``model.learn`` for the ``remaining`` env steps, then a final checkpoint. Also on a crash or Ctrl-C nothing
    done is lost: the model is rolled back to its last consistent state (an on-policy run's unfinished rollout)
    and checkpointed before the error goes on."""
    from stable_baselines3.common.callbacks import CallbackList

    try:
        model.learn(total_timesteps=remaining, callback=CallbackList(callbacks),
                    reset_num_timesteps=reset_num_timesteps, tb_log_name=prefix)
    except BaseException:
        checkpoints.rollback()
        checkpoints.save()
        raise
    checkpoints.save()
