"""The paper's PPO update and patch policy against the original implementation (conformance/ppo_update.pt)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from agents.paper_ppo import RolloutMemory, make_optimizer, ppo_update
from feature_nets.policy import PatchPolicy

DEFAULT_DIR = Path(__file__).parents[1] / "fixtures" / "conformance"
CONFORMANCE_DIR = Path(os.environ.get("GFNET_CONFORMANCE_DIR", DEFAULT_DIR))
# The key lists of released checkpoints are the same for every seed: read them from the project's copy.
KEYS_DIR = DEFAULT_DIR

LOSS_ATOL = 1e-5
GRAD_ATOL = 1e-5
PARAM_ATOL = 1e-5
# Adam's first step moves a parameter by up to lr whatever the size of its gradient, so where the stored
# gradient is tiny (below 1e-6) the step's direction is ill-conditioned: compare loosely there.
TINY_GRAD = 1e-6
TINY_GRAD_PARAM_ATOL = 3e-4


@pytest.fixture(scope="module")
def ppo_record() -> dict:
    path = CONFORMANCE_DIR / "ppo_update.pt"
    if not path.exists():
        pytest.skip(f"no conformance file {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


def _policy_from_record(record: dict) -> PatchPolicy:
    keys = record["policy_before"]
    channels = keys["state_encoder.0.weight"].shape[1]
    conv = keys["state_encoder.0.weight"].dim() == 4
    hidden = keys["critic.0.weight"].shape[1]
    flat_in = keys["state_encoder.3.weight"].shape[1] if conv else keys["state_encoder.0.weight"].shape[1]
    per_position = 32 if conv else channels
    size = int(round((flat_in / per_position) ** 0.5))
    assert size * size * per_position == flat_in
    # consistent with the stored states
    assert tuple(record["states"][0].shape[1:]) == (channels, size, size)
    policy = PatchPolicy(channels, size, hidden, conv=conv, action_std=record["hyper"]["action_std"])
    policy.load_state_dict(record["policy_before"])
    return policy


def _run_update(record: dict) -> tuple[PatchPolicy, dict, dict[str, torch.Tensor]]:
    hyper = record["hyper"]
    policy = _policy_from_record(record)
    optimizer = make_optimizer(policy, lr=hyper["lr"], betas=tuple(hyper["betas"]))
    memory = RolloutMemory(
        states=list(record["states"]),
        actions=list(record["actions"]),
        logprobs=list(record["logprobs"]),
        rewards=list(record["rewards"]),
    )
    grads: dict[str, torch.Tensor] = {}

    def grab(p: PatchPolicy) -> None:
        for name, param in p.named_parameters():
            grads[name] = param.grad.detach().clone()

    info = ppo_update(
        policy,
        optimizer,
        memory,
        gamma=hyper["gamma"],
        clip=hyper["eps_clip"],
        epochs=hyper["K_epochs"],
        before_step=grab,
    )
    return policy, info, grads


def test_ppo_update_conformance_loss(ppo_record):
    _, info, _ = _run_update(ppo_record)
    assert abs(info["loss"] - float(ppo_record["loss"])) <= LOSS_ATOL


def test_ppo_update_conformance_grads(ppo_record):
    _, _, grads = _run_update(ppo_record)
    assert set(grads) == set(ppo_record["grads"])
    for name, expected in ppo_record["grads"].items():
        err = (grads[name] - expected).abs().max().item()
        assert err <= GRAD_ATOL, f"{name}: gradient off by {err:.3g}"


def test_ppo_update_conformance_params_after(ppo_record):
    policy, _, _ = _run_update(ppo_record)
    after = policy.state_dict()
    assert list(after) == list(ppo_record["policy_after"])
    for name, expected in ppo_record["policy_after"].items():
        diff = (after[name] - expected).abs()
        tiny = ppo_record["grads"][name].abs() < TINY_GRAD
        atol = torch.where(tiny, torch.tensor(TINY_GRAD_PARAM_ATOL), torch.tensor(PARAM_ATOL))
        worst = (diff - atol).max().item()
        assert worst <= 0, f"{name}: parameter off by {diff.max().item():.3g}"


def test_ppo_update_conformance_changes_weights(ppo_record):
    """Sanity: the update moves the weights the original moved (the test above is not vacuous)."""
    moved = [
        name
        for name, before in ppo_record["policy_before"].items()
        if not torch.equal(before, ppo_record["policy_after"][name])
    ]
    assert moved
    policy, _, _ = _run_update(ppo_record)
    after = policy.state_dict()
    for name in moved:
        assert not torch.equal(after[name], ppo_record["policy_before"][name])


# ---------------------------------------------------------------------------- policy unit tests


@pytest.mark.parametrize(
    "config_name", ["resnet50_p96_T5", "mobilenetv3_large_100_p96_T3"]
)
def test_policy_keys_match_released_checkpoints(config_name):
    path = KEYS_DIR / f"{config_name}.json"
    if not path.exists():
        pytest.skip(f"no {path}")
    cfg = json.loads(path.read_text())
    size = -(-cfg["patch_size"] // 32)
    policy = PatchPolicy(
        cfg["feature_map_channels"], size, cfg["policy_hidden_dim"], conv=cfg["policy_conv"]
    )
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in policy.state_dict().items()]
    expected = [(k, shape, dtype) for k, (shape, dtype) in cfg["checkpoint_keys"]["policy"].items()]
    assert got == expected


def _small_policy(conv: bool) -> PatchPolicy:
    torch.manual_seed(0)
    return PatchPolicy(feature_map_channels=8, feature_map_size=3, hidden_dim=16, conv=conv)


@pytest.mark.parametrize("conv", [True, False])
def test_step_shapes_and_range(conv):
    policy = _small_policy(conv)
    batch = 5
    hidden = policy.initial_state(batch)
    assert hidden.shape == (1, batch, 16) and torch.count_nonzero(hidden) == 0
    mean, value, new_hidden = policy.step(torch.randn(batch, 8, 3, 3), hidden)
    assert mean.shape == (batch, 2) and value.shape == (batch, 1) and new_hidden.shape == (1, batch, 16)
    assert ((mean >= 0) & (mean <= 1)).all()


def test_sample_stays_in_unit_square_and_logprob_of_clamped_action():
    policy = PatchPolicy(8, 3, 16, conv=True, action_std=0.5)  # wide: many samples fall outside [0, 1]
    mean = torch.tensor([[0.0, 1.0], [0.5, 0.5], [0.98, 0.02]]).repeat(200, 1)
    g = torch.Generator().manual_seed(1)
    action, logprob = policy.sample(mean, generator=g)
    assert action.shape == mean.shape and logprob.shape == (mean.shape[0],)
    assert ((action >= 0) & (action <= 1)).all()
    assert (action == 0).any() and (action == 1).any()
    torch.testing.assert_close(logprob, policy.distribution(mean).log_prob(action))
    # reproducible with the same generator
    action2, _ = policy.sample(mean, generator=torch.Generator().manual_seed(1))
    assert torch.equal(action, action2)


def test_distribution_std():
    policy = _small_policy(True)
    dist = policy.distribution(torch.full((4, 2), 0.5))
    torch.testing.assert_close(dist.stddev, torch.full((4, 2), 0.1))


@pytest.mark.parametrize("conv", [True, False])
def test_evaluate_shapes_and_matches_stepping(conv):
    policy = _small_policy(conv)
    steps, batch = 3, 4
    states = torch.randn(steps, batch, 8, 3, 3)
    actions = torch.rand(steps, batch, 2)
    logprobs, values, entropy = policy.evaluate(states, actions)
    assert logprobs.shape == values.shape == entropy.shape == (steps, batch)
    # evaluate() from a zero state equals stepping the GRU one focus step at a time
    hidden = policy.initial_state(batch)
    for t in range(steps):
        mean, value, hidden = policy.step(states[t], hidden)
        torch.testing.assert_close(values[t], value.squeeze(1))
        torch.testing.assert_close(logprobs[t], policy.distribution(mean).log_prob(actions[t]))
