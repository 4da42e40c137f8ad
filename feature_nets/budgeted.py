"""Budgeted batch classification (adaptive inference); the procedure is described in docs/budgeted.md.

Given the softmax outputs of every step of a GFNet episode, a *budgeted* classifier lets each sample stop
at the first step whose confidence (the max softmax probability) reaches that step's threshold. The
thresholds are chosen on a held-out set so that a prescribed fraction of the samples exits at each step.
Sweeping the exit distribution (p = 1..39) traces the accuracy / expected multiply-adds curve of the paper.

Everything here reproduces the numbers of the original implementation bit for bit (the conformance file
``budgeted_batch.pt`` pins them), which fixes a few details that look arbitrary but matter:

* the exit distribution is computed in float32 as ``exp(log(q) * k)`` and then normalised, not as ``q**k``
  in double precision;
* the number of samples that should exit at step k is ``floor(N * prob_k)`` with the product taken in
  float32, N being the size of the *whole* set (not of the samples still remaining);
* when that number is 0, or larger than the number of samples still remaining, the step's threshold stays
  at its initial value ``1e8`` (nobody exits there); the last step's threshold is ``-1e8``;
* a sample exits at step k when ``max_prob >= threshold_k`` (ties exit), and when fitting, a sample counts
  as "exited" from then on as soon as it reaches the threshold at that step, exactly as in evaluation;
* the expected multiply-adds are accumulated in float32, step by step: ``sum_k (exits_k / N) * flops_k``.

Public functions take and return plain tensors; nothing here depends on the rest of the package.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import Tensor

__all__ = [
    "exit_distribution",
    "fit_thresholds",
    "evaluate_thresholds",
    "evaluate_confidences",
    "fit_threshold_rows",
    "budgeted_curve",
    "curve_from_thresholds",
    "NO_EXIT_THRESHOLD",
    "LAST_THRESHOLD",
]

#: threshold of a step at which no sample is meant to exit (the original's initial value)
NO_EXIT_THRESHOLD = 1e8
#: threshold of the last step: every remaining sample exits there
LAST_THRESHOLD = -1e8


def exit_distribution(p_index: int, T: int) -> Tensor:
    """Exit distribution over the steps 1..T for sweep index ``p_index``.

    With ``q = p_index / 20`` the probability of exiting at step k is proportional to ``q**k``
    (k = 1..T); q < 1 favours early exits, q > 1 late ones. Computed in float32 exactly as the original
    (``exp(log(q) * k)``, normalised by the sum), so the values match its thresholds bit for bit.

    Returns:
        float32 tensor of shape (T,), summing to 1.
    """
    if isinstance(p_index, bool) or not isinstance(p_index, int) or p_index <= 0:
        raise ValueError(f"p_index must be a positive int (q = p_index / 20 > 0), got {p_index!r}")
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    q = torch.tensor([p_index * 1.0 / 20], dtype=torch.float32)
    probs = torch.exp(torch.log(q) * torch.arange(1, T + 1, dtype=torch.float32))
    probs /= probs.sum()
    return probs


def _check_probs(probs: Tensor, name: str = "probs") -> Tensor:
    if not isinstance(probs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (T, N, C), got {type(probs).__name__}")
    if probs.dim() != 3:
        raise ValueError(f"{name} must have shape (T, N, C), got shape {tuple(probs.shape)}")
    T, N, C = probs.shape
    if T < 1 or N < 1 or C < 1:
        raise ValueError(f"{name} must have shape (T, N, C) with T, N, C >= 1, got shape {tuple(probs.shape)}")
    return probs.detach()


def _check_vector(x, length: int, name: str, dim_name: str, probs: Tensor, probs_name: str = "probs") -> Tensor:
    """``x`` as a tensor of shape (length,): the ``dim_name`` dimension of ``probs``, else a ValueError."""
    x = torch.as_tensor(x)
    if x.dim() != 1 or x.shape[0] != length:
        raise ValueError(
            f"{name} must have shape ({dim_name},) = ({length},) to match {probs_name} of shape "
            f"{tuple(probs.shape)}, got shape {tuple(x.shape)}"
        )
    return x


def _confidence(probs: Tensor) -> tuple[Tensor, Tensor]:
    """Max probability (float32) and arg-max prediction per (step, sample)."""
    max_preds, argmax_preds = probs.max(dim=2)
    return max_preds.to(torch.float32), argmax_preds


def fit_thresholds(probs: Tensor, exit_probs: Tensor) -> Tensor:
    """Search the per-step confidence thresholds on a held-out set (the original, step by step).

    At step k < T the samples that have not exited yet are sorted by max probability (descending) and the
    threshold is the max probability of the ``floor(N * exit_probs[k])``-th of them (1-based, N the size of
    the whole set). If that number is 0 or exceeds the remaining samples, the threshold is ``1e8`` (no exit
    at k). All samples whose max probability at step k reaches the threshold are then marked as exited.
    The last threshold is ``-1e8``.

    Args:
        probs: (T, N, C) softmax outputs after each step.
        exit_probs: (T,) target fraction of samples exiting at each step (see :func:`exit_distribution`).

    Returns:
        float32 tensor (T,) of thresholds.
    """
    probs = _check_probs(probs)
    T, N, _ = probs.shape
    exit_probs = _check_vector(exit_probs, T, "exit_probs", "T", probs).to(torch.float32)
    max_preds, _ = _confidence(probs)

    thresholds = torch.full((T,), NO_EXIT_THRESHOLD, dtype=torch.float32)
    exited = torch.zeros(N, dtype=torch.bool)
    n_samples = torch.tensor(float(N), dtype=torch.float32)
    for k in range(T - 1):
        # float32 product, then floor: the original's math.floor(n_sample * p[k])
        out_n = math.floor((n_samples * exit_probs[k]).item())
        remaining = max_preds[k][~exited]
        if 1 <= out_n <= remaining.numel():
            ranked = torch.sort(remaining, descending=True).values
            thresholds[k] = ranked[out_n - 1]
        exited |= max_preds[k] >= thresholds[k]
    thresholds[T - 1] = LAST_THRESHOLD
    return thresholds


def evaluate_thresholds(
    probs: Tensor, targets: Tensor, thresholds: Tensor, flops: Sequence[float] | Tensor
) -> tuple[float, float, Tensor]:
    """Evaluate a set of thresholds: every sample exits at the first step whose max prob reaches it.

    Args:
        probs: (T, N, C) softmax outputs after each step.
        targets: (N,) class labels.
        thresholds: (T,) per-step thresholds (see :func:`fit_thresholds`).
        flops: (T,) cost of running the episode up to and including each step (cumulative), any unit.

    Returns:
        ``(top1, expected_flops, exit_step)``: top-1 accuracy in percent (exits at the step's prediction),
        expected cost ``sum_k (exits_k / N) * flops[k]`` (accumulated in float32 like the original, returned
        as a Python float), and a long tensor (N,) with the 0-based step at which each sample exits
        (-1 if it never reaches a threshold — impossible with the last threshold ``-1e8``; such a sample
        counts as wrong and costs nothing, as in the original).
    """
    probs = _check_probs(probs)
    T, N, _ = probs.shape
    targets = _check_vector(targets, N, "targets", "N", probs)
    thresholds = _check_vector(thresholds, T, "thresholds", "T", probs)
    flops_list = [float(f) for f in (flops.tolist() if isinstance(flops, Tensor) else flops)]
    if len(flops_list) != T:
        raise ValueError(
            f"flops must have length T = {T} to match probs of shape {tuple(probs.shape)}, "
            f"got length {len(flops_list)}"
        )
    max_preds, argmax_preds = _confidence(probs)
    return evaluate_confidences(max_preds, argmax_preds, targets, thresholds, flops_list)


def evaluate_confidences(confidence: Tensor, prediction: Tensor, targets: Tensor, thresholds: Tensor,
                         flops: Sequence[float]) -> tuple[float, float, Tensor]:
    """:func:`evaluate_thresholds` on what it reads of the softmax outputs: the (T, N) max probability
    (``confidence``, float32) and arg-max class (``prediction``) of every step and sample — e.g. per-image
    records kept without the full outputs. Same arithmetic, same results bit for bit."""
    confidence, prediction = torch.as_tensor(confidence), torch.as_tensor(prediction)
    T, N = confidence.shape
    thresholds = torch.as_tensor(thresholds).to(torch.float32)
    targets = torch.as_tensor(targets)
    flops_list = [float(f) for f in (flops.tolist() if isinstance(flops, Tensor) else flops)]
    max_preds, argmax_preds = confidence.to(torch.float32), prediction.long()

    passes = max_preds >= thresholds[:, None]  # (T, N)
    any_pass = passes.any(dim=0)
    first = passes.to(torch.int8).argmax(dim=0)  # first True (argmax returns the first maximum)
    exit_step = torch.where(any_pass, first, torch.full_like(first, -1)).to(torch.long)

    idx = exit_step.clamp(min=0)
    pred_at_exit = argmax_preds.gather(0, idx[None, :])[0]
    correct = (pred_at_exit == targets.to(pred_at_exit.device).long()) & any_pass
    top1 = int(correct.sum().item()) * 100.0 / N

    counts = torch.bincount(exit_step[any_pass], minlength=T).to(torch.float32)
    expected = torch.zeros((), dtype=torch.float32)
    for k in range(T):  # float32, step by step, like the original
        expected = expected + (counts[k] * 1.0 / N) * flops_list[k]
    return top1, float(expected.item()), exit_step


def fit_threshold_rows(val_probs: Tensor, p_range: Iterable[int] = range(1, 40)) -> dict:
    """The fitting half of :func:`budgeted_curve`: for each p in ``p_range`` the exit distribution and the
    thresholds fitted on ``val_probs`` (T, N, C). Returns ``p``, ``thresholds`` ((P, T) lists of floats) and
    ``exit_probs`` ((P, T) lists)."""
    val_probs = _check_probs(val_probs, "val_probs")
    T = val_probs.shape[0]
    out: dict = {"p": [], "thresholds": [], "exit_probs": []}
    for p in p_range:
        exit_probs = exit_distribution(int(p), T)
        out["p"].append(int(p))
        out["thresholds"].append(fit_thresholds(val_probs, exit_probs).tolist())
        out["exit_probs"].append(exit_probs.tolist())
    return out


def budgeted_curve(
    val_probs: Tensor,
    val_targets: Tensor,
    test_probs: Tensor,
    test_targets: Tensor,
    flops: Sequence[float] | Tensor,
    p_range: Iterable[int] = range(1, 40),
) -> dict:
    """Accuracy vs expected multiply-adds: fit thresholds on ``val_*``, evaluate them on ``test_*``.

    Pass the same tensors as val and test to reproduce the original single-set usage.

    Returns:
        dict of lists, one entry per p in ``p_range``: ``p``, ``madds`` (expected flops on the test set),
        ``top1`` (percent), ``thresholds`` (list of T floats), ``exit_probs`` (list of T floats).
    """
    val_probs = _check_probs(val_probs, "val_probs")
    test_probs = _check_probs(test_probs, "test_probs")
    if val_probs.shape[0] != test_probs.shape[0]:
        raise ValueError(
            f"val_probs and test_probs must have the same number of steps T, got shapes "
            f"{tuple(val_probs.shape)} and {tuple(test_probs.shape)}"
        )
    if val_probs.shape[2] != test_probs.shape[2]:
        raise ValueError(
            f"val_probs and test_probs must have the same number of classes C, got shapes "
            f"{tuple(val_probs.shape)} and {tuple(test_probs.shape)}"
        )
    T = val_probs.shape[0]
    val_targets = _check_vector(val_targets, val_probs.shape[1], "val_targets", "N", val_probs, "val_probs")
    out: dict = {"p": [], "madds": [], "top1": [], "thresholds": [], "exit_probs": []}
    for p in p_range:
        exit_probs = exit_distribution(int(p), T)
        thresholds = fit_thresholds(val_probs, exit_probs)
        top1, madds, _ = evaluate_thresholds(test_probs, test_targets, thresholds, flops)
        out["p"].append(int(p))
        out["madds"].append(madds)
        out["top1"].append(top1)
        out["thresholds"].append(thresholds.tolist())
        out["exit_probs"].append(exit_probs.tolist())
    return out


def curve_from_thresholds(
    test_probs: Tensor,
    test_targets: Tensor,
    thresholds,
    flops: Sequence[float] | Tensor,
    p_range: Iterable[int] | None = None,
) -> dict:
    """Accuracy vs expected multiply-adds with *given* thresholds: one :func:`evaluate_thresholds` per row (the
    original's evaluation with the thresholds a checkpoint stores, ``dynamic_threshold``; nothing is fitted).

    Args:
        test_probs, test_targets: (T, N, C) softmax outputs and (N,) labels.
        thresholds: (P, T) threshold vectors (a list of lists or a tensor; one (T,) vector counts as P = 1).
        flops: (T,) cumulative cost per step.
        p_range: the sweep index of each row (default 1 … P, the original's p = 1 … 39 for its 39 rows).

    Returns:
        dict of lists, one entry per row, as :func:`budgeted_curve`: ``p``, ``madds``, ``top1``, ``thresholds``
        (``exit_probs`` is None: given thresholds come without them).

    Raises:
        ValueError: the thresholds are not (P, T) rows for this T, or ``p_range`` does not have P entries.
    """
    test_probs = _check_probs(test_probs, "test_probs")
    T = test_probs.shape[0]
    rows = torch.as_tensor(thresholds, dtype=torch.float32)
    if rows.dim() == 1:
        rows = rows[None]
    if rows.dim() != 2 or rows.shape[1] != T or rows.shape[0] < 1:
        raise ValueError(f"thresholds must be (P, T) rows with T = {T} (one per step of test_probs of shape "
                         f"{tuple(test_probs.shape)}), got shape {tuple(rows.shape)}")
    ps = list(range(1, rows.shape[0] + 1)) if p_range is None else [int(p) for p in p_range]
    if len(ps) != rows.shape[0]:
        raise ValueError(f"p_range has {len(ps)} entries for {rows.shape[0]} threshold rows")
    out: dict = {"p": [], "madds": [], "top1": [], "thresholds": [], "exit_probs": None}
    for p, row in zip(ps, rows):
        top1, madds, _ = evaluate_thresholds(test_probs, test_targets, row, flops)
        out["p"].append(p)
        out["madds"].append(madds)
        out["top1"].append(top1)
        out["thresholds"].append(row.tolist())
    return out
