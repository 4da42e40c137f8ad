"""Stable-Baselines3 callbacks of a training run: consistent checkpoints (newest K kept), the progress bar,
the below-random warning, the best model, and episode pictures in TensorBoard.

The progress bar and the episode pictures are drawn by a :class:`~agents.run_log.RunLog`, as the paper PPO
trainer draws them; :func:`agents.sb3.trainer.train_model` passes its own, which releases them however the run
ends."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..episode_images import DEFAULT_IMAGES, EVAL_SPLIT, TAG, evaluation_core
from ..run_log import RunLog
from .files import CHECKPOINT_NAME, save_model, save_replay_buffer


# --- checkpoints during training ----------------------------------------------------------------------------
def checkpoint_callback(folder, prefix: str, every: int, replay_buffer: bool, keep_all_buffers: bool = False,
                        keep_checkpoints: int | None = 2):
    """An SB3 callback that checkpoints only where the model is consistent, and can roll back to that point.

    Checkpoints ``<prefix>_<N>_steps.zip`` (and, with ``replay_buffer``, ``<prefix>_replay_buffer_<N>_steps.pkl``)
    are written atomically at the start of a rollout once ``every`` env steps have passed since the last one.
    There an on-policy model (PPO, A2C, RecurrentPPO) has trained on every rollout it counted: its weights
    change only between rollouts, and an unfinished rollout cannot be saved. The callback keeps a copy of the
    policy and optimizer state (and step count) taken there; :meth:`rollback` restores it after an
    interruption, so the state saved on Ctrl-C is the one a resumed run can continue exactly as an
    uninterrupted run would (same step count; the partial rollout's env steps are collected again).
    Off-policy models (SAC, TD3, DQN: SB3's ``OffPolicyAlgorithm``) train after every collection step and keep
    no copy. With ``replay_buffer`` their buffer is saved too; each one saved deletes the older ones (each file is
    as large as the buffer), unless ``keep_all_buffers``.
    Only the newest ``keep_checkpoints`` model zips are kept (None: all): a checkpoint is for resuming, and the
    best evaluated model is kept apart (``OUT/best``).
    """
    import copy

    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    class ConsistentCheckpoints(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.last_saved = 0
            self.snapshot: tuple | None = None

        def _on_training_start(self) -> None:
            self.last_saved = int(self.model.num_timesteps)

        def _on_rollout_start(self) -> None:
            n = int(self.model.num_timesteps)
            if not isinstance(self.model, OffPolicyAlgorithm):
                policy = self.model.policy
                self.snapshot = (n, int(getattr(self.model, "_n_updates", 0)),
                                 {k: v.detach().clone() for k, v in policy.state_dict().items()},
                                 copy.deepcopy(policy.optimizer.state_dict()))
            if n - self.last_saved >= every:
                self.save()
                self.last_saved = n

        def _on_step(self) -> bool:
            return True

        def save(self) -> Path:
            """Checkpoint the model as it is now (and its replay buffer)."""
            n = int(self.model.num_timesteps)
            path = save_model(self.model, Path(folder) / f"{prefix}_{n}_steps.zip")
            if keep_checkpoints is not None:
                prune_checkpoints(folder, prefix, keep_checkpoints)
            if replay_buffer and getattr(self.model, "replay_buffer", None) is not None:
                new = save_replay_buffer(self.model, Path(folder) / f"{prefix}_replay_buffer_{n}_steps.pkl")
                if not keep_all_buffers:
                    prune_replay_buffers(folder, prefix, keep=Path(new).name)
            return path

        def rollback(self) -> bool:
            """Restore the state of the last rollout start if the model moved on since; True if it did."""
            if self.snapshot is None or self.snapshot[0] == int(self.model.num_timesteps) and \
                    self.snapshot[1] == int(getattr(self.model, "_n_updates", 0)):
                return False
            n, updates, weights, optim = self.snapshot
            self.model.policy.load_state_dict(weights)
            self.model.policy.optimizer.load_state_dict(optim)
            self.model.num_timesteps = n
            self.model._n_updates = updates
            return True

    return ConsistentCheckpoints()


def prune_checkpoints(folder, prefix: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` (≥ 1) model checkpoints ``<prefix>_<N>_steps.zip`` in ``folder``, and
    the replay buffers of the deleted ones; returns the deleted paths."""
    found = sorted((int(m.group(1)), f) for f in Path(folder).glob(f"{prefix}_*_steps.zip")
                   if (m := CHECKPOINT_NAME.search(f.name)) and "replay_buffer" not in f.name)
    gone = []
    for steps, f in found[: max(0, len(found) - max(1, int(keep)))]:
        for old in (f, Path(folder) / f"{prefix}_replay_buffer_{steps}_steps.pkl"):
            if old.exists():
                old.unlink(missing_ok=True)
                gone.append(old)
    return gone


def prune_replay_buffers(folder, prefix: str, keep: str) -> list[Path]:
    """Delete every ``<prefix>_replay_buffer_<N>_steps.pkl`` in ``folder`` except the file named ``keep``;
    returns the deleted paths."""
    gone = []
    for f in Path(folder).glob(f"{prefix}_replay_buffer_*_steps.pkl"):
        if f.name != keep:
            f.unlink(missing_ok=True)
            gone.append(f)
    return gone


def progress_callback(total: int, desc: str = "training", run_log: RunLog | None = None):
    """An SB3 callback drawing the run log's tqdm bar of env steps up to ``total`` (SB3's own bar needs ``rich``).

    The bar is :meth:`RunLog.open_progress`'s, as the paper PPO trainer draws it: ``run_log``'s (which then also
    closes it when training fails: SB3 skips the end-of-training hook when ``learn`` raises), or a log of its own.
    """
    from stable_baselines3.common.callbacks import BaseCallback

    class TqdmProgress(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.log = run_log if run_log is not None else RunLog()

        def _on_training_start(self) -> None:
            self.log.open_progress(int(total), int(self.model.num_timesteps), desc=desc)

        def _on_step(self) -> bool:
            self.log.advance(int(self.model.num_timesteps))
            return True

        def _on_training_end(self) -> None:
            self.log.close_progress()

    return TqdmProgress()


def random_policy_reward(vec_env, episodes: int, seed: int = 0) -> float:
    """Mean episode return of uniformly random actions on ``vec_env`` (an SB3 VecEnv) over ``episodes`` episodes:
    the bar a learning run must clear (see :func:`below_random_callback`)."""
    space = vec_env.action_space
    space.seed(seed)
    vec_env.seed(seed)
    vec_env.reset()
    n = vec_env.num_envs
    returns, running = [], np.zeros(n)
    while len(returns) < episodes:
        actions = np.stack([space.sample() for _ in range(n)])
        _, rewards, dones, _ = vec_env.step(actions)
        running += rewards
        for i in np.flatnonzero(dones):
            returns.append(float(running[i]))
            running[i] = 0.0
    return float(np.mean(returns[:episodes]))


def below_random_callback(random_reward: float, after_steps: int, name: str):
    """EvalCallback's ``callback_after_eval``: warn once when an evaluation at or after ``after_steps`` env steps
    (half the budget) has a mean reward at or below ``random_reward`` (a run that has not learned anything
    a random patch choice does not already give)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class WarnBelowRandom(BaseCallback):
        warned = False

        def _on_step(self) -> bool:
            reward = float(self.parent.last_mean_reward)
            if not self.warned and self.num_timesteps >= after_steps and reward <= random_reward:
                self.warned = True
                warnings.warn(f"{name}: after {self.num_timesteps} steps the evaluation reward {reward:.4f} is at or "
                              f"below random actions' {random_reward:.4f}: the run is not learning (see docs/sb3.md "
                              f"for the recipes that do)", stacklevel=2)
            return True

    return WarnBelowRandom()


def best_model_callback(path):
    """EvalCallback's ``callback_on_new_best``: each new best model saved atomically to ``path``."""
    from stable_baselines3.common.callbacks import BaseCallback

    class SaveBest(BaseCallback):
        def _on_step(self) -> bool:
            save_model(self.model, path)
            return True

    return SaveBest()


def step_unit(model) -> int | None:
    """Env steps SB3 adds per collection (``n_steps·n_envs`` or ``train_freq·n_envs``), None when per episode."""
    if hasattr(model, "n_steps"):
        return int(model.n_steps) * int(model.n_envs)
    freq = getattr(model, "train_freq", None)
    if freq is not None and getattr(freq.unit, "value", "step") == "step":
        return int(freq.frequency) * int(model.n_envs)
    return None


#: SB3 logger outputs that cannot show an image (TensorBoard is the one that can).
_EXCLUDE = ("stdout", "log", "json", "csv")


def episode_image_callback(env_id: str, env_kwargs: dict[str, Any], every_steps: int, wrap: Callable[[Any], Any],
                           n_images: int = DEFAULT_IMAGES, split: str | None = EVAL_SPLIT,
                           device: str = "auto", deterministic: bool = True, run_log: RunLog | None = None):
    """An SB3 callback logging :func:`~agents.episode_images.episode_image` of the model being trained, tag
    :data:`TAG`.

    The picture is written at the start of training, every ``every_steps`` env steps (at the first
    step at or after each multiple) and at the end, to the model's logger's TensorBoard output
    (``out_dir/tensorboard`` in :func:`agents.sb3.agent.train_sb3`) at the step it was drawn.

    Args:
        env_id: the GFNet env id trained on.
        env_kwargs: env kwargs of the training env (or of its evaluation env: then pass ``split=None``).
            ``obs_mode`` / ``action_mode`` / ``grid_size`` / ``action_range`` are taken from the model's spaces.
        every_steps: env steps (``model.num_timesteps``) between pictures.
        wrap: the project agent class of the algorithm (e.g. :class:`agents.sb3.agent.SB3PPOAgent`), called on
            the live SB3 model (no copy) to act in the pictures' episodes. Passed in, not looked up here, so that
            this module does not import :mod:`agents.sb3.agent`, which imports it.
        n_images: images (rows) per picture: the first ``n_images`` of the split.
        split: as in :func:`evaluation_core` (default ``val``; None keeps ``env_kwargs``' split).
        device: torch device of the core when the training env has none to share.
        deterministic: deterministic actions (the policy's mode), as the evaluation uses.
        run_log: the :class:`~agents.run_log.RunLog` that draws the pictures and owns their core (a log of the
            callback's own when None).

    The networks are the training env's own when it exposes its core (:func:`gfnet_env.make_sb3_vec_env`
    does), so no second copy is loaded. The small core the callback builds starts no threads and is closed at
    the end of training; SB3 skips that hook when ``learn`` raises, so then ``run_log.close()`` (or the
    callback's ``close()``) frees it at once (otherwise garbage collection does).
    """
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Image, TensorBoardOutputFormat

    if int(every_steps) < 1:
        raise ValueError(f"every_steps must be >= 1, got {every_steps}")
    if int(n_images) < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")

    class EpisodeImageCallback(BaseCallback):
        """Logs ``episodes/looks`` pictures of the model being trained (:func:`episode_image_callback`)."""

        def __init__(self) -> None:
            super().__init__(verbose=0)
            self.log = run_log if run_log is not None else RunLog()
            self.agent = None
            self._next = 0  # num_timesteps at or after which the next periodic picture is drawn
            self._last: int | None = None  # num_timesteps of the last picture written

        def _init_callback(self) -> None:
            self.agent = wrap(self.model)
            training_core = getattr(self.training_env, "core", None)  # GFNetVecMonitor / GFNetSB3VecEnv
            core = evaluation_core(
                env_id, env_kwargs, int(n_images), settings=self.agent.env_settings(),
                model=None if training_core is None else training_core.model,
                device=device if training_core is None else training_core.device, split=split)
            self.log.open_pictures(core, int(n_images), write=self._to_tensorboard, deterministic=deterministic)

        def _to_tensorboard(self, image: np.ndarray, step: int) -> None:
            """Write ``image`` straight to the logger's TensorBoard output at ``step``.

            Not ``logger.record``-ed: SB3 dumps recorded values only at the end of a rollout (every
            ``log_interval`` episodes off-policy) and never after training ends, so a recorded picture would carry
            a later step, and the last one would be lost.
            """
            for out in self.logger.output_formats:
                if isinstance(out, TensorBoardOutputFormat):
                    # what logger.record(TAG, Image(...), exclude=_EXCLUDE) + logger.dump(step) writes there
                    out.write({TAG: Image(image, "HWC")}, {TAG: _EXCLUDE}, step)

        def _write(self) -> None:
            """Draw the picture and write it now, at ``num_timesteps`` (once per step count)."""
            step = int(self.num_timesteps)
            if step == self._last:
                return
            self.log.picture(self.agent, step)
            self._last = step

        def _on_training_start(self) -> None:
            self._write()
            self._next = (int(self.num_timesteps) // int(every_steps) + 1) * int(every_steps)

        def _on_step(self) -> bool:
            if self.num_timesteps >= self._next:
                self._write()
                self._next = (int(self.num_timesteps) // int(every_steps) + 1) * int(every_steps)
            return True

        def _on_training_end(self) -> None:
            try:
                self._write()
            finally:
                self.close()

        def close(self) -> None:
            """Close the pictures' core (idempotent; the shared networks stay with the training env)."""
            self.log.close_pictures()

    return EpisodeImageCallback()
