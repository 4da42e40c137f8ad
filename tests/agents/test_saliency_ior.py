"""The saliency baseline with inhibition of return (``saliency-ior``)."""

from __future__ import annotations

import agents
from gfnet_env.core import GFNetCore
from gfnet_env.rollout import rollout
from gfnet_env.settings import EnvSettings


def test_saliency_with_inhibition_of_return_never_looks_twice(model, dataset):
    """saliency-ior's patches never overlap an earlier look of the episode when a free place exists (48 px image,
    16 px patches, 3 looks: always), while plain saliency re-looks inside its previous patch."""
    with GFNetCore(model, dataset, 8, EnvSettings(obs_mode="dict"), device="cpu") as core:
        ior = rollout(core, agents.make("saliency-ior"), range(24))
        plain = rollout(core, agents.make("saliency"), range(24))

    def overlaps(boxes):  # (steps, 4) row, col, h, w of one episode
        return sum(abs(a[0] - b[0]) < a[2] and abs(a[1] - b[1]) < a[3]
                   for i, a in enumerate(boxes) for b in boxes[:i])

    assert all(overlaps(ior.boxes[:, e]) == 0 for e in range(24))
    assert sum(overlaps(plain.boxes[:, e]) for e in range(24)) > 0
