"""The run log (agents/run_log.py): what it writes (progress.csv, TensorBoard scalars and pictures, the bar), how a
resumed run's CSV is truncated, and that one close releases every piece, on success, error or Ctrl-C."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from helpers import tiny_dataset, tiny_model

from agents.episode_images import TAG, evaluation_core
from agents.run_log import RunLog

ENV_ID = "GFNet-ImageNet-v0"
FIELDS = ["batch", "env_steps", "loss"]


def _core():
    """A 2-image evaluation core on the tiny model (continuous actions: the centre agent's)."""
    return evaluation_core(ENV_ID, {"checkpoint": tiny_model(), "dataset": tiny_dataset()}, 2,
                           settings={"obs_mode": "gru", "action_mode": "continuous"}, device="cpu", split=None)


def _centre(obs) -> np.ndarray:
    return np.full((len(obs), 2), 0.5, dtype=np.float32)


def _open_all(log: RunLog, tmp_path, core) -> None:
    log.open_tensorboard()
    log.open_csv(FIELDS)
    log.open_progress(total=30, desc="test")
    log.open_pictures(core, 2)


def _is_closed(core) -> bool:
    try:
        core.reset_slots(np.arange(1), [0])
    except RuntimeError as e:
        return "closed" in str(e)
    return False


def test_writes_the_csv_scalars_picture_and_bar(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunLog(tmp_path) as log:
        _open_all(log, tmp_path, _core())
        for batch in (1, 2, 3):
            log.write_row({"batch": batch, "env_steps": 10 * batch, "loss": 0.5 / batch})
            log.add_scalars({"train/loss": 0.5 / batch}, 10 * batch)
            log.advance(10 * batch, loss=f"{0.5 / batch:.3f}")
        image = log.picture(_centre, 30)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    rows = list(csv.reader((tmp_path / "progress.csv").open()))
    assert rows[0] == FIELDS and [r[0] for r in rows[1:]] == ["1", "2", "3"]
    ea = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars("train/loss")] == [10, 20, 30]
    assert [e.step for e in ea.Images(TAG)] == [30]
    assert "30/30" in capsys.readouterr().err


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_one_close_releases_everything_on_error(tmp_path, error):
    core = _core()
    with pytest.raises(error):
        with RunLog(tmp_path) as log:
            _open_all(log, tmp_path, core)
            csv_file, writer, bar = log._csv_file, log.writer, log.bar
            raise error("interrupted")
    assert csv_file.closed and writer.all_writers is None and bar.disable and _is_closed(core)
    assert log.writer is None and log.bar is None
    log.close()  # idempotent


def test_close_goes_on_when_one_piece_fails(tmp_path):
    core = _core()
    log = RunLog(tmp_path)
    _open_all(log, tmp_path, core)
    csv_file = log._csv_file

    def broken():
        raise OSError("no")

    log.writer.close = broken
    with pytest.raises(OSError, match="no"):
        log.close()
    assert csv_file.closed and log.bar is None and _is_closed(core)


def test_resumed_csv_keeps_whole_rows_of_the_kept_updates(tmp_path):
    path = tmp_path / "progress.csv"
    path.write_text("batch,env_steps,loss\r\n1,10,0.5\r\n2,20,0.25\r\n3,30,0.1")  # the last row may be torn
    with RunLog(tmp_path) as log:
        log.open_csv(FIELDS, keep_rows=2)
        log.write_row({"batch": 3, "env_steps": 30, "loss": 0.2})
    assert [r[0] for r in csv.reader(path.open())] == ["batch", "1", "2", "3"]
    with pytest.warns(UserWarning, match="1 of the 4 resumed batches"):
        with RunLog(tmp_path) as log:
            log.open_csv(FIELDS, keep_rows=4)
    assert [r[0] for r in csv.reader(path.open())] == ["batch", "1", "2", "3"]
    with RunLog(tmp_path) as log:
        log.open_csv(FIELDS)  # a new run: a new file
    assert path.read_bytes() == b"batch,env_steps,loss\r\n"


def test_without_out_dir_only_the_bar_and_pictures(tmp_path):
    core = _core()
    seen = []
    with RunLog() as log:
        log.open_pictures(core, 1, write=lambda image, step: seen.append((image.shape, step)))
        log.picture(_centre, 7)
        log.advance(5)  # no bar open: nothing to move
        with pytest.raises(ValueError, match="out_dir"):
            log.open_csv(FIELDS)
    assert len(seen) == 1 and seen[0][1] == 7 and _is_closed(core)
