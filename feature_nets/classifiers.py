"""GFNet's classifiers with memory: the GRU classifier and the cascade of linear heads (see docs/gfnet.md).

Both satisfy the :class:`Classifier` protocol and are driven the same way: ``initial_state(B)`` before the
glance, then ``step(pooled, state, num_looks)`` once per look, which returns ``(logits, new_state)``. The state
is what the environment exposes as its ``"gru"`` observation, so it is always a (B, state_dim) tensor:

- GRU classifier: the hidden vector, (B, hidden_dim);
- cascade: all pooled vectors so far, concatenated and zero-padded to (B, max_steps · feature_num). The number
  of looks so far is kept apart (``num_looks``) because zero padding alone cannot tell it.

Callers never ask which class they hold: the protocol's attributes say what differs (state bounds, the
largest number of looks, whether the head depends on the look index, which heads T looks leave unused).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Classifier", "GRUClassifier", "CascadeClassifier", "CASCADE_MAX_STEPS", "build_classifier"]

#: Number of cascade heads the original code always builds (fc_2 … fc_5), whatever T is.
CASCADE_MAX_STEPS = 5


@runtime_checkable
class Classifier(Protocol):
    """What GFNet and its callers need from a classifier (implementations are ``nn.Module`` s).

    Attributes:
        state_dim: width D of the (B, D) state carried between looks.
        state_bounds: (low, high) every state value lies in; (-1, 1) for tanh-bounded GRU hidden values.
        max_looks: the most looks (glance included) the classifier has heads for; None = unbounded.
        look_dependent: True when the computation of a step depends on the look index (the cascade uses
            head fc_k after k looks), so a batch must only hold slots at the same number of looks: callers
            step slots at different look counts in separate groups.
    """

    state_dim: int
    state_bounds: tuple[float, float]
    max_looks: int | None
    look_dependent: bool

    def initial_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """The (B, state_dim) state before the glance."""
        ...

    def step(self, pooled: torch.Tensor, state: torch.Tensor, num_looks: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One look: (B, F) pooled vector, (B, D) state and the number of looks before this one ->
        ((B, num_classes) logits or None when the classifier gives none at this look, (B, D) new state)."""
        ...

    def freeze_unused_looks(self, T: int) -> None:
        """Set ``requires_grad=False`` on the parameters that an episode of T looks never uses."""
        ...


class GRUClassifier(nn.Module):
    """GRU(feature_num → hidden_dim) with a linear head, zero initial state at the glance.

    State-dict keys match released checkpoints: ``rnn.*`` and ``fc.*``.
    """

    #: GRU hidden values are tanh-bounded.
    state_bounds: tuple[float, float] = (-1.0, 1.0)
    #: The same GRU cell and head serve every look, however many.
    max_looks: int | None = None
    look_dependent: bool = False

    def __init__(self, feature_num: int, hidden_dim: int = 1024, num_classes: int = 1000) -> None:
        super().__init__()
        self.feature_num = feature_num
        self.hidden_dim = hidden_dim
        self.num_classes = num_classes
        self.rnn = nn.GRU(feature_num, hidden_dim, batch_first=True)
        self.fc = nn.Linear(hidden_dim, num_classes)

    @property
    def state_dim(self) -> int:
        return self.hidden_dim

    def initial_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """Zero hidden state, (B, hidden_dim)."""
        return torch.zeros(batch_size, self.hidden_dim, device=device, dtype=dtype)

    def step(self, pooled: torch.Tensor, state: torch.Tensor, num_looks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One look: (B, F) pooled vector and (B, H) state -> ((B, num_classes) logits, (B, H) new state).

        ``num_looks`` (looks before this one) is unused here; it keeps one signature for both classifiers.
        """
        out, h = self.rnn(pooled.unsqueeze(1), state.unsqueeze(0).contiguous())
        new_state = h[0]
        return self.fc(out[:, 0]), new_state

    def freeze_unused_looks(self, T: int) -> None:
        """Nothing to freeze: every look uses the whole GRU and head."""


class CascadeClassifier(nn.Module):
    """Cascade of linear heads: after k looks, logits = fc_k(concat of the k pooled vectors), k = 2..5.

    There is no fc_1: with one look (the glance) the encoder's own head gives the logits, so ``step`` returns
    None as logits for the first look. Keys match released checkpoints (``fc_2`` … ``fc_5``).
    """

    #: The state is a concatenation of raw pooled vectors: unbounded.
    state_bounds: tuple[float, float] = (-math.inf, math.inf)
    look_dependent: bool = True

    def __init__(self, feature_num: int, num_classes: int = 1000, max_steps: int = CASCADE_MAX_STEPS) -> None:
        super().__init__()
        self.feature_num = feature_num
        self.num_classes = num_classes
        self.max_steps = max_steps
        for k in range(2, max_steps + 1):
            self.add_module(f"fc_{k}", nn.Linear(k * feature_num, num_classes))

    @property
    def state_dim(self) -> int:
        return self.max_steps * self.feature_num

    @property
    def max_looks(self) -> int:
        """One head per number of looks up to ``max_steps``."""
        return self.max_steps

    def initial_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        """Empty history, (B, max_steps · F) zeros."""
        return torch.zeros(batch_size, self.state_dim, device=device, dtype=dtype)

    def step(self, pooled: torch.Tensor, state: torch.Tensor, num_looks: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Append the k-th vector (k = num_looks + 1) and classify with fc_k (None when k = 1)."""
        k = num_looks + 1
        if k > self.max_steps:
            raise ValueError(f"the cascade has heads for at most {self.max_steps} looks, got look {k}")
        f = self.feature_num
        new_state = state.clone()
        new_state[:, num_looks * f : k * f] = pooled
        if k == 1:
            return None, new_state
        head = getattr(self, f"fc_{k}")
        return head(new_state[:, : k * f]), new_state

    def freeze_unused_looks(self, T: int) -> None:
        """Freeze the heads fc_{T+1} … fc_{max_steps}: an episode of T looks never reaches them."""
        for k in range(max(T, 1) + 1, self.max_steps + 1):
            getattr(self, f"fc_{k}").requires_grad_(False)


def build_classifier(fc_rnn: bool, feature_num: int, num_classes: int, hidden_dim: int | None = 1024) -> nn.Module:
    """The classifier a configuration asks for: the GRU (``fc_rnn``) or the cascade."""
    if fc_rnn:
        return GRUClassifier(feature_num, hidden_dim or 1024, num_classes)
    return CascadeClassifier(feature_num, num_classes)
