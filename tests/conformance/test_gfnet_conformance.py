"""End-to-end conformance with the original GFNet implementation, for all 14 released configurations.

Each test writes a checkpoint in the released format filled by the conformance README's rule, loads it
through the public loader, runs the fixture images through the public GFNet API with the policy's mean
actions, and compares every recorded quantity within the README's tolerances. Works for any seed's set of
the same format (``GFNET_CONFORMANCE_DIR``).
"""

from __future__ import annotations

import pytest
import torch

from helpers import config_names, load_config, write_official_checkpoint
from feature_nets.checkpoint import load_checkpoint
from gfnet_env.rewards import confidence_gain

ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


def _close(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    got, want = got.float(), want.float()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = (got - want).abs().max().item()
    assert err <= ATOL, f"{name}: max abs error {err:.3g} > {ATOL}"


@pytest.mark.parametrize("name", config_names())
def test_gfnet_conformance(name, tmp_path):
    meta, data = load_config(name)
    path = tmp_path / f"{name}.pth.tar"
    write_official_checkpoint(meta, path)
    loaded = load_checkpoint(path)
    model = loaded.model
    assert loaded.model_name == meta["model_name"]
    assert loaded.patch_size == meta["patch_size"]
    assert loaded.T == meta["T"] == model.T

    images = data["images"].float()
    targets = data["targets"].long()
    outputs, actions = model.run(images)
    T = meta["T"]
    assert len(outputs) == T and len(actions) == T - 1
    F = meta["feature_num"]
    for t, out in enumerate(outputs):
        _close(f"logits[{t}]", out.logits, data["logits"][t])
        want_state = data["fc_hidden"][t]
        got_state = out.state if meta["fc_rnn"] else out.state[:, : want_state.shape[1]]
        if not meta["fc_rnn"]:
            assert want_state.shape[1] == (t + 1) * F
        _close(f"fc_hidden[{t}]", got_state, want_state)
    for t in range(1, T):
        _close(f"actions[{t - 1}]", actions[t - 1], data["actions"][t - 1])
        _close(f"policy_states[{t - 1}]", outputs[t - 1].feature_map, data["policy_states"][t - 1])
        corners = outputs[t].boxes[:, :2]
        assert torch.equal(corners.long(), data["patch_coords"][t - 1].long()), f"patch_coords[{t - 1}]"
        reward = confidence_gain(outputs[t - 1].logits, outputs[t].logits, targets)
        _close(f"rewards[{t - 1}]", reward, data["rewards"][t - 1])


@pytest.mark.parametrize("name", config_names()[:1])
def test_conformance_module_prefix_free_keys_load_identically(name, tmp_path):
    """Both encoder key spellings (with and without ``module.``) give the same model."""
    meta, data = load_config(name)
    with_prefix = tmp_path / "a.pth.tar"
    write_official_checkpoint(meta, with_prefix)
    ckpt = torch.load(with_prefix, weights_only=True)
    for field in ("model_state_dict", "model_prime_state_dict"):
        ckpt[field] = {k.removeprefix("module."): v for k, v in ckpt[field].items()}
    without_prefix = tmp_path / "b.pth.tar"
    torch.save(ckpt, without_prefix)
    a = load_checkpoint(with_prefix).model
    b = load_checkpoint(without_prefix).model
    images = data["images"].float()
    la = a.run(images)[0][-1].logits
    lb = b.run(images)[0][-1].logits
    assert torch.equal(la, lb)
