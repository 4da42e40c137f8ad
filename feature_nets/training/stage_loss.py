"""The loss of stages 1 and 3, and how each stage draws its focus locations (see docs/training.md).

Both stages minimise, per batch, ``(Σ_t CE(logits_t) + dsn_ratio · Σ_t CE(head_t)) / T`` where ``logits_t`` are
the model's step-t logits (for the glance: whatever :meth:`GFNet.glance` returns — the encoder's own head for
the RegNet / MobileNet / EfficientNet families, whose classifier gives no or unused step-0 logits) and
``head_t`` the own head of the encoder that made step t (global encoder at t = 0, local encoder after). The
loss is therefore well defined for the GRU and the cascade classifier alike; for families whose glance logits
come from the encoder head the two glance terms coincide (weight 1 + dsn_ratio), as in the original.

* Stage 1: focus locations uniform in [0, 1]².
* Stage 3: locations sampled from the (fixed, eval-mode) learned policy: a = clamp(mean + L·ε, 0, 1) with
  L = ``policy.scale_tril`` (the Gaussian of :meth:`PatchPolicy.sample`); the policy's GRU memory starts from
  zero for every batch. ε is drawn per *global* batch from the run's seed (not by ``PatchPolicy.sample``'s own
  draw) so that N processes sample exactly what one process would.

What a stage draws per batch — the locations (stage 1) or the noise ε (stage 3) — is called its *draws*:
(B, T−1, 2), one pair per focus step, made by :func:`focus_draws`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..gfnet import GFNet, StepOutput
from .rng import mix_seed

__all__ = ["StageLoss", "focus_draws", "policy_actions"]


class StageLoss(nn.Module):
    """One stage-1 / stage-3 forward pass of a GFNet over all T steps, returning the loss.

    ``forward(images, labels, draws)`` with ``draws`` (B, T−1, 2): the patch locations themselves (stage 1) or
    the standard-normal noise of the policy's Gaussian (stage 3). Returns ``(loss, correct)``: the scalar loss
    of the module docstring and the (T,) number of correct predictions per step (no gradient).
    """

    def __init__(self, model: GFNet, stage: int, dsn_ratio: float) -> None:
        super().__init__()
        self.model = model
        self.stage = stage
        self.dsn_ratio = float(dsn_ratio)
        if stage == 3 and model.policy is None:
            raise ValueError("stage 3 needs a model with a policy (load one with --policy-checkpoint)")

    def forward(self, images: torch.Tensor, labels: torch.Tensor, draws: torch.Tensor):
        m = self.model
        T = m.T
        out = m.glance(images)
        cls_terms = [F.cross_entropy(out.logits, labels)]
        dsn_terms = [F.cross_entropy(m.global_encoder.head(out.pooled), labels)]
        correct = [(out.logits.detach().argmax(1) == labels).sum()]
        hidden = None
        for t in range(1, T):
            if self.stage == 1:
                actions = draws[:, t - 1]
            else:
                actions, hidden = policy_actions(m, out, hidden, draws[:, t - 1])
            out = m.focus(images, actions, out)
            cls_terms.append(F.cross_entropy(out.logits, labels))
            if self.dsn_ratio:
                dsn_terms.append(F.cross_entropy(m.local_encoder.head(out.pooled), labels))
            correct.append((out.logits.detach().argmax(1) == labels).sum())
        loss = sum(cls_terms)
        if self.dsn_ratio:
            loss = loss + self.dsn_ratio * sum(dsn_terms)
        return loss / T, torch.stack(correct)


@torch.no_grad()
def policy_actions(model: GFNet, prev: StepOutput, hidden, noise: torch.Tensor | None):
    """The fixed policy's action for the next step: its mean, plus L·noise when ``noise`` is given, in [0, 1].

    Returns ``((B, 2) actions, new GRU memory)``; ``hidden`` None starts the memory from zero.
    """
    policy = model.policy
    mean, hidden = policy.mean_action(prev.feature_map.detach(), hidden)
    if noise is None:
        return mean, hidden
    noise = noise.to(device=mean.device, dtype=mean.dtype)
    return (mean + noise @ policy.scale_tril(mean).T).clamp(0.0, 1.0), hidden


def focus_draws(stage: int, seed: int, epoch: int, step: int, global_batch: int, T: int) -> torch.Tensor:
    """(global_batch, T−1, 2) draws of one global batch: uniform locations (stage 1) or standard-normal policy
    noise (stage 3), a function of (seed, stage, epoch, step) only."""
    g = torch.Generator().manual_seed(mix_seed(seed, 0x5EED, stage, epoch, step))
    shape = (global_batch, max(T - 1, 0), 2)
    return torch.rand(shape, generator=g) if stage == 1 else torch.randn(shape, generator=g)
