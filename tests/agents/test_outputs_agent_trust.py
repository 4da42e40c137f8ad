"""Item 2: SB3 agent files run no code unless trust_agent is the boolean True (--trust-agent)."""

from __future__ import annotations

import contextlib
import pickle

import pytest

from agents.sb3.agent import SB3PPOAgent
from agents.sb3.algorithms import algorithm_class
from agents.sb3.files import UntrustedAgentError, load_replay_buffer, load_sb3_model
from agents.trained import load_agent
from helpers import (ENV_ID, SHIPPED, Payload, copy_shipped, crafted_agent_dir, crafted_agent_zip,
                            env_kwargs, run_cli)

pytestmark = pytest.mark.reliability


def test_the_crafted_payload_is_live_when_trusted(tmp_path):
    """Sanity check of the payload: SB3's own loader (trust_agent=True) does run it."""
    trace = tmp_path / "trace"
    zip_path = crafted_agent_zip(tmp_path / "agent.zip", trace)
    with contextlib.suppress(Exception):
        load_sb3_model(algorithm_class("ppo"), zip_path, trust_agent=True, device="cpu")
    assert trace.read_text() == "code ran"


@pytest.mark.parametrize("entry", ["ep_success_buffer", "observation_space", "policy_class"])
def test_crafted_agent_zip_is_refused_and_runs_nothing(tmp_path, entry):
    trace = tmp_path / "trace"
    zip_path = crafted_agent_zip(tmp_path / "agent.zip", trace, entry=entry)
    with pytest.raises(UntrustedAgentError) as info:
        SB3PPOAgent.load(zip_path, device="cpu")
    msg = str(info.value)
    assert f"'{entry}'" in msg and "builtins.exec" in msg and "could run code" in msg
    assert "--trust-agent" in msg and "trust_agent=True" in msg
    assert not trace.exists()


def test_load_agent_and_benchmark_refuse_a_crafted_agent_folder(tmp_path):
    from agents.benchmark.run import run_benchmark

    trace = tmp_path / "trace"
    folder = crafted_agent_dir(tmp_path / "run", trace)
    with pytest.raises(UntrustedAgentError, match="--trust-agent"):
        load_agent(None, folder, device="cpu")
    with pytest.raises(UntrustedAgentError, match="--trust-agent"):
        run_benchmark(ENV_ID, ["sb3-ppo"], None, episodes=4, agent_dirs={"sb3-ppo": [folder]},
                      env_kwargs=env_kwargs(), batch_size=4, device="cpu", verbose=False)
    assert not trace.exists()


@pytest.mark.parametrize("value", ["no", "off", 1, None])
def test_trust_agent_must_be_the_boolean_true(tmp_path, value):
    trace = tmp_path / "trace"
    folder = crafted_agent_dir(tmp_path / "run", trace)
    with pytest.raises(TypeError, match="trust_agent must be True or False"):
        load_agent(None, folder, device="cpu", trust_agent=value)
    with pytest.raises(TypeError, match="trust_agent must be True or False"):
        load_sb3_model(algorithm_class("ppo"), folder / "sb3_ppo.zip", trust_agent=value, device="cpu")
    assert not trace.exists()


def test_shipped_agent_loads_through_the_restricted_path():
    agent = SB3PPOAgent.load(SHIPPED, device="cpu")  # no trust needed: only known-safe data types inside
    assert agent.action_mode == "grid" and agent.grid_size == 7 and agent.obs_mode == "feature_map"


def test_crafted_replay_buffer_is_refused(tmp_path):
    trace = tmp_path / "trace"
    buffer = tmp_path / "sac_replay_buffer_32_steps.pkl"
    buffer.write_bytes(pickle.dumps(Payload(trace)))
    with pytest.raises(UntrustedAgentError, match="--trust-agent"):
        load_replay_buffer(object(), buffer)
    assert not trace.exists()


def test_cli_benchmark_show_and_resume_refuse_in_one_line(tmp_path, capsys):
    trace = tmp_path / "trace"
    folder = crafted_agent_dir(tmp_path / "run", trace)
    ckpt = tmp_path / "tiny.pth.tar"
    from feature_nets.checkpoint import save_checkpoint
    from helpers import tiny_model

    save_checkpoint(tiny_model(num_classes=10), ckpt)
    env = ["--env", "GFNet-ClutteredFashionMNIST-v0", "--env-kwarg", f"checkpoint={ckpt}",
           "--env-kwarg", "num_samples=12", "--device", "cpu"]
    from helpers import fashion_mnist_available

    commands = [["train-agent", "--agent", "sb3-ppo", "--steps", "64", "--resume", "--out", str(tmp_path / "t"),
                 "--no-progress"] + env]
    crafted_agent_zip(tmp_path / "t" / "checkpoints" / "ppo_64_steps.zip", trace)
    if fashion_mnist_available():
        commands += [["benchmark", "--agents", "sb3-ppo", "--agent-dir", f"sb3-ppo={folder}", "--episodes", "4",
                      "--out", str(tmp_path / "bench")] + env,
                     ["show", "--agent", "sb3-ppo", "--agent-dir", f"sb3-ppo={folder}", "--n", "2",
                      "--out", str(tmp_path / "looks.png")] + env]
    for argv in commands:
        code, out = run_cli(argv, capsys)
        assert code == 2, (argv[0], out)
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1 and "--trust-agent" in lines[0] and "Traceback" not in out, (argv[0], out)
    assert not trace.exists()
    assert not (tmp_path / "bench").exists()  # nothing written


def test_trusted_file_loads_with_the_flag(tmp_path):
    """An honest file the restricted reader refuses (e.g. a schedule pickled as a function) loads with trust."""
    import base64
    import json
    import zipfile

    import cloudpickle

    src = copy_shipped(tmp_path / "src.zip")
    dst = tmp_path / "old.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            blob = zin.read(item.filename)
            if item.filename == "data":
                data = json.loads(blob)
                data["lr_schedule"][":serialized:"] = base64.b64encode(cloudpickle.dumps(lambda _: 3e-4)).decode()
                blob = json.dumps(data).encode()
            zout.writestr(item, blob)
    with pytest.raises(UntrustedAgentError, match="lr_schedule"):
        SB3PPOAgent.load(dst, device="cpu")
    assert SB3PPOAgent.load(dst, device="cpu", trust_agent=True).grid_size == 7
