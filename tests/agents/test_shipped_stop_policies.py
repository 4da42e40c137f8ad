"""The shipped ``paper-ppo-stop`` policies of the embedded task (gfnet_env/weights/MODEL_CARD.md, "Agents that
stop"): each loads as a file (``--agent-dir paper-ppo-stop:LABEL=FILE``), records the step cost it was trained
with, and on 200 test canvases stops by itself on most images but not on all, after some looks but before the
end of the episode on average. Seconds on CPU."""

from __future__ import annotations

import pytest

import agents
import gfnet_env
from gfnet_env.tasks import WEIGHTS_DIR
from helpers import fashion_mnist_available

ENV_ID = "GFNet-ClutteredFashionMNIST-v0"
#: step cost (reward per multiply-add) of each shipped file, as in its name
SHIPPED_STOP = {5e-9: "paper_ppo_stop_c5e-9_cluttered_fmnist.pt", 7e-9: "paper_ppo_stop_c7e-9_cluttered_fmnist.pt",
                1e-8: "paper_ppo_stop_c1e-8_cluttered_fmnist.pt"}
IMAGES = range(0, 10_000, 50)  # 200 test canvases spread over the split

pytestmark = pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST files not installed")


@pytest.fixture(scope="module")
def mean_looks() -> dict[float, float]:
    out = {}
    for cost, name in SHIPPED_STOP.items():
        agent = agents.load_agent("paper-ppo-stop", WEIGHTS_DIR / name, device="cpu")
        assert agent.env_settings()["stop_action"] is True
        assert agent.metadata["env_kwargs"]["step_cost"] == cost and agent.metadata["env_id"] == ENV_ID
        with gfnet_env.make_core(ENV_ID, 50, device="cpu", agent=agent) as core:
            result = gfnet_env.rollout(core, agent, IMAGES)
            max_steps = core.max_steps
        stopped, exit_step = result.stopped, result.exit_step
        assert 0.5 < stopped.mean() < 1.0, (name, stopped.mean())  # most images, not all
        assert (exit_step[stopped] < max_steps).all() and (exit_step[~stopped] == max_steps).all()
        assert 0 < exit_step.mean() < max_steps, (name, exit_step.mean())
        out[cost] = float(exit_step.mean())
    return out


def test_shipped_stop_policies_are_small():
    for name in SHIPPED_STOP.values():
        size = (WEIGHTS_DIR / name).stat().st_size
        assert size <= 5 * 2**20, f"{name} is {size} bytes (> 5 MB, the limit of a shipped file)"


def test_each_shipped_stop_policy_stops_on_most_images_but_not_all(mean_looks):
    assert set(mean_looks) == set(SHIPPED_STOP)
    assert all(1.0 < looks < 2.5 for looks in mean_looks.values()), mean_looks


def test_a_dearer_look_means_fewer_looks(mean_looks):
    assert mean_looks[5e-9] > mean_looks[1e-8] + 0.25, mean_looks
