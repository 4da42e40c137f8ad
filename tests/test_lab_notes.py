"""Docstrings and comments say what the code does and why, not what it measured once.

Measured throughput figures (images/s, env-steps/s, "2 min 02 s", "1.8×" speed-ups, "4.3 ms per image", "slowed
by 25 %") go stale with every change of code or machine; they belong, once and with their context, in
benchmarks/RESULTS.md, gfnet_env/weights/MODEL_CARD.md or docs/. This test greps the library's docstrings (every
string statement) and comments for them and lists each hit as file:line.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("feature_nets", "gfnet_env", "agents", "gfnet_cli")

_NUM = r"\d[\d,]*(?:\.\d+)?"
#: Measured figures, each a pattern a docstring or comment must not match. Shapes (``3×S×S``, ``7×7``, ``1x1``),
#: factors of a formula (``49×``, ``4× fewer bytes``) and defaults do not match.
FIGURE_PATTERNS = {
    "throughput": rf"{_NUM}\s*(?:[A-Za-z]+[\s-])?(?:images?|imgs?|episodes?|env-steps?|steps?|canvases|samples?"
                  rf"|frames?|batches|it)\s*/\s*s\b",
    "wall time": rf"\b\d+\s*min\s+\d+(?:\.\d+)?\s*s\b|\b\d+(?:\.\d+)?\s*h\s+\d+\s*min\b"
                 rf"|~?{_NUM}\s*(?:h|min|minutes|hours?)\s+on\s+(?:a\s+)?\d+[\s-]cores?",
    "speed-up": rf"\b\d+\.\d+\s*[x×](?![\w×])|\b{_NUM}\s*[-–]\s*{_NUM}\s*[x×](?![\w×])"
                rf"|\b{_NUM}\s*[x×]\s+(?:faster|slower|quicker|speed)",
    "time per item": rf"\b{_NUM}\s*(?:ms|µs|us)\b[^.;]{{0,40}}?\bper\b",
    "slow-down %": rf"\b(?:slow(?:ed|er|s)?|fast(?:er)?|speeds?\s+up|sped\s+up)\b[^.;]{{0,60}}?{_NUM}\s*%",
}
FIGURES = re.compile("|".join(f"(?:{p})" for p in FIGURE_PATTERNS.values()))


def comment_and_docstring_lines(source: str) -> list[tuple[int, str]]:
    """(line number, text) of every comment and every line of every string statement (docstrings of modules,
    classes, functions and attributes)."""
    lines = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            # the string's own lines, counted from where the literal starts (its text may hold escapes)
            first = node.value.lineno
            for offset, text in enumerate(source.splitlines()[first - 1:node.value.end_lineno]):
                lines.append((first + offset, text))
    return sorted(lines)


def measured_figures(root: Path = ROOT, packages=PACKAGES) -> list[str]:
    """``file:line: figure  |  text`` for each measured figure in the packages' docstrings and comments."""
    hits = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            for line, text in comment_and_docstring_lines(path.read_text(encoding="utf-8")):
                for m in FIGURES.finditer(text):
                    hits.append(f"{path.relative_to(root)}:{line}: {m.group(0)!r}  |  {text.strip()}")
    return hits


@pytest.mark.parametrize("text", [
    "in-memory episodes go from 184–192 to 341–349 images/s",
    "190 JPEG episodes/s with prefetch",
    "focus steps 587 → 1,088 env-steps/s",
    "``make demo`` 2 min 02 s → 1 min 25 s",
    "# (host_memory.py: 1.4-1.8x faster episodes on the CPU)",
    "advanced indexing over (B, P, P) was 10-30x slower",
    "a 3× speed-up",
    "2,561 minor page faults and 4.3 ms of kernel time per image",
    "that slowed the networks in the same process by up to 25 %",
    "# everything (~1 h on 2 cores)",
    "about 1 h 10 min of training",
])
def test_pattern_catches_measured_figures(text):
    assert FIGURES.search(text), text


@pytest.mark.parametrize("text", [
    "dataset: torch Dataset of (3×S×S float tensor, int label).",
    "Conv2d 1×1 (C → 32, no bias); a 3x3 stride-2 conv; 28x28 patches on a 112x112 canvas",
    "G²·(F + C·h·w)·4 bytes (about 0.4 MB for the embedded task's 7×7 grid).",
    "uint8 items stacked, copied (4× fewer bytes) and normalised there",
    "Cost: G² focus steps' worth of multiply-adds per step (49× the env's focus cost for G = 7)",
    "FLOPs = 2 × multiply-adds; 50,000 × 3 × 224² bytes = 7.5 GB",
    "duration_ms: milliseconds per frame (default 600)",
    "95 % interval per step from the two-level bootstrap",
    "seconds: wall-clock seconds of each agent's evaluation pass",
])
def test_pattern_leaves_shapes_and_defaults_alone(text):
    assert not FIGURES.search(text), FIGURES.search(text).group(0)


def test_no_measured_figures_in_docstrings_or_comments():
    hits = measured_figures()
    assert not hits, ("measured figures in docstrings/comments (move them to benchmarks/RESULTS.md, the model card "
                      "or docs/, and say what and why here):\n" + "\n".join(hits))
