"""The paper's PPO for the patch proposal network (stage 2 of GFNet training, docs/training.md,
"Stage 2: policy (PPO)"), in four parts, each readable top to bottom:

* :mod:`.ppo` — the maths: :class:`RolloutMemory`, :func:`ppo_loss`, :func:`ppo_update` (no env, no files);
* :mod:`.train` — :func:`~.train.train_policy`, the training loop over batches of images on a batched env core,
  stepping the env only through :func:`gfnet_env.rollout.rollout`;
* :mod:`.agent` — :class:`PaperPPOAgent`, the policy as an agent of the benchmark (``paper-ppo``), and
  :func:`train_paper_ppo`, training that returns the agent;
* :mod:`.files` — the policy file both write;
* :mod:`.checkpoint` — :func:`save_policy_into_checkpoint`, the learned policy back into a GFNet checkpoint.

Importing the package imports neither Gymnasium nor TensorBoard; training imports them when it starts.
"""

from __future__ import annotations

from .agent import PaperPPOAgent, PaperPPOStopAgent, train_paper_ppo
from .checkpoint import save_policy_into_checkpoint
from .files import AGENT_FILE, AGENT_FORMAT, LATEST_FILE, policy_config
from .ppo import (
    RETURN_NORM_EPS,
    RolloutMemory,
    discounted_returns,
    make_optimizer,
    normalise_returns,
    ppo_loss,
    ppo_update,
)

__all__ = [
    "AGENT_FILE",
    "AGENT_FORMAT",
    "LATEST_FILE",
    "PaperPPOAgent",
    "PaperPPOStopAgent",
    "RETURN_NORM_EPS",
    "RolloutMemory",
    "discounted_returns",
    "make_optimizer",
    "normalise_returns",
    "policy_config",
    "ppo_loss",
    "ppo_update",
    "save_policy_into_checkpoint",
    "train_paper_ppo",
]
