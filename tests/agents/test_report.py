"""The benchmark's report.html (opened in Chromium through Playwright), its looks kept in per_image.npz, the failure
gallery, `gfnet report`, and the benchmark's TensorBoard logs (read back with TensorBoard's EventAccumulator)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agents.benchmark.report import failure_gallery, split_records
from agents.benchmark.report.images import load_images
from agents.benchmark.report.looks import LOOK_FIELDS, default_pair, gallery_indices
from agents.benchmark.report.page import markdown_to_html
from agents.benchmark.run import run_benchmark
from gfnet_cli.show import episode_looks_for
from helpers import run_cli

ENV = "GFNet-ClutteredFashionMNIST-v0"
AGENTS = ["random", "center", "paper-ppo"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A tiny benchmark of the embedded task (24 images, one run each), with TensorBoard logs; built once."""
    out = tmp_path_factory.mktemp("report") / "bench"
    results = run_benchmark(ENV, AGENTS, out, episodes=24, seeds=1, fit_episodes=12, batch_size=24, device="cpu",
                            verbose=False, tensorboard=out / "tensorboard")
    with np.load(out / "per_image.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return out, results, arrays


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is missing: the report's browser test needs it (`make test` installs it on Debian; or "
                    "run `apt-get install -y chromium`)")
    return path


def open_page(path: Path, actions=None) -> dict:
    """Open ``path`` in headless Chromium; returns the console errors, every image's natural width, the tables'
    first-column texts, and what ``actions(page)`` returns."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the python package playwright is missing: `make test` installs it (the test extra: "
                    "pip install -e '.[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(path.resolve().as_uri(), wait_until="load")
            widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
            done = actions(page) if actions else None
            return {"errors": errors, "widths": widths, "done": done}
        finally:
            browser.close()


def column(page, table: int, col: int) -> list[str]:
    return page.evaluate(f"Array.from(document.querySelectorAll('table.results')[{table}].tBodies[0].rows)"
                         f".map(r => r.cells[{col}].textContent.trim())")


def header_index(page, table: int, text: str) -> int:
    heads = page.evaluate(f"Array.from(document.querySelectorAll('table.results')[{table}].tHead.rows[0].cells)"
                          ".map(c => c.textContent)")
    return next(i for i, h in enumerate(heads) if h.startswith(text))


@pytest.mark.browser
def test_report_opens_in_chromium_with_every_image_sortable_tables_and_the_gallery(bench):
    out, results, arrays = bench
    records = split_records(arrays)
    wrong, right = default_pair(results)
    gallery = failure_gallery(records, wrong, right, limit=8)
    assert sum(gallery.counts) > 0  # the tiny run has images the two agents disagree on: the gallery is not empty

    def actions(page):
        agents_before = column(page, 0, 0)
        page.click("table.results >> nth=0 >> th >> nth=0")  # sort by agent name
        agents_sorted = column(page, 0, 0)
        page.click("table.results >> nth=0 >> th >> nth=0")  # again: reversed
        agents_reversed = column(page, 0, 0)
        ret = header_index(page, 0, "mean return")
        page.click(f"table.results >> nth=0 >> th >> nth={ret}")
        returns = [float(c.split()[0]) for c in column(page, 0, ret)]
        pair = page.evaluate("[document.getElementById('failure-gallery').dataset.wrong, "
                             "document.getElementById('failure-gallery').dataset.right]")
        gallery_alts = page.evaluate("Array.from(document.querySelectorAll('#failure-gallery img'))"
                                     ".map(i => [i.alt, i.naturalWidth])")
        return agents_before, agents_sorted, agents_reversed, returns, pair, gallery_alts

    seen = open_page(out / "report.html", actions)
    assert seen["errors"] == []
    assert len(seen["widths"]) >= 5 + 4 * len(AGENTS) and all(w > 0 for w in seen["widths"])  # plots + looks
    before, by_name, reversed_, returns, pair, alts = seen["done"]
    assert before == AGENTS  # the table's rows are the agents, in the order asked for
    assert by_name == sorted(AGENTS) != before and reversed_ == sorted(AGENTS, reverse=True)
    assert returns == sorted(returns) and len(returns) == len(AGENTS)
    assert pair == [wrong, right]
    shown = min(gallery.counts[0], 8) + min(gallery.counts[1], 8)
    assert len(alts) == 2 * shown and all(w > 0 for _, w in alts)  # both agents' looks on every gallery image
    assert {a.split(" looks")[0] for a, _ in alts} == {wrong, right}


def test_report_is_self_contained(bench):
    out, results, _ = bench
    page = (out / "report.html").read_text()
    assert "<script src" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    srcs = [s.split('"')[1] for s in page.split("src=")[1:]]
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for name in ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"):
        if f"true: <b>{name}</b>" in page:
            break
    else:
        pytest.fail("no Fashion-MNIST class name in the report's captions")


def test_per_image_records_hold_the_looks_and_they_are_the_agents_own(bench):
    out, results, arrays = bench
    T = results["T"]
    records = split_records(arrays)
    for name in AGENTS:
        rec = records[name]
        for field in LOOK_FIELDS:
            assert rec[field].shape == (1, T - 1, 24) and rec[field].dtype == np.int16
        looked = rec["look_size"][0] > 0                                   # (T' - 1, E)
        steps = np.arange(T - 1)[:, None]
        np.testing.assert_array_equal(looked, steps < rec["exit_step"][0][None])
    # the recorded looks are the ones the agent takes when run again on those images (gfnet show)
    index = [int(i) for i in arrays["image_index"][:3]]
    (again,) = episode_looks_for(["paper-ppo"], ENV, index, device="cpu")
    rec = records["paper-ppo"]
    for e, looks in enumerate(again):
        np.testing.assert_array_equal(looks.boxes[:, 0], rec["look_row"][0, : looks.looks, e])
        np.testing.assert_array_equal(looks.boxes[:, 1], rec["look_col"][0, : looks.looks, e])


def test_failure_gallery_selects_the_discordant_images():
    correct = np.zeros((1, 3, 5), dtype=bool)
    a, b = correct.copy(), correct.copy()
    a[0, 2] = [1, 0, 0, 1, 0]
    b[0, 2] = [0, 1, 0, 1, 1]
    b[0, 1, 0] = True   # right at step 1 only: with its exit at step 1 that is its answer
    records = {"a": {"correct": a, "exit_step": np.array([[2, 2, 2, 2, 2]])},
               "b": {"correct": b, "exit_step": np.array([[1, 2, 2, 2, 2]])}}
    g = failure_gallery(records, "a", "b", limit=8)
    assert g.wrong_only == [1, 4] and g.right_only == [] and g.counts == (2, 0)
    assert failure_gallery(records, "a", "b", limit=1).wrong_only == [1]
    with pytest.raises(ValueError, match="not among the benchmarked agents"):
        failure_gallery(records, "a", "c")
    with pytest.raises(ValueError, match="same agent"):
        failure_gallery(records, "a", "a")


def test_gfnet_report_redraws_the_gallery_for_another_pair(bench, tmp_path, capsys):
    out, _, _ = bench
    folder = tmp_path / "copy"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns("tensorboard"))
    code, text = run_cli(["report", str(folder), "--wrong", "center", "--right", "random", "--gallery-images", "2"],
                         capsys)
    assert code == 0, text
    page = (folder / "report.html").read_text()
    assert 'data-wrong="center" data-right="random"' in page
    indices, _ = gallery_indices(folder, "center", "random", 2)
    for i in indices:
        assert f"center: #{i} " in page and f"random: #{i} " in page
    assert not (folder / ".lock").exists()
    code, text = run_cli(["report", str(folder), "--wrong", "centre", "--right", "random"], capsys)
    assert code == 2 and text.strip().splitlines() == [
        "gfnet report: --wrong 'centre' is not among the benchmarked agents ['center', 'paper-ppo', 'random']"]
    code, text = run_cli(["report", str(folder), "--wrong", "center"], capsys)
    assert code == 2 and "give both --wrong AGENT and --right AGENT" in text
    code, text = run_cli(["report", str(tmp_path / "none")], capsys)
    assert code == 2 and text.startswith("gfnet report: ") and "not a folder" in text


def test_report_without_the_images_says_why():
    images, why = load_images({"env_id": "GFNet-ImageNet-v0", "env_kwargs": {}})
    assert images is None and "could not be loaded" in why


def test_markdown_tables_become_sortable_html_tables():
    page = markdown_to_html("### Title\n\n| agent | top-1 |\n|---|---|\n| a | 1.5 |\n| **b** | 2 |\n\nA note.")
    assert page.count('<table class="results">') == 1 and "<thead><tr><th>agent</th><th>top-1</th>" in page
    assert "<td>b</td>" in page and "---" not in page and "<p class=\"note\">A note.</p>" in page


def test_tensorboard_logs_of_the_benchmark(bench):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, results, _ = bench
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == sorted(AGENTS)
    for name in AGENTS:
        events = EventAccumulator(str(out / "tensorboard" / name), size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        entry = results["agents"][name]
        top1 = events.Scalars("anytime/top1")
        assert [e.step for e in top1] == list(range(results["T"]))
        np.testing.assert_allclose([e.value for e in top1], entry["anytime_top1"], rtol=1e-6)
        curve = events.Scalars("budgeted/top1")
        assert len(curve) == len(entry["budgeted"]["top1"])
        assert sorted(e.value for e in curve) == pytest.approx(sorted(entry["budgeted"]["top1"]))
        (image,) = events.Images("episodes/looks")
        assert image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and image.width > 300
    assert json.loads((out / "results.json").read_text())["agents"].keys() == set(AGENTS)
    assert not list(out.glob(".tensorboard.*"))  # no staging folder left


def test_compare_out_writes_a_report_with_the_benchmarked_images(bench, tmp_path, capsys):
    out, _, arrays = bench
    code, text = run_cli(["compare", str(out), "--reference", "random", "--out", str(tmp_path / "merged")], capsys)
    assert code == 0, text
    page = (tmp_path / "merged" / "report.html").read_text()
    assert 'data-right="random"' in page and "No pictures" not in page  # images found again from results.json
    first = int(arrays["image_index"][0])
    assert page.count(f"#{first} · ") == len(AGENTS)  # every agent's looks on the first evaluation image


def test_an_unreadable_image_is_a_grey_square_not_a_lost_report():
    from agents.benchmark.report.images import MISSING_SIDE, report_images
    from gfnet_env.data.image_folder import CorruptImageError

    class Broken:
        classes = ["a", "b"]

        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise CorruptImageError(f"cannot decode image {i}")

    images = report_images(ENV, Broken())
    with pytest.warns(UserWarning, match="image 1 cannot be drawn"):
        square = images.image_at(1)
    assert square.shape == (MISSING_SIDE, MISSING_SIDE, 3) and (square == 128).all()
    assert images.class_names == ["a", "b"]
