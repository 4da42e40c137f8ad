"""`gfnet show`: images by --indices or by the failure gallery (--wrong/--right/--results), pictures that carry the
true and predicted class names and a colour scale (read from the matplotlib figure's texts), class names from the
task (Fashion-MNIST names, image-folder names, WordNet names), and the TensorBoard pictures' names."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from agents.benchmark.report import failure_gallery, split_records
from agents.benchmark.run import run_benchmark
from agents.episode_images import P_TRUE_LABEL, Looks, looks_figure
from gfnet_cli.commands.show import parse_indices, select
from gfnet_cli.show import episode_looks_for
from gfnet_env.data.cluttered_fashion_mnist import FASHION_MNIST_CLASSES
from gfnet_env.factory import load_task
from gfnet_env.tasks import class_names_of, get_task
from helpers import run_cli, write_image_folder

ENV = "GFNet-ClutteredFashionMNIST-v0"


def texts(fig) -> list[str]:
    """Every text drawn in a figure (titles, labels, tick labels, the colour bar's label)."""
    fig.canvas.draw()
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text()]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("show") / "bench"
    run_benchmark(ENV, ["center", "paper-ppo"], out, episodes=24, seeds=1, fit_episodes=8, batch_size=24,
                  device="cpu", verbose=False)
    return out


def test_show_png_carries_class_names_and_a_colour_scale():
    _, ds = load_task(ENV)
    indices = [3, 17]
    looks = episode_looks_for(["center", "paper-ppo"], ENV, indices, device="cpu")
    fig = looks_figure(looks, ["center", "paper-ppo"])
    drawn = "\n".join(texts(fig))
    for i in indices:
        true = FASHION_MNIST_CLASSES[int(ds[i][1])]
        assert f"#{i} true: {true}" in drawn
    for row in looks:
        for lk in row:
            assert f"predicted: {lk.predicted[-1]}" in drawn and lk.predicted[-1] in FASHION_MNIST_CLASSES
    assert P_TRUE_LABEL in drawn and "center" in drawn and "paper-ppo" in drawn
    colorbar = [ax for ax in fig.axes if ax.get_ylabel() == P_TRUE_LABEL]
    assert len(colorbar) == 1 and colorbar[0].get_ylim() == (0.0, 1.0)  # the scale runs over p = 0 … 1


def test_looks_figure_of_a_step_shows_that_steps_prediction():
    image = np.zeros((28, 28, 3), np.uint8)
    lk = Looks(image=image, boxes=np.array([[0, 0, 8, 8], [10, 10, 8, 8]]), p_true=np.array([0.1, 0.4, 0.9]),
               predicted=["Bag", "Coat", "Trouser"], true_name="Trouser", index=5)
    first = "\n".join(texts(looks_figure([[lk]], ["agent"], step=0)))
    last = "\n".join(texts(looks_figure([[lk]], ["agent"])))
    assert "✗ predicted: Bag (p(y)=0.10)" in first and "#5 true: Trouser" in first
    assert "✓ predicted: Trouser (p(y)=0.90)" in last


def test_show_indices_png_and_gif(tmp_path, capsys):
    code, out = run_cli(["show", "--env", ENV, "--agent", "center", "--indices", "3, 17,42", "--device", "cpu",
                         "--out", str(tmp_path / "three.png")], capsys)
    assert code == 0, out
    png = Image.open(tmp_path / "three.png")
    assert png.format == "PNG" and png.width > 3 * 150
    code, out = run_cli(["show", "--env", ENV, "--agent", "center", "--indices", "3", "--device", "cpu",
                         "--out", str(tmp_path / "one.gif")], capsys)
    assert code == 0, out
    assert Image.open(tmp_path / "one.gif").n_frames == get_task(ENV).load()[0].T  # glance + one frame per look
    assert not list(tmp_path.glob(".*"))  # written through a temporary file, renamed


def test_show_wrong_right_draws_the_gallerys_images(bench, tmp_path, capsys, monkeypatch):
    with np.load(bench / "per_image.npz") as data:
        arrays = {k: data[k] for k in data.files}
    gallery = failure_gallery(split_records(arrays), "center", "paper-ppo", limit=3)
    if not gallery.wrong_only:
        gallery = failure_gallery(split_records(arrays), "paper-ppo", "center", limit=3)
    assert gallery.wrong_only  # the two disagree somewhere on 24 images
    expected = [int(arrays["image_index"][c]) for c in gallery.wrong_only]
    drawn = {}
    import gfnet_cli.show as show

    real = show.episode_looks_for

    def spy(names, env, indices, *a, **k):
        drawn.update(names=names, env=env, indices=indices)
        return real(names, env, indices, *a, **k)

    monkeypatch.setattr(show, "episode_looks_for", spy)
    code, out = run_cli(["show", "--results", str(bench), "--wrong", gallery.wrong, "--right", gallery.right,
                         "--n", "3", "--device", "cpu", "--out", str(tmp_path / "gallery.png")], capsys)
    assert code == 0, out
    assert drawn == {"names": [gallery.wrong, gallery.right], "env": ENV, "indices": expected}
    assert Image.open(tmp_path / "gallery.png").format == "PNG"


def _args(**kw) -> argparse.Namespace:
    base = dict(env=ENV, agent="center", n=4, start=0, indices=None, wrong=None, right=None, results=None)
    return argparse.Namespace(**{**base, **kw})


def test_show_selection_errors(bench, tmp_path):
    assert parse_indices("3,17, 42") == [3, 17, 42]
    with pytest.raises(ValueError, match="dataset indices >= 0"):
        parse_indices("3,-1")
    with pytest.raises(ValueError, match="names no image"):
        parse_indices(" , ")
    with pytest.raises(ValueError, match="go together"):
        select(_args(wrong="center", right="paper-ppo"))
    with pytest.raises(ValueError, match="choose the images two ways"):
        select(_args(wrong="center", right="paper-ppo", results=str(bench), indices="1"))
    with pytest.raises(ValueError, match="not among the benchmarked agents"):
        select(_args(wrong="random", right="paper-ppo", results=str(bench)))
    with pytest.raises(ValueError, match="is not the env of --results"):
        select(_args(env="GFNet-ImageNet-v0", wrong="center", right="paper-ppo", results=str(bench)))
    with pytest.raises(ValueError, match="--agent is required"):
        select(_args(agent=None))
    assert select(_args(indices="5,2"))[2] == [5, 2] and select(_args(start=3, n=2))[2] == [3, 4]


def test_class_names_come_from_the_task(tmp_path):
    task = get_task(ENV)
    assert task.class_names() == list(FASHION_MNIST_CLASSES)
    _, ds = load_task(ENV)
    assert task.class_names(ds) == list(FASHION_MNIST_CLASSES)
    from gfnet_env.data.image_folder import ImageFolderDataset

    folder = ImageFolderDataset(write_image_folder(tmp_path / "mine", classes=("cat", "dog"), n_per_class=1) / "val")
    assert class_names_of(folder) == ["cat", "dog"] and class_names_of(folder, 3) == ["cat", "dog", "class 2"]
    wn = write_image_folder(tmp_path / "imagenet", classes=("n01440764", "n01443537"), n_per_class=1)
    (wn / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    assert get_task("GFNet-ImageNet-v0").class_names(ImageFolderDataset(wn / "val")) == ["tench", "goldfish"]
    assert get_task("GFNet-ImageNet-v0").class_names()[:2] == ["class 0", "class 1"]  # no images: no names


def test_tensorboard_pictures_name_the_classes(monkeypatch):
    import gfnet_env.render as render
    from agents.episode_images import episode_image, evaluation_core

    seen = []
    real = render.labelled_rows
    monkeypatch.setattr(render, "labelled_rows", lambda rows, names: seen.extend(names) or real(rows, names))
    core = evaluation_core(ENV, {}, n_images=2, device="cpu")
    try:
        image = episode_image(core, lambda obs: np.zeros((2, 2), np.float32) + 0.5, indices=[0, 1])
    finally:
        core.close()
    assert len(seen) == 2 and all(" true " in s and ", predicted " in s for s in seen)
    assert all(any(f"true {c}," in s for c in FASHION_MNIST_CLASSES) for s in seen)
    assert image.ndim == 3 and image.shape[2] == 3
