"""The learned policy written back into a GFNet checkpoint (official format), the end of stage 2."""

from __future__ import annotations

from pathlib import Path

from feature_nets.files import atomic_save
from feature_nets.policy import PatchPolicy, StopPatchPolicy

__all__ = ["STALE_RESULTS", "save_policy_into_checkpoint"]

#: Checkpoint entries measured with the old policy, dropped when the policy is replaced (the three results, the
#: note saying how they were measured and the protocol they were measured under).
STALE_RESULTS = ("anytime_classification", "budgeted_batch_classification", "dynamic_threshold",
                 "anytime_classification_note", "results_protocol")


def save_policy_into_checkpoint(policy: PatchPolicy, checkpoint, out_path, trusted_pickle: bool = False,
                                **extra) -> Path:
    """Write a copy of a GFNet checkpoint (official format) whose ``policy`` entry is ``policy``'s weights.

    Every other entry is kept as stored (encoder keys keep their spelling), except the results measured
    with the old policy (``anytime_classification``, ``budgeted_batch_classification``,
    ``dynamic_threshold``, and the ``anytime_classification_note`` / ``results_protocol`` describing them), which
    are dropped. ``extra`` entries are added. The file is written atomically.
    """
    from feature_nets.checkpoint import read_checkpoint_dict

    if isinstance(policy, StopPatchPolicy):
        raise ValueError("a paper-ppo-stop policy has a stop head, which the GFNet checkpoint format has no place "
                         "for; keep its policy file (paper_ppo.pt) and load it with agents.load_agent")

    blob = dict(read_checkpoint_dict(checkpoint, trusted_pickle=trusted_pickle))
    for stale in STALE_RESULTS:
        blob.pop(stale, None)
    blob["policy"] = {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}
    blob.update(extra)
    return atomic_save(blob, out_path)
