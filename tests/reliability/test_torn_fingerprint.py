"""Issue 23, case 10: one corrupt image among those the protocol fingerprint samples loses nothing.

``dataset_fingerprint`` hashes 8 images spread over the split. The benchmark fingerprints its protocol after every
agent has been evaluated (the evaluation skips undecodable images with a warning), so one corrupt file among the 8
made ``protocol_of`` raise ``CorruptImageError`` at the very end and nothing was written. Now the fingerprint hashes
such an image as "corrupt at index i" (a function of the dataset: the same file is corrupt every time, and a
repaired one changes the fingerprint) — the benchmark accepts the dataset while evaluating, so refusing it for one
of the 8 sampled files would be arbitrary, and refusing it only at the end loses the work.
"""

from __future__ import annotations

import json

import pytest
from torch.utils.data import Dataset

from agents.benchmark.run import run_benchmark
from gfnet_env.cache import dataset_fingerprint
from gfnet_env.data.image_folder import CorruptImageError
from helpers import ENV_ID, tiny_dataset, tiny_model

pytestmark = pytest.mark.reliability

#: An index the fingerprint samples (linspace(0, 17, 8) of 18 images) that neither the 6 evaluated images (i·18//6)
#: nor the held-out fit images use: only the fingerprint reads it.
CORRUPT = 2


class WithCorruptImage(Dataset):
    def __init__(self, base, corrupt: set[int]) -> None:
        self.base, self.corrupt = base, corrupt

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        if i in self.corrupt:
            raise CorruptImageError.for_file(f"img{i}.JPEG", "cannot identify image file")
        return self.base[i]


def test_fingerprint_of_a_dataset_with_a_corrupt_image():
    base = tiny_dataset(n=18)
    clean = dataset_fingerprint(base)
    broken = dataset_fingerprint(WithCorruptImage(base, {CORRUPT}))
    assert broken == dataset_fingerprint(WithCorruptImage(base, {CORRUPT}))  # a function of the dataset
    assert broken != clean  # and the file's state is part of it
    assert broken != dataset_fingerprint(WithCorruptImage(base, {4}))


def test_benchmark_with_a_corrupt_sampled_image_writes_its_results(tmp_path):
    out = tmp_path / "bench"
    dataset = WithCorruptImage(tiny_dataset(n=18), {CORRUPT})
    res = run_benchmark(ENV_ID, ["random", "center"], out, episodes=6, seeds=1,
                        env_kwargs={"checkpoint": tiny_model(), "dataset": dataset}, batch_size=3, device="cpu",
                        verbose=False)
    written = json.loads((out / "results.json").read_text())  # before the fix: CorruptImageError, nothing written
    assert written["protocol"] == res["protocol"] and set(written["agents"]) == {"random", "center"}
