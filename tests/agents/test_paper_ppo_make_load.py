"""The paper's policy as a Python object: ``agents.make("paper-ppo")`` (the shipped policy of the embedded task's
checkpoint, or of any GFNet checkpoint given) and ``agents.load_agent("paper-ppo", <GFNet checkpoint>)``, with a
one-line refusal, saying how to train one, for checkpoints that hold no trained policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import agents
from agents.paper_ppo import PaperPPOAgent
from feature_nets.checkpoint import checkpoint_dict, save_checkpoint
from gfnet_env.tasks.cluttered_fashion_mnist import DEFAULT_FMNIST_CHECKPOINT
from helpers import tiny_model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def feature_maps(policy, n: int = 3, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    shape = (n, policy.feature_map_channels, policy.feature_map_size, policy.feature_map_size)
    return torch.randn(shape, generator=g).numpy()


def test_make_gives_the_shipped_policy_of_the_default_task():
    made = agents.make("paper-ppo", device="cpu")
    stored = PaperPPOAgent.from_checkpoint(DEFAULT_FMNIST_CHECKPOINT, device="cpu")
    assert isinstance(made, PaperPPOAgent)
    assert same_weights(made.policy, stored.policy)
    obs = feature_maps(made.policy)
    made.reset(3)
    stored.reset(3)
    np.testing.assert_array_equal(made.act(obs), stored.act(obs))


def test_make_takes_a_checkpoint_and_load_agent_accepts_one(tmp_path):
    model = tiny_model(seed=3)
    path = save_checkpoint(model, tmp_path / "s2.pth.tar", stage=2)
    made = agents.make("paper-ppo", checkpoint=path, device="cpu")
    loaded = agents.load_agent("paper-ppo", path, device="cpu")
    assert isinstance(loaded, PaperPPOAgent)
    assert same_weights(made.policy, model.policy) and same_weights(loaded.policy, model.policy)
    assert made.policy is not model.policy  # a copy: training the agent leaves the checkpoint's model alone


def test_checkpoint_without_a_policy_is_one_line_saying_how_to_train_one(tmp_path):
    blob = checkpoint_dict(tiny_model())
    del blob["policy"]
    path = tmp_path / "nopolicy.pth.tar"
    torch.save(blob, path)
    for attempt in (lambda: agents.make("paper-ppo", checkpoint=path),
                    lambda: agents.load_agent("paper-ppo", path)):
        with pytest.raises(ValueError) as info:
            attempt()
        msg = str(info.value)
        assert "\n" not in msg and "gfnet train-policy" in msg and str(path) in msg


def test_stage1_checkpoint_is_refused_as_untrained(tmp_path):
    path = save_checkpoint(tiny_model(), tmp_path / "s1.pth.tar", stage=1)
    with pytest.raises(ValueError, match="stage 1.*gfnet train-policy"):
        agents.load_agent("paper-ppo", path)


def test_paper_ppo_stop_says_where_its_policies_are():
    with pytest.raises(ValueError, match="load_agent.*paper-ppo-stop.*gfnet train-agent --agent paper-ppo-stop"):
        agents.make("paper-ppo-stop")
    with pytest.raises(ValueError, match="paper-ppo-stop has no policy in a GFNet checkpoint"):
        agents.load_agent("paper-ppo-stop", DEFAULT_FMNIST_CHECKPOINT)


def test_other_torch_files_and_mixed_arguments_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="neither a paper-ppo agent file .* nor a GFNet checkpoint"):
        agents.load_agent("paper-ppo", path)
    with pytest.raises(ValueError, match="not both"):
        PaperPPOAgent(tiny_model().policy, checkpoint=DEFAULT_FMNIST_CHECKPOINT)


def test_a_policy_file_still_loads_as_before(tmp_path):
    agent = PaperPPOAgent(tiny_model(seed=5).policy, device="cpu")
    agent.metadata = {"seed": 5}
    path = agent.save(tmp_path / "paper_ppo.pt")
    loaded = agents.load_agent("paper-ppo", path, device="cpu")
    assert same_weights(loaded.policy, agent.policy) and loaded.metadata == {"seed": 5}
