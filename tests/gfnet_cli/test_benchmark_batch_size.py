"""`gfnet benchmark` without --batch-size runs batches sized for the device (benchmarks/RESULTS.md, "The benchmark's
default batch size"); --batch-size still wins."""

from __future__ import annotations

import argparse

import pytest

from gfnet_cli.commands import benchmark


def passed_batch_size(monkeypatch, argv: list[str]) -> int:
    """The batch size `gfnet benchmark ARGV` hands to run_benchmark (which is replaced by a recorder)."""
    seen = {}
    monkeypatch.setattr("agents.benchmark.run.run_benchmark", lambda *a, **kw: seen.update(kw))
    parser = argparse.ArgumentParser()
    benchmark.add_arguments(parser)
    assert benchmark.run(parser.parse_args(argv)) == 0
    return seen["batch_size"]


@pytest.mark.parametrize("cuda", [False, True])
def test_default_batch_size_follows_the_device(monkeypatch, tmp_path, cuda):
    monkeypatch.setattr("torch.cuda.is_available", lambda: cuda)
    argv = ["--env", "GFNet-ClutteredFashionMNIST-v0", "--agents", "random", "--out", str(tmp_path)]
    expected = benchmark.CUDA_BATCH_SIZE if cuda else benchmark.CPU_BATCH_SIZE
    assert passed_batch_size(monkeypatch, argv) == expected
    assert passed_batch_size(monkeypatch, argv + ["--device", "cpu"]) == benchmark.CPU_BATCH_SIZE
    assert passed_batch_size(monkeypatch, argv + ["--device", "cuda:0"]) == benchmark.CUDA_BATCH_SIZE
    assert passed_batch_size(monkeypatch, argv + ["--batch-size", "17"]) == 17
    assert benchmark.CUDA_BATCH_SIZE > benchmark.CPU_BATCH_SIZE > 64  # 64: the old default, slower on the CPU
