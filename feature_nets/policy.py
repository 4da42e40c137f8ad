"""GFNet's patch proposal network (the paper's ActorCritic), see docs/gfnet.md.

The policy reads the previous step's encoder feature map and proposes where the next P×P crop goes:
an action a ∈ [0, 1]², a[:, 0] the row (height) fraction and a[:, 1] the column (width) fraction of the
crop's top-left corner inside the S×S image (corner = floor(a · (S − P)) pixels).

Layout (state-dict keys exactly as in released checkpoints):

- ``conv=True``:  ``state_encoder`` = Conv2d 1×1 (C → 32, no bias) [0] → ReLU [1] → Flatten [2] →
  Linear(32·h·w → hidden) [3] → ReLU [4].
- ``conv=False``: the (B, C, h, w) map is flattened first, then ``state_encoder`` =
  Linear(C·h·w → 2048) [0] → ReLU [1] → Linear(2048 → hidden) [2] → ReLU [3].
- ``gru``: GRU(hidden → hidden), one layer, sequence-first, its own state (zero before the first focus step).
- ``actor``: Linear(hidden → 2) [0] → Sigmoid [1]: the mean of the action Gaussian.
- ``critic``: Linear(hidden → 1) [0]: the state value.

:class:`StopPatchPolicy` adds an optional Bernoulli stop head (``paper-ppo-stop``); :class:`PatchPolicy` itself is
exactly the paper's.

The action distribution is MultivariateNormal(mean, scale_tril = diag(action_std, action_std)): a standard
deviation of ``action_std`` (0.1) per coordinate. The original code calls this number a "variance", but it
is used as the scale (Cholesky factor), so it is a standard deviation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import MultivariateNormal

#: Width of the intermediate layer of the non-conv state encoder (fixed in the original code).
FLAT_ENCODER_WIDTH = 2048
#: Channels of the 1×1 conv of the conv state encoder (fixed in the original code).
CONV_ENCODER_CHANNELS = 32


class PatchPolicy(nn.Module):
    """Patch proposal network: feature map → Gaussian over the next crop's location, and a value.

    Args:
        feature_map_channels: C, channels of the encoder feature map the policy reads.
        feature_map_size: h = w, spatial side of that map (ceil(P / 32) for a P×P patch).
        hidden_dim: H, width of the state encoder's output and of the GRU.
        conv: state encoder starts with a 1×1 conv (True) or flattens the map (False).
        action_std: standard deviation of each action coordinate (0.1 in the paper).
    """

    def __init__(
        self,
        feature_map_channels: int,
        feature_map_size: int,
        hidden_dim: int,
        conv: bool,
        action_std: float = 0.1,
    ) -> None:
        super().__init__()
        self.feature_map_channels = feature_map_channels
        self.feature_map_size = feature_map_size
        self.hidden_dim = hidden_dim
        self.conv = conv
        self.action_std = float(action_std)
        area = feature_map_size * feature_map_size

        if conv:
            self.state_encoder = nn.Sequential(
                nn.Conv2d(feature_map_channels, CONV_ENCODER_CHANNELS, kernel_size=1, bias=False),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(CONV_ENCODER_CHANNELS * area, hidden_dim),
                nn.ReLU(),
            )
        else:
            self.state_encoder = nn.Sequential(
                nn.Linear(feature_map_channels * area, FLAT_ENCODER_WIDTH),
                nn.ReLU(),
                nn.Linear(FLAT_ENCODER_WIDTH, hidden_dim),
                nn.ReLU(),
            )
        self.gru = nn.GRU(hidden_dim, hidden_dim, num_layers=1, batch_first=False)
        self.actor = nn.Sequential(nn.Linear(hidden_dim, 2), nn.Sigmoid())
        self.critic = nn.Sequential(nn.Linear(hidden_dim, 1))
        # Not a parameter and not in the state dict (released checkpoints have no such key).
        self._std = torch.full((2,), self.action_std)

    # ------------------------------------------------------------------ building blocks

    def encode(self, feature_map: torch.Tensor) -> torch.Tensor:
        """State encoder: (N, C, h, w) feature maps → (N, H) embeddings."""
        if not self.conv:
            feature_map = feature_map.flatten(1)
        return self.state_encoder(feature_map)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Zero GRU state, (1, B, H), used before the first focus step."""
        if device is None:
            device = self.actor[0].weight.device
        dtype = self.actor[0].weight.dtype
        return torch.zeros(1, batch_size, self.hidden_dim, device=device, dtype=dtype)

    def scale_tril(self, like: torch.Tensor) -> torch.Tensor:
        """(2, 2) Cholesky factor diag(action_std, action_std) on ``like``'s device and dtype."""
        return torch.diag(self._std.to(device=like.device, dtype=like.dtype))

    # ------------------------------------------------------------------ acting

    def step(
        self, feature_map: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One act step.

        Args:
            feature_map: (B, C, h, w) the previous step's encoder feature map.
            hidden: (1, B, H) GRU state (``initial_state`` before the first focus step).

        Returns:
            mean: (B, 2) action mean in [0, 1] (row, column fractions).
            value: (B, 1) critic's state value.
            new_hidden: (1, B, H) updated GRU state.
        """
        x = self.encode(feature_map).unsqueeze(0)  # (1, B, H): a sequence of length one
        out, new_hidden = self.gru(x, hidden)
        out = out.squeeze(0)
        return self.actor(out), self.critic(out), new_hidden

    def mean_action(
        self, feature_map: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The deterministic action (the Gaussian's mean) and the new GRU state.

        Args:
            feature_map: (B, C, h, w) the previous step's encoder feature map.
            hidden: (1, B, H) GRU state, or None before the first focus step (a zero state).

        Returns:
            mean: (B, 2) action in [0, 1]; new_hidden: (1, B, H).
        """
        if hidden is None:
            hidden = self.initial_state(feature_map.shape[0], device=feature_map.device)
        mean, _value, new_hidden = self.step(feature_map, hidden)
        return mean, new_hidden

    def distribution(self, mean: torch.Tensor) -> MultivariateNormal:
        """The action distribution N(mean, diag(action_std)²) for means (..., 2)."""
        return MultivariateNormal(mean, scale_tril=self.scale_tril(mean))

    def sample(
        self, mean: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample an action, clamp it to [0, 1], and return it with its log-probability.

        As in the original, the log-probability is that of the *clamped* action under the Gaussian.

        Args:
            mean: (B, 2) action means.
            generator: optional RNG for the Gaussian noise (for reproducible rollouts).

        Returns:
            action: (B, 2) in [0, 1].
            logprob: (B,) log-density of the clamped action.
        """
        with torch.no_grad():
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            # mean + L ε with L = scale_tril: the same as MultivariateNormal.sample, but with a generator.
            action = mean + noise @ self.scale_tril(mean).T
            # original: relu(x), then 1 - relu(1 - x)
            action = action.clamp(0.0, 1.0)
            logprob = self.distribution(mean).log_prob(action)
        return action, logprob

    # ------------------------------------------------------------------ learning

    def evaluate(
        self, states: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Re-run the policy over whole rollouts, as the original PPO update does.

        The state encoder and the GRU are run from a zero state over the L stored steps.

        Args:
            states: (L, B, C, h, w) feature maps that were handed to the policy at each focus step.
            actions: (L, B, 2) actions that were taken.

        Returns:
            logprobs: (L, B) log-density of each action under the current policy.
            values: (L, B) state values.
            entropy: (L, B) entropy of each step's distribution (constant for a fixed std).
        """
        seq_len, batch = states.shape[:2]
        x = self.encode(states.flatten(0, 1)).view(seq_len, batch, -1)
        out, _ = self.gru(x, self.initial_state(batch, device=x.device))
        out = out.reshape(seq_len * batch, -1)
        dist = self.distribution(self.actor(out))
        logprobs = dist.log_prob(actions.reshape(seq_len * batch, 2))
        entropy = dist.entropy()
        values = self.critic(out)
        return (
            logprobs.view(seq_len, batch),
            values.view(seq_len, batch),
            entropy.view(seq_len, batch),
        )


class StopPatchPolicy(PatchPolicy):
    """:class:`PatchPolicy` with a Bernoulli stop head beside the Gaussian location head (``paper-ppo-stop``).

    For an env with the stop action (``stop_action=True``, continuous unit range: ``Box(0, 1, (3,))``, stop when
    the third component is >= 0.5). Everything of :class:`PatchPolicy` is kept as is (state encoder, GRU, actor,
    critic, the 0.1 standard deviation); one module is added:

    - ``stop_head``: Linear(hidden → 1) [0]: the logit of stopping now (the Bernoulli's parameter). It starts with
      a bias of ``stop_bias`` (default −2: stop with probability 0.12 per decision at first, so that early
      rollouts still look).

    An action is (row, col, stop) with stop ∈ {0, 1}. Its log-probability is the Bernoulli's, plus the
    Gaussian's of the location when the policy does not stop (a stop makes no look, so its location is no part of
    the action); the entropy is the Gaussian's plus the Bernoulli's. :meth:`step` returns the three head outputs
    (location mean, stop logit) as one (B, 3) tensor, which :meth:`sample` and :meth:`mean_action` read.

    A plain :class:`PatchPolicy` (a checkpoint's) starts a stop policy with :meth:`from_policy`.
    """

    def __init__(self, feature_map_channels: int, feature_map_size: int, hidden_dim: int, conv: bool,
                 action_std: float = 0.1, stop_bias: float = -2.0) -> None:
        super().__init__(feature_map_channels, feature_map_size, hidden_dim, conv, action_std)
        self.stop_head = nn.Sequential(nn.Linear(hidden_dim, 1))
        with torch.no_grad():
            self.stop_head[0].bias.fill_(float(stop_bias))

    @classmethod
    def from_policy(cls, policy: PatchPolicy, stop_bias: float = -2.0) -> "StopPatchPolicy":
        """A stop policy whose shared parts are copies of ``policy``'s (the stop head fresh)."""
        out = cls(policy.feature_map_channels, policy.feature_map_size, policy.hidden_dim, policy.conv,
                  policy.action_std, stop_bias=stop_bias)
        missing, unexpected = out.load_state_dict(policy.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("stop_head.") for k in missing), (missing, unexpected)
        return out.to(policy.actor[0].weight.device)

    def step(self, feature_map: torch.Tensor, hidden: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One act step: ((B, 3) location mean and stop logit, (B, 1) value, (1, B, H) new GRU state)."""
        x = self.encode(feature_map).unsqueeze(0)
        out, new_hidden = self.gru(x, hidden)
        out = out.squeeze(0)
        return torch.cat([self.actor(out), self.stop_head(out)], dim=1), self.critic(out), new_hidden

    def mean_action(self, feature_map: torch.Tensor, hidden: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The deterministic action: (B, 3) the Gaussian's mean and 1 where stopping is the more likely choice
        (logit >= 0), else 0; and the new GRU state."""
        params, new_hidden = super().mean_action(feature_map, hidden)
        return torch.cat([params[:, :2], (params[:, 2:] >= 0).to(params.dtype)], dim=1), new_hidden

    def stop_distribution(self, logits: torch.Tensor) -> torch.distributions.Bernoulli:
        return torch.distributions.Bernoulli(logits=logits)

    def joint_log_prob(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(..., ) log-probability of (..., 3) actions under (..., 3) head outputs: Bernoulli of the stop, plus the
        Gaussian of the location where the action does not stop."""
        stop = actions[..., 2]
        location = self.distribution(params[..., :2]).log_prob(actions[..., :2])
        return self.stop_distribution(params[..., 2]).log_prob(stop) + (1.0 - stop) * location

    def joint_entropy(self, params: torch.Tensor) -> torch.Tensor:
        """(..., ) the Gaussian's entropy plus the Bernoulli's."""
        return self.distribution(params[..., :2]).entropy() + self.stop_distribution(params[..., 2]).entropy()

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample (B, 3) actions from (B, 3) head outputs: the location as :meth:`PatchPolicy.sample` (clamped),
        the stop as a Bernoulli draw (0 or 1); with their joint log-probability (B,)."""
        with torch.no_grad():
            location, _ = super().sample(params[:, :2], generator=generator)
            u = torch.rand(params.shape[0], generator=generator, device=params.device, dtype=params.dtype)
            stop = (u < torch.sigmoid(params[:, 2])).to(params.dtype)
            action = torch.cat([location, stop[:, None]], dim=1)
            return action, self.joint_log_prob(params, action)

    def evaluate(self, states: torch.Tensor, actions: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`PatchPolicy.evaluate` for (L, B, 3) actions: joint log-probs, values, joint entropies."""
        seq_len, batch = states.shape[:2]
        x = self.encode(states.flatten(0, 1)).view(seq_len, batch, -1)
        out, _ = self.gru(x, self.initial_state(batch, device=x.device))
        out = out.reshape(seq_len * batch, -1)
        params = torch.cat([self.actor(out), self.stop_head(out)], dim=1)
        flat_actions = actions.reshape(seq_len * batch, 3)
        return (self.joint_log_prob(params, flat_actions).view(seq_len, batch),
                self.critic(out).view(seq_len, batch),
                self.joint_entropy(params).view(seq_len, batch))
