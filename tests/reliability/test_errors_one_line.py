"""Issue 23, case 15: one line instead of a traceback, and messages that say what is wrong and how to fix it.

Each case runs the ``gfnet`` command as a user would, on a small crafted file or a bad option, and asserts the
exit status and that stderr is one line ``gfnet <command>: …`` naming the problem. Before: ``--device cuda`` on a
CPU-only machine, a ``policy_class`` swapped for ``torch.nn.Identity`` in an SB3 zip, a results.json whose
``"agents"`` is a list, a non-tensor value in ``--backbone-weights`` and Ctrl-C in ``benchmark`` or ``train-agent``
were tracebacks; a missing agent field was "gfnet compare: center"-style bare keys, ``agent.json`` with ``"file": 7``
was "unsupported operand type(s) for /: 'PosixPath' and 'int'". (``--hparams learning_rate=nan``, ``net_arch`` and
``n_steps`` bombs: ``test_bombs_inputs.py``; an SB3 data JSON nested 100k deep and a non-tensor value in a
checkpoint are here as guards.)
"""

from __future__ import annotations

import base64
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from helpers import SHIPPED, needs_fashion_mnist
from helpers import run_cli as _run_cli

pytestmark = pytest.mark.reliability

FMNIST = "GFNet-ClutteredFashionMNIST-v0"
SMALL_ENV = ["--env", FMNIST, "--env-kwarg", "num_samples=12"]
SHIPPED_CKPT = Path(__file__).resolve().parents[2] / "gfnet_env" / "weights" / "cluttered_fmnist_gfnet.pth.tar"
#: A CUDA device this machine does not have (cuda:0 without a GPU, cuda:N with N GPUs).
MISSING_GPU = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``helpers.run_cli``, with a Ctrl-C that escapes the command (the code before) a failure, not the end of the
    test session."""
    try:
        return _run_cli(argv, capsys)
    except KeyboardInterrupt:
        return -1, "KeyboardInterrupt escaped gfnet (a traceback)"


def one_line(code: int, text: str, command: str, status: int = 2) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == status and len(lines) == 1 and lines[0].startswith(f"gfnet {command}: "), (code, text)
    assert "Traceback" not in text
    return lines[0]


# --- crafted files ----------------------------------------------------------------------------------------------

def sb3_zip(folder: Path, edit) -> Path:
    """A copy of the shipped sb3-ppo agent whose ``data`` JSON (bytes) is passed through ``edit``."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(SHIPPED) as src, zipfile.ZipFile(folder / "sb3_ppo.zip", "w") as out:
        for item in src.infolist():
            blob = src.read(item.filename)
            out.writestr(item, edit(blob) if item.filename == "data" else blob)
    (folder / "agent.json").write_text(json.dumps({"agent": "sb3-ppo", "file": "sb3_ppo.zip"}))
    return folder


def identity_policy(data: bytes) -> bytes:
    import cloudpickle

    d = json.loads(data)
    d["policy_class"] = {":type:": "<class 'abc.ABCMeta'>",
                         ":serialized:": base64.b64encode(cloudpickle.dumps(torch.nn.Identity)).decode()}
    return json.dumps(d).encode()


def nested_deep(data: bytes) -> bytes:
    return data.rstrip()[:-1] + b', "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def show(folder: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["show", *SMALL_ENV, "--agent", "sb3-ppo", "--agent-dir", f"sb3-ppo={folder}", "--n", "1", "--device",
            "cpu", "--out", str(tmp_path / "looks.png"), *extra]


@needs_fashion_mnist
@pytest.mark.parametrize("trust", [False, True], ids=["restricted", "trust-agent"])
def test_sb3_policy_class_swapped_for_identity(tmp_path, capsys, trust):
    """SB3 built ``torch.nn.Identity`` as the policy and died in ``load_state_dict`` (a RuntimeError traceback)."""
    folder = sb3_zip(tmp_path / "agent", identity_policy)
    line = one_line(*run_cli(show(folder, tmp_path, *(["--trust-agent"] if trust else [])), capsys), "show")
    assert str(folder / "sb3_ppo.zip") in line and "the file was edited or damaged" in line
    assert ("policy_class is torch.nn.modules.linear.Identity, not a Stable-Baselines3 policy" in line if not trust
            else "do not fit the policy its data describes" in line)


@needs_fashion_mnist
def test_sb3_data_json_nested_100k_deep(tmp_path, capsys):
    folder = sb3_zip(tmp_path / "agent", nested_deep)
    line = one_line(*run_cli(show(folder, tmp_path), capsys), "show")
    assert "is not a Stable-Baselines3 model file" in line and "RecursionError" not in line


@needs_fashion_mnist
def test_agent_json_file_that_is_not_a_name(tmp_path, capsys):
    """``"file": 7`` was "unsupported operand type(s) for /: 'PosixPath' and 'int'"."""
    folder = tmp_path / "agent"
    folder.mkdir()
    shutil.copyfile(SHIPPED, folder / "sb3_ppo.zip")
    (folder / "agent.json").write_text(json.dumps({"agent": "sb3-ppo", "file": 7}))
    line = one_line(*run_cli(show(folder, tmp_path), capsys), "show")
    assert f"{folder / 'agent.json'}: 'file' must be the name of the weights file in the folder, got 7" in line
    assert "PosixPath" not in line
    (folder / "agent.json").write_text("{not json")
    assert "is not readable JSON" in one_line(*run_cli(show(folder, tmp_path), capsys), "show")


@needs_fashion_mnist
def test_paper_ppo_metadata_that_is_not_a_dict(tmp_path, capsys):
    """Was "dictionary update sequence element #0 has length 1; 2 is required"."""
    src = SHIPPED.parent / "paper_ppo_stop_c1e-8_cluttered_fmnist.pt"
    blob = torch.load(src, weights_only=True)
    blob["metadata"] = "x"
    folder = tmp_path / "agent"
    folder.mkdir()
    torch.save(blob, folder / "paper_ppo.pt")
    (folder / "agent.json").write_text(json.dumps({"agent": "paper-ppo-stop", "file": "paper_ppo.pt"}))
    line = one_line(*run_cli(["show", *SMALL_ENV, "--agent", "paper-ppo-stop", "--agent-dir",
                              f"paper-ppo-stop={folder}", "--n", "1", "--device", "cpu", "--out",
                              str(tmp_path / "x.png")], capsys), "show")
    assert "its metadata is a str, not a dict" in line


# --- state dicts that hold something else than tensors -----------------------------------------------------------

def test_backbone_weights_with_a_value_that_is_not_a_tensor(tmp_path, capsys):
    """``--backbone-weights`` with a float in its state dict (or other keys) was torch's multi-line RuntimeError."""
    from feature_nets.gfnet import build_small_gfnet

    sd = build_small_gfnet(widths=(8, 16), feature_num=16).local_encoder.official_state_dict()
    key = next(iter(sd))
    path = tmp_path / "backbone.pth"
    torch.save({**sd, key: 2.5}, path)
    argv = ["train-features", "--model", "small_cnn", "--small-widths", "8,16", "--small-feature-num", "16",
            "--train-samples", "64", "--val-samples", "16", "--epochs", "1", "--pretrain-epochs", "0",
            "--backbone-weights", str(path), "--no-progress", "--out", str(tmp_path / "run")]
    line = one_line(*run_cli(argv, capsys), "train-features")
    assert f"{path}: 'backbone weights' holds values that are not tensors ({key}: float)" in line
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    line = one_line(*run_cli(argv, capsys), "train-features")
    assert "'backbone weights' does not fit" in line and "unexpected keys ['conv1.weight']" in line
    assert not (tmp_path / "run" / "last.pth.tar").exists()


@needs_fashion_mnist
def test_checkpoint_with_a_value_that_is_not_a_tensor(tmp_path, capsys):
    ckpt = torch.load(SHIPPED_CKPT, weights_only=True)
    sd = dict(ckpt["model_state_dict"])
    key = next(iter(sd))
    sd[key] = 3.5
    ckpt["model_state_dict"] = sd
    path = tmp_path / "bad.pth.tar"
    torch.save(ckpt, path)
    line = one_line(*run_cli(["show", *SMALL_ENV, "--env-kwarg", f"checkpoint={path}", "--agent", "random", "--n", "1",
                              "--device", "cpu", "--out", str(tmp_path / "x.png")], capsys), "show")
    assert "'model_state_dict' holds values that are not tensors" in line


# --- --device that this machine does not have ---------------------------------------------------------------------

DEVICE_COMMANDS = {
    "show": ["show", "--env", FMNIST, "--agent", "random", "--out", "OUT/x.png"],
    "benchmark": ["benchmark", "--env", FMNIST, "--agents", "random", "--out", "OUT/bench"],
    "train-agent": ["train-agent", "--agent", "sb3-ppo", "--env", FMNIST, "--steps", "8", "--out", "OUT/run"],
    "train-policy": ["train-policy", "--checkpoint", str(SHIPPED_CKPT), "--env", FMNIST, "--steps", "8", "--out",
                     "OUT/run"],
    "train-features": ["train-features", "--model", "small_cnn", "--out", "OUT/run"],
}


@pytest.mark.parametrize("command", list(DEVICE_COMMANDS))
def test_device_this_machine_does_not_have(tmp_path, capsys, command):
    """``--device cuda`` on a CPU-only machine was torch's "Found no NVIDIA driver" traceback, after loading."""
    argv = [a.replace("OUT", str(tmp_path)) for a in DEVICE_COMMANDS[command]] + ["--device", MISSING_GPU]
    line = one_line(*run_cli(argv, capsys), command)
    assert f"--device {MISSING_GPU} but this machine has" in line and "CUDA GPU" in line
    assert not any(tmp_path.iterdir())  # refused before any work: no output folder
    line = one_line(*run_cli([*argv[:-1], "gpu"], capsys), command)
    assert "--device 'gpu' is not a torch device" in line and "use cpu, cuda, cuda:N or auto" in line


# --- gfnet compare on edited results -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bench_folders(tmp_path_factory):
    from agents.benchmark.run import run_benchmark
    from helpers import ENV_ID, env_kwargs

    root = tmp_path_factory.mktemp("bench")
    for name, agents in (("a", ["random", "center"]), ("b", ["raster"])):
        run_benchmark(ENV_ID, agents, root / name, episodes=6, seeds=1, env_kwargs=env_kwargs(n=18), batch_size=3,
                      device="cpu", verbose=False)
    return root / "a", root / "b"


def edited(bench_folders, tmp_path, edit_json=None, edit_npz=None) -> Path:
    import numpy as np

    a = tmp_path / "a"
    shutil.copytree(bench_folders[0], a)
    if edit_json is not None:
        results = json.loads((a / "results.json").read_text())
        edit_json(results)
        (a / "results.json").write_text(json.dumps(results))
    if edit_npz is not None:
        with np.load(a / "per_image.npz") as data:
            arrays = {k: data[k] for k in data.files}
        np.savez(a / "per_image.npz", **edit_npz(arrays))
    return a


COMPARE_CASES = {
    # "agents" as a list: AttributeError traceback
    "agents-list": (dict(edit_json=lambda r: r.__setitem__("agents", list(r["agents"].values()))),
                    "'agents' must be an object of agent name → results, got a list"),
    "agent-not-an-object": (dict(edit_json=lambda r: r["agents"].__setitem__("center", "oops")),
                            "agent 'center' has a str where its results (an object) belong"),
    # a bare KeyError: "gfnet compare: anytime_top1"
    "agent-field-missing": (dict(edit_json=lambda r: r["agents"]["center"].pop("anytime_top1")),
                            "agent 'center' has no anytime_top1"),
    "episodes-missing": (dict(edit_json=lambda r: r.pop("episodes")), "it has no episodes"),
    "fingerprint-missing": (dict(edit_json=lambda r: r["protocol"].pop("fingerprint")),
                            "'protocol' must be an object with a 'fingerprint' string"),
    "npz-correct-missing": (dict(edit_npz=lambda z: {k: v for k, v in z.items() if k != "center/correct"}),
                            "holds no center/correct array"),
}


@pytest.mark.parametrize("case", list(COMPARE_CASES))
def test_compare_on_edited_results(bench_folders, tmp_path, capsys, case):
    edits, words = COMPARE_CASES[case]
    a = edited(bench_folders, tmp_path, **edits)
    line = one_line(*run_cli(["compare", str(a), str(bench_folders[1])], capsys), "compare")
    assert words in line and str(a) in line and "rerun its benchmark" in line


def test_a_bare_key_error_says_what_it_is(bench_folders, capsys, monkeypatch):
    """A lookup that the validators missed printed the bare key ("gfnet compare: center")."""
    import agents.benchmark.merge as merge

    def lookup(*a, **k):
        return {}["center"]

    monkeypatch.setattr(merge, "merge_folders", lookup)
    line = one_line(*run_cli(["compare", *map(str, bench_folders)], capsys), "compare")
    assert "an entry named 'center' is missing from an input" in line and "GFNET_DEBUG=1" in line


# --- Ctrl-C: one line and exit status 130, in every command ------------------------------------------------------

def interrupt(*a, **k):
    raise KeyboardInterrupt


def test_ctrl_c_in_benchmark(tmp_path, capsys, monkeypatch, bench_folders):
    """Was a KeyboardInterrupt traceback; the previous results in --out stay whole, no lock or staging is left."""
    import agents.benchmark.run as run

    out = tmp_path / "bench"
    shutil.copytree(bench_folders[1], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(run, "evaluate_run", interrupt)
    from feature_nets.checkpoint import save_checkpoint
    from helpers import tiny_model

    ckpt = save_checkpoint(tiny_model(num_classes=10), tmp_path / "tiny.pth.tar")
    line = one_line(*run_cli(["benchmark", *SMALL_ENV, "--env-kwarg", f"checkpoint={ckpt}", "--agents", "random",
                              "--episodes", "4", "--device", "cpu", "--out", str(out)], capsys), "benchmark", 130)
    assert line.startswith("gfnet benchmark: interrupted; --out holds complete results only")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_ctrl_c_in_train_agent(tmp_path, capsys, monkeypatch):
    import stable_baselines3

    from feature_nets.checkpoint import save_checkpoint
    from helpers import tiny_model, write_image_folder

    monkeypatch.setattr(stable_baselines3.PPO, "train", interrupt)  # Ctrl-C in the first update
    ckpt = save_checkpoint(tiny_model(), tmp_path / "tiny.pth.tar")
    data = write_image_folder(tmp_path / "data", split="train", n_per_class=4, size=48)
    write_image_folder(data, split="val", n_per_class=2, size=48)
    out = tmp_path / "out"
    line = one_line(*run_cli(["train-agent", "--agent", "sb3-ppo", "--env", "GFNet-ImageNet-v0", "--env-kwarg",
                              f"checkpoint={ckpt}", "--env-kwarg", f"data_root={data}", "--out", str(out),
                              "--hparams", "n_steps=4", "--hparams", "batch_size=8", "--steps", "8", "--n-envs", "2",
                              "--eval-episodes", "2", "--device", "cpu", "--no-progress"], capsys), "train-agent", 130)
    assert line == "gfnet train-agent: interrupted; what was saved so far is kept in --out; continue it with --resume"
    assert (out / "UNFINISHED").exists() and not (out / "agent.json").exists()


@pytest.mark.parametrize("command", ["compare", "show"])
def test_ctrl_c_in_other_commands(tmp_path, capsys, monkeypatch, bench_folders, command):
    import agents.benchmark.merge as merge
    import gfnet_cli.commands.show as show_command

    monkeypatch.setattr(merge, "merge_folders", interrupt)
    monkeypatch.setattr(show_command, "run", interrupt)  # the parser is built in main(), after this
    argv = {"compare": ["compare", *map(str, bench_folders)],
            "show": ["show", "--env", FMNIST, "--agent", "random", "--out", str(tmp_path / "x.png")]}[command]
    line = one_line(*run_cli(argv, capsys), command, 130)
    assert line.startswith(f"gfnet {command}: interrupted")


# --- a one-process command under torchrun ------------------------------------------------------------------------

def test_one_process_commands_refuse_torchrun(tmp_path, capsys, monkeypatch):
    """``torchrun ... gfnet train-agent`` started N trainers racing for one --out; now one line, before any work."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["train-agent", "--agent", "sb3-ppo", "--env", FMNIST, "--steps", "8", "--out", str(tmp_path / "run")]
    line = one_line(*run_cli(argv, capsys), "train-agent")
    assert "WORLD_SIZE=2" in line and "without torchrun" in line and "train-policy" in line
    assert not any(tmp_path.iterdir())
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process started by torchrun: as without it
    code, text = run_cli(["train-agent", "--agent", "sb3-ppo", "--env", FMNIST, "--steps", "0", "--out",
                          str(tmp_path / "run")], capsys)
    assert "WORLD_SIZE" not in text
