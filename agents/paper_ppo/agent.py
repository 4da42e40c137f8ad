"""The paper's patch proposal network as an agent of the benchmark (``paper-ppo``).

The agent acts on feature-map observations with the policy's own GRU memory, one state per env; its weights
come from a GFNet checkpoint's ``policy`` entry (:meth:`PaperPPOAgent.from_checkpoint`, what the benchmark
evaluates by default) or from a file :func:`agents.paper_ppo.train.train_paper_ppo` wrote
(:meth:`PaperPPOAgent.load`). Training is docs/training.md, "Stage 2: policy (PPO)". Three ways to get one::

    agents.make("paper-ppo")                                    # the shipped policy of the embedded task
    agents.make("paper-ppo", checkpoint="runs/s2/best_stage2.pth.tar")   # the policy of any GFNet checkpoint
    agents.load_agent("paper-ppo", "runs/ppo")                  # a trained copy (folder, paper_ppo.pt or *.pth.tar)

:class:`PaperPPOStopAgent` (``paper-ppo-stop``) is the same policy with a Bernoulli stop head
(:class:`~feature_nets.policy.StopPatchPolicy`): it acts in the env with the stop action and decides when to
answer; it is trained only by ``gfnet train-agent --agent paper-ppo-stop`` (no GFNet checkpoint stores one).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_nets.devices import resolve_device
from feature_nets.policy import PatchPolicy, StopPatchPolicy

from ..base import Agent, Run, RunContext, train_hint
from .files import (AGENT_FILE, check_policy_blob, is_gfnet_checkpoint, policy_from_blob, read_policy_file,
                    read_torch_blob, write_policy_file)
from .train import train_policy

__all__ = ["PaperPPOAgent", "PaperPPOStopAgent", "train_paper_ppo", "untrained_policy_error"]


class PaperPPOAgent(Agent):
    """The paper's patch proposal network as an agent (``paper-ppo``).

    Observations are feature maps (N, C, h, w) (or a dict holding ``feature_map``); the policy's own GRU
    state, (1, N, H), is kept per env between ``act`` calls and cleared by ``reset``. Deterministic actions
    are the Gaussian's mean (the original test-time behaviour); stochastic ones are sampled with std 0.1
    and clamped to [0, 1], as in training.

    Args:
        policy: a :class:`~feature_nets.policy.PatchPolicy` (used as is, not copied); None: the trained policy stored
            in ``checkpoint`` (:meth:`from_checkpoint`).
        device: where the policy runs (``"auto"``: CUDA when available).
        seed: seed of the sampling noise for ``deterministic=False``.
        checkpoint: with ``policy=None``, the GFNet checkpoint (a path or a loaded GFNet) whose policy to act with;
            None: the embedded task's shipped checkpoint (``GFNet-ClutteredFashionMNIST-v0``'s networks).
        trusted_pickle: let ``checkpoint`` be unpickled fully (the bool True; only for files you trust).

    Attributes:
        policy: the network; write it into a GFNet checkpoint with
            :func:`agents.paper_ppo.checkpoint.save_policy_into_checkpoint`.
    """

    name = "paper-ppo"
    obs_mode = "feature_map"
    action_mode = "continuous"
    trainable = True

    def __init__(self, policy: PatchPolicy | None = None, device: str | torch.device = "auto", seed: int = 0,
                 checkpoint=None, trusted_pickle: bool = False) -> None:
        if policy is None:
            policy = self._checkpoint_policy(checkpoint, trusted_pickle)
        elif checkpoint is not None:
            raise ValueError(f"{self.name}: pass a policy or a checkpoint to take it from, not both")
        if isinstance(policy, StopPatchPolicy) != self.stop_action:
            raise ValueError(f"{self.name} needs a {'StopPatchPolicy' if self.stop_action else 'PatchPolicy'} "
                             f"(a policy {'with' if self.stop_action else 'without'} a stop head), got "
                             f"{type(policy).__name__}; load it as "
                             f"{'paper-ppo' if self.stop_action else 'paper-ppo-stop'}")
        self.device = resolve_device(device)
        self.policy = policy.to(self.device).eval()
        self.hidden: torch.Tensor | None = None
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.metadata: dict = {}

    @classmethod
    def from_checkpoint(cls, model, device: str | torch.device = "auto",
                        trusted_pickle: bool = False) -> "PaperPPOAgent":
        """The policy stored in a GFNet checkpoint (a path or a loaded :class:`~feature_nets.gfnet.GFNet`), copied.

        Raises:
            ValueError: the checkpoint stores no policy, or only the untrained one of a stage-1 checkpoint
                (:func:`untrained_policy_error`).
        """
        return cls(cls._checkpoint_policy(model, trusted_pickle), device=device)

    @classmethod
    def _checkpoint_policy(cls, model, trusted_pickle: bool = False) -> PatchPolicy:
        """A copy of the trained policy of a GFNet checkpoint (a path, a loaded GFNet, or None: the embedded task's
        shipped checkpoint); the one-line refusals of :meth:`from_checkpoint` otherwise."""
        if model is None:
            from gfnet_env.tasks.cluttered_fashion_mnist import DEFAULT_FMNIST_CHECKPOINT

            model = DEFAULT_FMNIST_CHECKPOINT
        if isinstance(model, (str, os.PathLike)):
            from feature_nets.checkpoint import read_checkpoint_dict
            from gfnet_env.tasks.task import load_model

            if "policy" not in read_checkpoint_dict(model, trusted_pickle=trusted_pickle):
                raise _no_policy_error(model)
            model = load_model(model, trusted_pickle=trusted_pickle)
        if getattr(model, "policy", None) is None:
            raise _no_policy_error(getattr(model, "checkpoint_path", None))
        if getattr(model, "checkpoint_stage", None) == 1:
            raise untrained_policy_error(model, name=cls.name)
        return copy.deepcopy(model.policy)

    # --- hooks for the benchmark and the CLI ---------------------------------------------------------
    @classmethod
    def runs(cls, ctx: RunContext) -> tuple[list[Run], str]:
        """Without a trained copy, the benchmark evaluates the policy stored in the env's checkpoint — refused when
        it has none, or when it is a stage-1 checkpoint, whose policy was never trained (:func:`untrained_policy_error`)."""
        model = ctx.model
        if getattr(model, "policy", None) is None:
            raise ValueError(train_hint(ctx.name, ctx.env_id) + "; the env's checkpoint stores no policy")
        if getattr(model, "checkpoint_stage", None) == 1:
            raise untrained_policy_error(model, ctx.env_id, ctx.name)
        return [Run("checkpoint policy", lambda: cls.from_checkpoint(model, device=ctx.device))], \
            "the policy stored in the env's checkpoint"

    @classmethod
    def train_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``batch_size``, ``lr``, ``device``, ``progress``, ``force_settings`` and ``on_start`` (called once the
        inputs are checked, before the first write) of the CLI's options (those given)."""
        return {k: options[k] for k in ("batch_size", "lr", "device", "progress", "force_settings", "on_start")
                if options.get(k) is not None}

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
        if self.hidden is not None and self.hidden.shape[1] != fmap.shape[0]:
            self.hidden = None  # another batch size: a fresh episode batch
        mean, self.hidden = self.policy.mean_action(fmap, self.hidden)
        if deterministic:
            action = mean
        else:
            action, _ = self.policy.sample(mean, generator=self.generator)
        return action.float().cpu().numpy()

    # --- files --------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the policy file (:mod:`agents.paper_ppo.files`): config, weights and metadata, atomically."""
        return write_policy_file(self.policy, path, self.metadata)

    @classmethod
    def load(cls, path, device: str | torch.device = "auto") -> "PaperPPOAgent":
        """Load a file written by :meth:`save` (or a training run's ``paper_ppo_latest.pt``, or the folder holding
        ``paper_ppo.pt``), or the trained policy of a GFNet checkpoint (:meth:`from_checkpoint`): both are read
        without running code from the file."""
        path = Path(path)
        if path.is_dir():
            path = path / AGENT_FILE
        if not path.exists():
            read_policy_file(path)  # its FileNotFoundError says how to train one
        blob = read_torch_blob(path)
        if is_gfnet_checkpoint(blob):
            return cls.from_checkpoint(path, device=device)
        blob = check_policy_blob(blob, path)
        agent = cls(policy_from_blob(blob, path), device=device)
        agent.metadata = dict(blob.get("metadata", {}))
        return agent

    # --- training -----------------------------------------------------------------------------------
    @classmethod
    def learn(cls, env_id: str, steps: int, seed: int, out_dir, resume: bool = False, **kwargs) -> "PaperPPOAgent":
        """:func:`train_paper_ppo` (``batch_size``, ``lr``, ``device``, ``progress`` and env arguments may be
        passed in ``kwargs``)."""
        return train_paper_ppo(env_id, steps, out_dir, seed=seed, resume=resume, **kwargs)


class PaperPPOStopAgent(PaperPPOAgent):
    """``paper-ppo-stop``: the paper's policy with a Bernoulli stop head
    (:class:`~feature_nets.policy.StopPatchPolicy`), for the env with the stop action (``stop_action=True``,
    unit range). Actions are (N, 3): the location and 1.0 to stop (deterministic: the Gaussian's mean, and stop
    where its stop probability is at least one half), sampled as in training otherwise.

    Trained like ``paper-ppo`` by the same PPO (the joint log-probability of location and stop; episodes that end
    early are masked): ``gfnet train-agent --agent paper-ppo-stop --env ID --env-kwarg step_cost=C --steps N``.
    """

    name = "paper-ppo-stop"
    stop_action = True

    @classmethod
    def _checkpoint_policy(cls, model, trusted_pickle: bool = False) -> PatchPolicy:
        """No GFNet checkpoint stores a stop policy: the refusal names the shipped files and how to train one."""
        raise ValueError("paper-ppo-stop has no policy in a GFNet checkpoint (the format has no place for a stop "
                         "head); load a trained one with agents.load_agent('paper-ppo-stop', PATH) — the package "
                         "ships gfnet_env/weights/paper_ppo_stop_c*_cluttered_fmnist.pt — or train one with `gfnet "
                         "train-agent --agent paper-ppo-stop --env ENV_ID --env-kwarg step_cost=C --out DIR`")

    @classmethod
    def runs(cls, ctx: RunContext) -> tuple[list[Run], str]:
        """No GFNet checkpoint stores a stop policy: the benchmark needs a trained copy (``--agent-dir``)."""
        raise ValueError(train_hint(ctx.name, ctx.env_id) + " (with --env-kwarg step_cost=C: the price of a look)")

    @classmethod
    def learn(cls, env_id: str, steps: int, seed: int, out_dir, resume: bool = False,
              **kwargs) -> "PaperPPOStopAgent":
        """:func:`train_paper_ppo` with ``stop=True``."""
        return train_paper_ppo(env_id, steps, out_dir, seed=seed, resume=resume, stop=True, **kwargs)


def _no_policy_error(path) -> ValueError:
    """The refusal of a GFNet checkpoint that stores no policy at all (``path``: its file, None when unknown)."""
    return ValueError(f"the GFNet checkpoint {path or '(a model given without its file)'} has no policy; train one "
                      f"with `gfnet train-policy --checkpoint {path or 'CHECKPOINT'} --env ENV_ID --steps N --out DIR`")


def untrained_policy_error(model, env_id: str = "ENV_ID", name: str = "paper-ppo") -> ValueError:
    """The refusal of a stage-1 checkpoint's policy (``model.checkpoint_stage == 1``, set by
    :func:`gfnet_env.tasks.load_model`): stage 1 trains the encoders and the classifier on random patches and stores
    the policy network as it was initialised, so evaluating it would report an untrained policy as the paper's.
    The message names the checkpoint and gives the command that trains its policy (stage 2)."""
    path = getattr(model, "checkpoint_path", None)
    shown = path or "CHECKPOINT"
    stem = Path(shown).name
    for suffix in (".pth.tar", ".pth", ".pt", ".tar"):  # gfnet train-policy names its output <stem>_stage2.pth.tar
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return ValueError(
        f"{name}: the checkpoint {path or '(a model given without its file)'} was written by stage 1 (its 'stage' entry is 1): its "
        "policy was never trained (stage 1 trains the encoders and classifier with random patches). Train the "
        f"policy (stage 2) with `gfnet train-policy --checkpoint {shown} --env {env_id} --steps N --out DIR` and "
        f"benchmark with --env-kwarg checkpoint=DIR/{stem}_stage2.pth.tar, or pass a trained agent with "
        f"--agent-dir {name}=DIR (`gfnet train-agent --agent paper-ppo`)")


def train_paper_ppo(env_id: str, steps: int, out_dir, seed: int = 0, **kwargs) -> PaperPPOAgent:
    """Train the paper's policy on ``env_id`` (:func:`agents.paper_ppo.train.train_policy`, same arguments) and
    return it as a :class:`PaperPPOAgent` (``agent.policy`` is the network; the run's folder holds it too);
    ``stop=True``: a :class:`PaperPPOStopAgent`."""
    trained = train_policy(env_id, steps, out_dir, seed=seed, **kwargs)
    agent_cls = PaperPPOStopAgent if kwargs.get("stop") else PaperPPOAgent
    agent = agent_cls(trained.policy, device=trained.device, seed=seed)
    agent.metadata = trained.metadata
    return agent
