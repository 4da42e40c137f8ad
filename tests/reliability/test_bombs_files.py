"""Issue 23, case 5: small files that took the machine down (nothing checked a size before allocating it).

Each file below is small (kilobytes; the ``per_image.npz`` 2 MB) and asked the loader for gigabytes: a checkpoint whose
``gfnet_spec`` says two million classes or 8192-channel convolutions, an SB3 zip whose data entry is
``bytearray(1.5e9)`` or ``torch.nn.Linear(20000, 20000)`` (43 bytes of pickle) or whose ``policy_kwargs`` ask for
``net_arch=[200000, 200000]`` (160 GB of weights; not in the issue, the same principle), a paper-ppo file with
``hidden_dim=200000``, and a ``per_image.npz`` of two billion zero bools. Each must now be refused with the
project's one-line error within 5 s and 500 MB.

The loads run in one child process (imports once, then each file in turn), which measures each load's time and its
peak resident memory above what it held before (``VmHWM`` after resetting it through ``/proc/self/clear_refs``), and
whose address space is capped 3 GiB above its start, so that the code before the fix fails these tests (an
allocator error instead of the refusal) without taking the machine down.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import SHIPPED, sb3_zip_with_pickled_entry, tiny_model

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
SECONDS, GROWTH_MB = 5.0, 500

CHILD = r"""
import gc, json, resource, sys, time
plan = json.loads(sys.argv[1])
import torch
from feature_nets.checkpoint import load_checkpoint
from agents.sb3.agent import SB3PPOAgent
from agents.paper_ppo.files import read_policy_file
from agents.benchmark.merge import merge_results

LOADERS = {"checkpoint": lambda p: load_checkpoint(p), "sb3": lambda p: SB3PPOAgent.load(p, device="cpu"),
           "paper_ppo": lambda p: read_policy_file(p), "compare": lambda p: merge_results([p], reference="random")}

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024  # MB (MiB)

cap = (status("VmSize") + 3 * 1024) * 2**20  # the code before the fix fails here instead of taking the machine down
resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
out = {}
for name, kind, path in plan:
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak RSS := current RSS
    base, t0 = status("VmRSS"), time.perf_counter()
    try:
        LOADERS[kind](path)
        error = None
    except BaseException as e:
        error = {"types": [c.__name__ for c in type(e).__mro__], "message": str(e)[:400]}
    out[name] = {"seconds": time.perf_counter() - t0, "base_mb": base, "peak_mb": status("VmHWM"), "error": error}
print("RESULTS " + json.dumps(out))
"""


# --- the files ------------------------------------------------------------------------------------------------
def edited_checkpoint(path: Path, edit) -> Path:
    from feature_nets.checkpoint import save_checkpoint

    save_checkpoint(tiny_model(), path)
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt["gfnet_spec"])
    torch.save(ckpt, path)
    return path


def sb3_zip_with_entry(path: Path, obj, entry: str = "ep_success_buffer") -> Path:
    """A copy of the shipped sb3-ppo zip whose data ``entry`` is the pickle of ``obj``."""
    import pickle

    return sb3_zip_with_pickled_entry(path, pickle.dumps(obj, protocol=4), entry)


class Calls:
    """Pickles as ``func(*args)``: what a crafted entry asks the unpickler to call."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def paper_ppo_file(path: Path, hidden_dim: int) -> Path:
    from agents.paper_ppo.files import write_policy_file
    from feature_nets.policy import PatchPolicy

    write_policy_file(PatchPolicy(8, 3, 16, False), path, {"seed": 0})
    blob = torch.load(path, weights_only=True)
    blob["policy_config"]["hidden_dim"] = hidden_dim
    torch.save(blob, path)
    return path


def npy_header(shape, dtype) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def write_npz(path: Path, members: dict) -> Path:
    """An ``.npz`` written by hand: ``name -> array`` (stored as numpy does) or ``name -> (shape, dtype)``, an array
    of zeros whose deflate stream is one compressed 1 MB block repeated (2e9 zero bools in 2 MB, written in a
    second: compressing them would take ~15 s)."""
    with open(path, "wb") as f:
        central = []
        for name, member in members.items():
            if isinstance(member, np.ndarray):
                raw = npy_header(member.shape, member.dtype) + member.tobytes()
                c = zlib.compressobj(6, zlib.DEFLATED, -15)
                data, size, crc = c.compress(raw) + c.flush(), len(raw), zlib.crc32(raw)
            else:
                shape, dtype = member
                header, n = npy_header(shape, dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize
                chunk = bytes(10**6)
                c = zlib.compressobj(9, zlib.DEFLATED, -15)
                block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)  # ends byte-aligned, dictionary reset
                c = zlib.compressobj(9, zlib.DEFLATED, -15)
                head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
                end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block
                assert n % len(chunk) == 0
                data = head + block * (n // len(chunk)) + end
                crc = zlib.crc32(header)
                for _ in range(n // len(chunk)):
                    crc = zlib.crc32(chunk, crc)
                size = len(header) + n
            fname = (name + ".npy").encode()
            offset = f.tell()
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(fname), 0))
            f.write(fname + data)
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size,
                                       len(fname), 0, 0, 0, 0, 0, offset) + fname)
        start = f.tell()
        for entry in central:
            f.write(entry)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), f.tell() - start, start, 0))
    return path


def results_folder(folder: Path, correct_shape, images: int = 4) -> Path:
    """A benchmark output folder of one agent, ``random``, on ``images`` images, whose ``correct`` records have
    ``correct_shape`` (all zeros)."""
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({
        "protocol": {"fingerprint": "f"}, "episodes": images, "T": 4, "seeds": 1, "reference": "random",
        "env_id": "GFNet-ImageNet-v0", "eval_images": "", "fit": {}, "env_madds_per_step": [1] * 4,
        "env_madds_cumulative": [1] * 4,  # the entries compare needs (agents.benchmark.merge.check_results)
        "agents": {"random": {"n_runs": 1, "anytime_top1": [0.0] * 4, "mean_return": 0.0, "budgeted": {},
                              "madds_per_step": [1] * 4, "madds": 4, "seconds": 0.0, "runs": []}}}))
    write_npz(folder / "per_image.npz", {"image_index": np.arange(images), "target": np.zeros(images, np.int64),
                                         "random/correct": (correct_shape, np.bool_)})
    return folder


#: name -> (loader kind, how the file is made, the refusal's class, a word of its message)
BOMBS = {
    "checkpoint-1e7-classes": ("checkpoint", lambda d: edited_checkpoint(
        d / "classes.pth.tar", lambda spec: spec.update(num_classes=10_000_000)), "CheckpointError",
        "shape|does not fit"),
    "checkpoint-8192-widths": ("checkpoint", lambda d: edited_checkpoint(
        d / "widths.pth.tar", lambda spec: spec["encoder_kwargs"].update(widths=[2048, 4096, 8192])),
        "CheckpointError", "shape|does not fit"),
    "sb3-bytearray-1.5e9": ("sb3", lambda d: sb3_zip_with_entry(d / "bytearray.zip", Calls(bytearray, 1_500_000_000)),
                            "UntrustedPickleError", "bytes"),
    "sb3-linear-20000": ("sb3", lambda d: sb3_zip_with_entry(d / "linear.zip", Calls(torch.nn.Linear, 20_000, 20_000)),
                         "UntrustedPickleError", r"torch\.nn\.modules\.linear\.Linear"),
    "sb3-net-arch-200000": ("sb3", lambda d: sb3_zip_with_entry(d / "net_arch.zip", {
        "net_arch": {"pi": [200_000, 200_000], "vf": [64, 64]}, "activation_fn": torch.nn.ReLU}, "policy_kwargs"),
        "UntrustedPickleError", r"policy\.pth holds"),
    "paper-ppo-hidden-200000": ("paper_ppo", lambda d: paper_ppo_file(d / "paper_ppo.pt", 200_000),
                                "CheckpointError", "shape|does not fit"),
    "per-image-2e9-bools": ("compare", lambda d: results_folder(d / "bench", (1, 1, 2_000_000_000)),
                            "ValueError", r"per_image\.npz.*2,000,000,000 elements"),
}


def run_child(plan, pythonpath: str = str(ROOT)) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(plan)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=pythonpath)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")), None)
    assert line is not None, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(line[len("RESULTS "):])


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Every bomb loaded once in one child process: name -> seconds, base/peak MB, the error."""
    d = tmp_path_factory.mktemp("bombs")
    plan = [(name, kind, str(make(d))) for name, (kind, make, _, _) in BOMBS.items()]
    sizes = {name: sum(f.stat().st_size for f in Path(p).rglob("*")) if Path(p).is_dir() else Path(p).stat().st_size
             for name, _, p in plan}
    out = run_child(plan)
    for name in out:
        out[name]["file_bytes"] = sizes[name]
    return out


@pytest.mark.parametrize("name", list(BOMBS))
def test_small_file_is_refused_in_bounded_time_and_memory(measured, name):
    """Before: 4.8 GB for 49 s (2e6 classes), 3.8 GB for 46 s (widths), 2.4 GB and the agent loaded (bytearray),
    2.5 GB (Linear), 1.3 GB then a traceback (hidden_dim), 27 s into a 14.9 GiB MemoryError (npz)."""
    kind, _make, error_class, word = BOMBS[name]
    got = measured[name]
    assert got["file_bytes"] < 4 * 2**20, got  # the SB3 zips: the shipped 3.7 MB agent with a 30-50 byte entry
    assert got["error"] is not None, f"{name}: loaded without an error: {got}"
    assert error_class in got["error"]["types"], got
    assert re.search(word, got["error"]["message"]) and "\n" not in got["error"]["message"], got
    assert got["seconds"] < SECONDS, got
    assert got["peak_mb"] - got["base_mb"] < GROWTH_MB, got


def test_train_policy_with_a_billion_classes_is_one_line(tmp_path, capsys):
    """``num_classes=1e9`` was an allocator traceback in ``gfnet train-policy`` (now refused before any allocation)."""
    from helpers import run_cli

    path = edited_checkpoint(tmp_path / "billion.pth.tar", lambda spec: spec.update(num_classes=10**9))
    code, out = run_cli(["train-policy", "--checkpoint", str(path), "--env", "GFNet-ImageNet-v0", "--steps", "8",
                         "--out", str(tmp_path / "out"), "--device", "cpu"], capsys)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gfnet train-policy: "), out
    assert "shape" in lines[0] and "1000000000" in lines[0], out


def test_tensors_larger_than_their_storage_are_refused(tmp_path):
    """A weight declared as a stride-0 view of one stored value (a few bytes in the file, gigabytes once copied)."""
    from feature_nets.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    path = save_checkpoint(tiny_model(), tmp_path / "strided.pth.tar")
    ckpt = torch.load(path, weights_only=True)
    key = next(k for k, v in ckpt["fc"].items() if v.ndim == 2)
    ckpt["fc"][key] = torch.zeros(1).expand(ckpt["fc"][key].shape)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="repeats"):
        load_checkpoint(path)


def test_honest_files_still_load(tmp_path):
    """The bounds leave real files alone: the shipped agent, a checkpoint, a paper-ppo file, a real npz."""
    from agents.paper_ppo.files import read_policy_file
    from agents.sb3.agent import SB3PPOAgent
    from feature_nets.checkpoint import load_checkpoint, save_checkpoint
    from feature_nets.files import check_npz

    SB3PPOAgent.load(SHIPPED, device="cpu")
    model = tiny_model()
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ok.pth.tar")).model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    read_policy_file(paper_ppo_file(tmp_path / "ok.pt", 16))
    np.savez_compressed(tmp_path / "ok.npz", a=np.zeros((2, 3, 4), bool), b=np.arange(4))
    assert check_npz(tmp_path / "ok.npz", 24) == {"a": ((2, 3, 4), np.dtype(bool)), "b": ((4,), np.dtype(np.int64))}
