"""The paper's PPO for the patch proposal network (stage 2 of GFNet training, docs/training.md,
"Stage 2: policy (PPO)"), in four parts, each readable top to bottom:

* :mod:`.ppo` — the maths: :class:`RolloutMemory`, :func:`ppo_loss`, :func:`ppo_update` (no env, no files);
* :mod:`.agent` — :class:`PaperPPOAgent`, the policy as an agent of the benchmark (``paper-ppo``), its files;
* :mod:`.train` — :func:`train_paper_ppo`, the training loop over batches of images on a batched env core;
* :mod:`.checkpoint` — :func:`save_policy_into_checkpoint`, the learned policy back into a GFNet checkpoint.

Importing the package imports neither Gymnasium nor TensorBoard; training imports them when it starts.
"""

from __future__ import annotations

from .agent import AGENT_FILE, AGENT_FORMAT, LATEST_FILE, PaperPPOAgent, policy_config
from .checkpoint import save_policy_into_checkpoint
from .ppo import (
    RETURN_NORM_EPS,
    RolloutMemory,
    discounted_returns,
    make_optimizer,
    normalise_returns,
    ppo_loss,
    ppo_update,
)
from .train import train_paper_ppo

__all__ = [
    "AGENT_FILE",
    "AGENT_FORMAT",
    "LATEST_FILE",
    "PaperPPOAgent",
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
