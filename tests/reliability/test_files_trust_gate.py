"""Issue 23, cases 1 and 4: one trust gate for every file that may hold a pickle.

Every loader (a GFNet checkpoint, ``--backbone-weights``, a stage-2 policy file, a paper-ppo ``paper_ppo.pt`` or
``paper_ppo_latest.pt``, the ``*.pth`` entries of an SB3 zip) takes the opt-in only as the bool True, and refuses a
file whose pickle would run code with one :class:`UntrustedPickleError` naming the file and the globals, never
with torch's advice to load it with ``weights_only=False``. A truncated file is a one-line "not readable" error.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch

from agents.paper_ppo.files import read_policy_file, write_policy_file
from feature_nets.checkpoint import CheckpointError, UntrustedPickleError
from feature_nets.policy import PatchPolicy
from feature_nets.training import load_backbone_weights, load_policy
from helpers import SHIPPED, TracePayload, run_cli, tiny_model, write_image_folder

pytestmark = pytest.mark.reliability

NOT_TRUE = ["no", "off", "true", 1, None, np.True_]
TORCH_ADVICE = ("weights_only", "will likely succeed", "re-running `torch.load`")


def backbone_file(tmp_path, trace):
    """A plain backbone state dict (as --backbone-weights takes) plus an entry that writes ``trace`` when
    unpickled."""
    sd = dict(tiny_model().global_encoder.official_state_dict())
    sd["notes"] = TracePayload(trace)
    path = tmp_path / "backbone.pth"
    torch.save(sd, path)
    return path


def assert_refused(error, path, entry=None):
    """One of our refusals: names the file (and entry) and the global, no torch advice, no chained traceback."""
    msg = str(error)
    assert isinstance(error, UntrustedPickleError) and isinstance(error, CheckpointError)
    assert str(path) in msg and "builtins.exec" in msg and "run code" in msg
    assert entry is None or entry in msg
    assert not any(a in msg for a in TORCH_ADVICE), msg
    assert "\n" not in msg


# --- case 1: the strict-bool check on every loader ------------------------------------------------------

@pytest.mark.parametrize("value", NOT_TRUE, ids=repr)
def test_backbone_weights_take_only_the_bool_true(tmp_path, value):
    """``load_backbone_weights(model, path, trusted_pickle="no")`` ran the payload (``not "no"`` is False)."""
    trace = tmp_path / "TRACE"
    path = backbone_file(tmp_path, trace)
    with pytest.raises(TypeError, match="trusted_pickle must be True or False"):
        load_backbone_weights(tiny_model(), path, trusted_pickle=value)
    assert not trace.exists(), "the file's code ran"


@pytest.mark.parametrize("value", NOT_TRUE, ids=repr)
def test_policy_loader_takes_only_the_bool_true(tmp_path, value):
    trace = tmp_path / "TRACE"
    path = tmp_path / "policy.pt"
    torch.save({"policy": {"actor.0.weight": torch.zeros(1)}, "notes": TracePayload(trace)}, path)
    with pytest.raises(TypeError, match="trusted_pickle must be True or False"):
        load_policy(tiny_model(), path, trusted_pickle=value)
    assert not trace.exists()


def test_the_backbone_payload_is_real(tmp_path):
    """With the bool True the file is fully unpickled and the payload runs: the refusals above are real."""
    trace = tmp_path / "TRACE"
    with pytest.raises(Exception):  # noqa: B017 - the "notes" key is not a backbone key; the payload ran first
        load_backbone_weights(tiny_model(), backbone_file(tmp_path, trace), trusted_pickle=True)
    assert trace.read_text() == "ran"


# --- case 4: one refusal, naming the file and the globals --------------------------------------------------

def test_backbone_weights_payload_is_our_refusal(tmp_path):
    trace = tmp_path / "TRACE"
    path = backbone_file(tmp_path, trace)
    with pytest.raises(UntrustedPickleError) as info:
        load_backbone_weights(tiny_model(), path)
    assert_refused(info.value, path)
    assert "--trusted-pickle" in str(info.value)
    assert not trace.exists()


def test_policy_file_payload_is_our_refusal(tmp_path):
    """A stage-2 policy file that is not a GFNet checkpoint went to a second, raw ``torch.load``."""
    trace = tmp_path / "TRACE"
    path = tmp_path / "policy.pt"
    torch.save({"policy": {"actor.0.weight": torch.zeros(1)}, "notes": TracePayload(trace)}, path)
    with pytest.raises(UntrustedPickleError) as info:
        load_policy(tiny_model(), path)
    assert_refused(info.value, path)
    assert not trace.exists()


def paper_ppo_file(tmp_path, trace=None):
    policy = PatchPolicy(8, 3, 16, False)
    extra = {"notes": TracePayload(trace)} if trace is not None else {}
    return write_policy_file(policy, tmp_path / "paper_ppo.pt", {"seed": 0}, **extra)


def test_paper_ppo_payload_is_our_refusal(tmp_path):
    trace = tmp_path / "TRACE"
    path = paper_ppo_file(tmp_path, trace)
    with pytest.raises(UntrustedPickleError) as info:
        read_policy_file(path)
    assert_refused(info.value, path)
    assert not trace.exists()


def test_paper_ppo_resume_payload_is_our_refusal(tmp_path):
    """The trainer's own ``paper_ppo_latest.pt`` reader (``--resume``) goes through the same gate."""
    from agents.paper_ppo.train import _Learner

    trace = tmp_path / "TRACE"
    path = paper_ppo_file(tmp_path, trace)
    policy = PatchPolicy(8, 3, 16, False)
    state = _Learner(policy, torch.optim.Adam(policy.parameters()), torch.Generator())
    with pytest.raises(UntrustedPickleError) as info:
        state.load(path)
    assert_refused(info.value, path)
    assert not trace.exists()


@pytest.mark.parametrize("keep", [0, 40, 300, -7], ids=["empty", "40-bytes", "300-bytes", "minus-7"])
def test_truncated_paper_ppo_file_is_one_clear_line(tmp_path, keep):
    """A truncated ``paper_ppo.pt`` was a raw ``RuntimeError`` from torch's zip reader."""
    path = paper_ppo_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(CheckpointError) as info:
        read_policy_file(path)
    msg = str(info.value)
    assert str(path) in msg and "truncated" in msg and "\n" not in msg
    assert not any(a in msg for a in TORCH_ADVICE)


def sb3_zip_with_payload(tmp_path, entry: str, trace):
    """A copy of the shipped sb3-ppo zip whose tensor file ``entry`` also holds a pickle that writes ``trace``."""
    dest = tmp_path / "sb3_ppo.zip"
    with zipfile.ZipFile(SHIPPED) as src, zipfile.ZipFile(dest, "w") as out:
        for item in src.infolist():
            blob = src.read(item.filename)
            if item.filename == entry:
                obj = torch.load(io.BytesIO(blob), weights_only=True)
                obj = {"state": obj, "notes": TracePayload(trace)}
                buf = io.BytesIO()
                torch.save(obj, buf)
                blob = buf.getvalue()
            out.writestr(item, blob)
    return dest


@pytest.mark.parametrize("entry", ["policy.pth", "pytorch_variables.pth"])
def test_sb3_tensor_entry_payload_is_our_refusal(tmp_path, entry):
    from agents.sb3.agent import SB3PPOAgent

    trace = tmp_path / "TRACE"
    path = sb3_zip_with_payload(tmp_path, entry, trace)
    for trust in (False, True):  # SB3 reads its tensor files with weights_only=True even when trusted
        with pytest.raises(UntrustedPickleError) as info:
            SB3PPOAgent.load(path, device="cpu", trust_agent=trust)
        assert_refused(info.value, path, entry)
    assert not trace.exists()


def test_backbone_weights_payload_is_one_line_on_the_cli(tmp_path, capsys):
    """``gfnet train-features --backbone-weights EVIL`` printed torch's traceback and advice."""
    trace = tmp_path / "TRACE"
    path = backbone_file(tmp_path, trace)
    data = write_image_folder(tmp_path / "data", split="train", n_per_class=2, size=48)
    write_image_folder(data, split="val", n_per_class=2, size=48)
    code, out = run_cli(["train-features", "--data-root", str(data), "--model", "small_cnn", "--image-size", "48",
                         "--patch-size", "16", "--T", "2", "--backbone-weights", str(path), "--epochs", "1",
                         "--out", str(tmp_path / "out"), "--device", "cpu", "--workers", "0", "--no-progress"],
                        capsys)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert code == 2, out
    assert len(lines) == 1 and lines[0].startswith("gfnet train-features: "), out
    assert "builtins.exec" in lines[0] and not any(a in out for a in TORCH_ADVICE)
    assert not trace.exists()


def test_torch_load_is_called_only_by_the_trust_gate():
    """One gate: no module of the four packages calls ``torch.load`` (or ``pickle.load``) but feature_nets/trust.py."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    callers = []
    for package in ("feature_nets", "gfnet_env", "agents", "gfnet_cli"):
        for file in sorted((root / package).rglob("*.py")):
            if file.relative_to(root).as_posix() == "feature_nets/trust.py":
                continue
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                f = getattr(node, "func", None) if isinstance(node, ast.Call) else None
                if (isinstance(f, ast.Attribute) and f.attr in ("load", "loads")
                        and isinstance(f.value, ast.Name) and f.value.id in ("torch", "th", "pickle")):
                    callers.append(f"{file.relative_to(root)}:{node.lineno}")
    assert not callers, f"torch.load / pickle.load outside the trust gate: {callers}"
