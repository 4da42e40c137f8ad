"""gfnet_env/data/host_memory.py: glibc's malloc tuned so that the networks' large CPU tensors stop page-faulting."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gfnet_env.data.host_memory import ENV_VARIABLE, keep_freed_memory, keep_freed_memory_unless_disabled

ROOT = Path(__file__).resolve().parents[2]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

#: Minor page faults per forward pass of a small conv net whose activations (16 × 64 × 96 × 96 floats, 38 MiB)
#: are the size of the env's, the median over 10 passes after two warm-up passes: with glibc's defaults each pass
#: gets fresh pages.
FAULTS = textwrap.dedent("""
    import resource, sys, torch
    from gfnet_env.data.host_memory import keep_freed_memory
    if sys.argv[1] == "tuned":
        assert keep_freed_memory()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 16, 1))
    x = torch.randn(16, 3, 96, 96)
    def forward():
        with torch.inference_mode():
            net(x)
    faults = []
    for _ in range(12):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        forward()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(sorted(faults[2:])[5])  # the median pass after two warm-up passes (a heap may settle a pass later)
""")


def _faults_per_round(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt tuning exists for glibc only (keep_freed_memory returns False)")
def test_tuned_malloc_stops_the_page_faults_of_repeated_large_tensors():
    default, tuned = _faults_per_round("default"), _faults_per_round("tuned")
    assert default > 5_000, f"glibc's defaults faulted only {default} pages per pass: the premise no longer holds"
    assert tuned < default / 100, (default, tuned)


def test_sizes_are_checked():
    for bad in (-1, 1.5, True, "1024"):
        with pytest.raises(ValueError, match="retain_mib must be a non-negative integer"):
            keep_freed_memory(retain_mib=bad)
    with pytest.raises(ValueError, match="top_pad_mib"):
        keep_freed_memory(top_pad_mib=-5)


def test_the_environment_variable_turns_it_off(monkeypatch):
    monkeypatch.setenv(ENV_VARIABLE, "0")
    assert keep_freed_memory_unless_disabled() is False


@pytest.mark.skipif(not GLIBC, reason="mallopt tuning exists for glibc only")
def test_the_gfnet_command_tunes_malloc_unless_told_not_to():
    script = ("import sys; from gfnet_cli.main import main; from gfnet_env.data.host_memory import malloc_tuned; "
              "main(['compare', '/nonexistent-folder']); print(malloc_tuned())")
    for value, expected in (("1", "(1024, 256)"), ("0", "None")):
        env = {**os.environ, ENV_VARIABLE: value}
        out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120, check=True)
        assert out.stdout.strip().splitlines()[-1] == expected, out
