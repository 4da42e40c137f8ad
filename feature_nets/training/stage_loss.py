"""The loss of stages 1 and 3, and how each stage draws its focus locations (see docs/training.md).

Both stages minimise, per batch, ``(Σ_t CE(logits_t) + dsn_ratio · Σ_t CE(head_t)) / T`` where ``logits_t`` are
the classifier's step-t logits and ``head_t`` the own head of the encoder that made step t (global encoder at
t = 0, local encoder after), as the original training code. At the glance the GRU classifier's own logits are
used (ResNet / DenseNet / RegNet; RegNet's *inference* glance logits are the encoder head instead, which
``glance_logits="inference"`` trains); the cascade (MobileNet / EfficientNet) gives none, so there both glance
terms are the encoder head (weight 1 + dsn_ratio), as in the original. Every look's encoder is called through
its generic ``head``, so the loss works for every backbone (DenseNet names its head ``classifier``).

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

from ..crop import crop_corners, crop_patches
from ..gfnet import GFNet, StepOutput
from .rng import mix_seed

__all__ = ["StageLoss", "focus_draws", "policy_actions"]


class StageLoss(nn.Module):
    """One stage-1 / stage-3 forward pass of a GFNet over all T steps, returning the loss.

    ``forward(images, labels, draws)`` with images (B, 3, S, S), labels (B,) class indices and ``draws``
    (B, T−1, 2): the patch locations themselves (stage 1) or the standard-normal noise of the policy's Gaussian
    (stage 3). Returns ``(loss, correct)``: the scalar loss of the module docstring and the (T,) number of
    correct predictions per step (no gradient). After each call ``last_terms`` holds the detached per-look
    cross-entropies: ``"cls"`` (T,) of the classifier logits and ``"dsn"`` (T,) of the encoder heads (only the
    glance's when ``dsn_ratio`` is 0).

    Args:
        model: the GFNet (its modes and ``requires_grad`` flags are the caller's: :func:`~.optim.set_train_mode`,
            :func:`~.optim.prepare_trainable`).
        stage: 1 or 3.
        dsn_ratio: weight of the encoder-head terms.
        dropout: dropout probability on the (B, F) pooled vector of every look whose encoder is in training mode
            (before classifier and head, as the original MobileNet-V3 / EfficientNet forward); 0: none.
        glance_logits: "classifier" (the classifier's own step-0 logits where it has them, as the original
            training) or "inference" (the glance logits of inference: the encoder head for RegNet).
    """

    def __init__(self, model: GFNet, stage: int, dsn_ratio: float, dropout: float = 0.0,
                 glance_logits: str = "classifier") -> None:
        super().__init__()
        self.model = model
        self.stage = stage
        self.dsn_ratio = float(dsn_ratio)
        self.dropout = float(dropout)
        if glance_logits not in ("classifier", "inference"):
            raise ValueError(f"glance_logits must be 'classifier' or 'inference', got {glance_logits!r}")
        self.step0_head = "classifier" if glance_logits == "classifier" else None
        self.last_terms: dict[str, torch.Tensor] = {}
        if stage == 3 and model.policy is None:
            raise ValueError("stage 3 needs a model with a policy (load one with --policy-checkpoint)")

    @classmethod
    def from_config(cls, model: GFNet, cfg) -> "StageLoss":
        """The loss of a :class:`~.recipes.TrainConfig`: its stage, dsn_ratio, dropout and glance_logits."""
        return cls(model, cfg.stage, cfg.dsn_ratio, dropout=cfg.dropout, glance_logits=cfg.glance_logits)

    def _encode(self, encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, P, P) -> ((B, F) pooled, dropout applied while the encoder trains; (B, C, h, w) map)."""
        pooled, fmap = encoder(x)
        if self.dropout > 0 and encoder.training:
            pooled = F.dropout(pooled, p=self.dropout, training=True)
        return pooled, fmap

    def forward(self, images: torch.Tensor, labels: torch.Tensor, draws: torch.Tensor):
        m = self.model
        T, S, P = m.T, m.image_size, m.patch_size
        if images.dim() != 4 or tuple(images.shape[2:]) != (S, S):
            raise ValueError(f"expected images of shape (B, C, {S}, {S}), got {tuple(images.shape)}")
        out = m.glance_from_features(*self._encode(m.global_encoder, m.glance_input(images)), self.step0_head)
        cls_terms = [F.cross_entropy(out.logits, labels)]
        dsn_terms = [F.cross_entropy(m.global_encoder.head(out.pooled), labels)]
        correct = [(out.logits.detach().argmax(1) == labels).sum()]
        hidden = None
        for t in range(1, T):
            if self.stage == 1:
                actions = draws[:, t - 1]
            else:
                actions, hidden = policy_actions(m, out, hidden, draws[:, t - 1])
            corners = crop_corners(actions, S, P)
            pooled, fmap = self._encode(m.local_encoder, crop_patches(images, corners, P))
            out = m.focus_from_features(pooled, fmap, corners, out)
            cls_terms.append(F.cross_entropy(out.logits, labels))
            if self.dsn_ratio:
                dsn_terms.append(F.cross_entropy(m.local_encoder.head(out.pooled), labels))
            correct.append((out.logits.detach().argmax(1) == labels).sum())
        self.last_terms = {"cls": torch.stack(cls_terms).detach(), "dsn": torch.stack(dsn_terms).detach()}
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
