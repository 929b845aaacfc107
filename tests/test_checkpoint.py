"""Checkpoints: what goes in comes back out, bad files say so and change nothing, and a failed
save loses nothing. Also the other files of a run: plots written atomically, temporary files of
killed writers cleaned up, and the lock that keeps two runs out of one folder (npnet/atomic.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import npnet
from npnet.atomic import (FolderLock, FolderLockedError, FolderNotWritableError,
                          atomic_write, check_folder_writable, remove_stale_temp_files)
from npnet.checkpoint import (CheckpointError, load_checkpoint, read_checkpoint_metadata,
                              save_checkpoint)
from npnet.models import lenet
from npnet.train import History, fit

IMAGES = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
LABELS = np.arange(8) % 10


def trained_lenet(seed=0, momentum=0.9):
    """A LeNet-BN after two SGD steps, so weights, moving statistics and momentum buffers all
    differ from a freshly built network."""
    npnet.manual_seed(seed)
    model = lenet(batch_norm=True)
    optimizer = npnet.SGD(model.parameters(), lr=0.1, momentum=momentum)
    history = fit(model, (IMAGES, LABELS), (IMAGES, LABELS), epochs=2, batch_size=8,
                  optimizer=optimizer, progress=False, verbose=False)
    return model, optimizer, history


def test_round_trip_restores_parameters_moving_statistics_and_predictions(tmp_path):
    model, optimizer, history = trained_lenet()
    path = save_checkpoint(tmp_path / "checkpoint.npz", model, optimizer, epoch=2,
                           history=history, extra={"dataset": "sample"})

    fresh, fresh_optimizer, _ = trained_lenet(seed=1, momentum=0.5)
    saved = load_checkpoint(path, fresh, fresh_optimizer)

    assert saved["epoch"] == 2 and saved["extra"] == {"dataset": "sample"}
    assert saved["history"] == history
    expected = model.state_dict()
    restored = fresh.state_dict()
    assert list(restored) == list(expected)
    assert any("moving_var" in name for name in restored)  # the buffers are included
    for name in expected:
        np.testing.assert_array_equal(restored[name], expected[name], err_msg=name)
        assert restored[name].dtype == np.float32
    assert fresh_optimizer.momentum == 0.9
    for mine, theirs in zip(fresh_optimizer.velocity, optimizer.velocity):
        np.testing.assert_array_equal(mine, theirs)
    model.eval(), fresh.eval()
    np.testing.assert_array_equal(fresh(IMAGES), model(IMAGES))


def test_the_file_is_a_plain_npz_without_pickles(tmp_path):
    model, optimizer, history = trained_lenet()
    path = save_checkpoint(tmp_path / "c.npz", model, optimizer, epoch=2, history=history)
    with np.load(path, allow_pickle=False) as archive:  # would raise on any pickled entry
        names = archive.files
        assert archive["model/0.weight"].shape == (6, 1, 5, 5)
        assert archive["metadata"].dtype.kind == "U"  # JSON text
    assert "model/1.moving_mean" in names and "optimizer/velocity/0" in names


def test_loading_into_another_network_names_the_entry_and_the_file(tmp_path):
    model, _, _ = trained_lenet()
    path = save_checkpoint(tmp_path / "bn.npz", model)

    plain = lenet(batch_norm=False)  # no BatchNorm entries, other Linear shapes
    with pytest.raises(CheckpointError, match="bn.npz") as caught:
        load_checkpoint(path, plain)
    assert "1.gamma" in str(caught.value)  # a BatchNorm entry the plain network lacks

    wider = lenet(batch_norm=True, num_classes=12)
    before = wider.state_dict()
    with pytest.raises(CheckpointError, match=r"bn\.npz.*'15\.weight'.*\(12, 84\)"):
        load_checkpoint(path, wider)
    for name, value in wider.state_dict().items():  # nothing was half loaded
        np.testing.assert_array_equal(value, before[name])


def test_optimizer_state_must_be_present_and_fit(tmp_path):
    model, _, _ = trained_lenet()
    path = save_checkpoint(tmp_path / "no_optimizer.npz", model)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, model, npnet.SGD(model.parameters(), lr=0.1))

    model, optimizer, _ = trained_lenet()
    path = save_checkpoint(tmp_path / "with_optimizer.npz", model, optimizer)
    other = lenet(batch_norm=True)
    too_few = npnet.SGD(other.parameters()[:3], lr=0.1, momentum=0.9)
    with pytest.raises(CheckpointError, match="velocity"):
        load_checkpoint(path, other, too_few)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_checkpoint(tmp_path / "nowhere.npz", lenet())


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other npz"])
def test_a_damaged_file_is_named(tmp_path, damage):
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, lenet())
    if damage == "truncate":  # as if the copy stopped halfway
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "garbage":
        path.write_bytes(b"this is not a checkpoint" * 100)
    else:  # a valid .npz, but not one of ours
        with open(path, "wb") as file:
            np.savez(file, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="checkpoint.npz: not a readable npnet checkpoint"):
        load_checkpoint(path, lenet())


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer, history = trained_lenet()
    path = save_checkpoint(tmp_path / "checkpoint.npz", model, optimizer, epoch=2,
                           history=history)
    before = path.read_bytes()

    def savez_that_fails_halfway(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", savez_that_fails_halfway)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, lenet(), epoch=3)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]  # no temp file
    monkeypatch.undo()
    assert load_checkpoint(path, lenet())["epoch"] == 2


def test_saving_into_a_missing_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_checkpoint(tmp_path / "no" / "such" / "folder.npz", lenet())


def test_metadata_may_be_left_out(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", lenet())
    assert load_checkpoint(path, lenet()) == {"epoch": None, "history": None, "extra": None}



# ------------------------------------------------ a failed load changes nothing (issue #10.7)
def rewrite(path, change_metadata=None, drop=(), replace=None):
    """Rewrite the checkpoint at ``path`` as a damaged copy would be: without the arrays in
    ``drop``, with the arrays in ``replace`` replaced, with ``change_metadata(metadata)``
    applied to its metadata."""
    with np.load(path, allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files if name not in drop}
    entries.update(replace or {})
    metadata = json.loads(str(entries["metadata"]))
    if change_metadata is not None:
        change_metadata(metadata)
    entries["metadata"] = np.array(json.dumps(metadata))
    with open(path, "wb") as file:
        np.savez(file, **entries)


def snapshot(model, optimizer):
    """Copies of everything a load could change."""
    return model.state_dict(), optimizer.state_dict()


def assert_unchanged(model, optimizer, before):
    model_before, optimizer_before = before
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, model_before[name], err_msg=name)
    after = optimizer.state_dict()
    assert [after[key] for key in ("lr", "momentum", "weight_decay")] == \
        [optimizer_before[key] for key in ("lr", "momentum", "weight_decay")]
    for mine, theirs in zip(after["velocity"], optimizer_before["velocity"]):
        np.testing.assert_array_equal(mine, theirs)


def drop_setting(name):
    return lambda metadata: metadata["optimizer"]["settings"].pop(name)


def set_history(name, value):
    return lambda metadata: metadata["history"].__setitem__(name, value)


# (how the file is damaged, what the error must name)
DAMAGES = {
    "a momentum buffer lost": (dict(drop=["optimizer/velocity/3"]), "'optimizer/velocity/3'"),
    "no momentum setting": (dict(change_metadata=drop_setting("momentum")), "'momentum'"),
    "no lr setting": (dict(change_metadata=drop_setting("lr")), "'lr'"),
    "lr not a number": (dict(change_metadata=lambda m: m["optimizer"]["settings"].update(
        lr="fast")), "'lr'"),
    "no optimizer metadata": (dict(change_metadata=lambda m: m.pop("optimizer")),
                              "'optimizer'"),
    "optimizer metadata without settings": (
        dict(change_metadata=lambda m: m["optimizer"].pop("settings")), "'optimizer'"),
    "history lists of different lengths": (
        dict(change_metadata=set_history("train_acc", [0.5])), "'history'"),
    "history with text for a number": (
        dict(change_metadata=set_history("test_acc", [0.5, "high"])), "'history.test_acc'"),
    "history not a dict": (dict(change_metadata=lambda m: m.update(history=[1, 2])),
                           "'history'"),
    "epoch not a number": (dict(change_metadata=lambda m: m.update(epoch="two")), "'epoch'"),
    "a model entry of text": (dict(replace={"model/0.bias": np.array(["x"] * 6)}),
                              "'model/0.bias'"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_checkpoint_names_the_entry_and_the_file_and_changes_nothing(tmp_path,
                                                                              damage):
    model, optimizer, history = trained_lenet()
    path = save_checkpoint(tmp_path / "run.npz", model, optimizer, epoch=2, history=history)
    how, entry = DAMAGES[damage]
    rewrite(path, **how)

    fresh, fresh_optimizer, _ = trained_lenet(seed=1, momentum=0.5)  # other values everywhere
    before = snapshot(fresh, fresh_optimizer)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, fresh, fresh_optimizer)
    message = str(caught.value)
    assert "run.npz" in message and entry in message, message
    assert "\n" not in message
    assert_unchanged(fresh, fresh_optimizer, before)


def test_a_float32_checkpoint_in_a_float64_model_gives_float64_momentum(tmp_path):
    model, optimizer, history = trained_lenet()  # float32, momentum 0.9
    path = save_checkpoint(tmp_path / "c.npz", model, optimizer, epoch=2, history=history)

    npnet.manual_seed(3)
    wide = lenet(batch_norm=True).astype(np.float64)
    wide_optimizer = npnet.SGD(wide.parameters(), lr=0.1, momentum=0.9)
    load_checkpoint(path, wide, wide_optimizer)
    for param, velocity, saved in zip(wide_optimizer.params, wide_optimizer.velocity,
                                      optimizer.velocity):
        assert param.data.dtype == velocity.dtype == np.float64
        np.testing.assert_array_equal(velocity, saved)
    assert all(value.dtype == np.float64 for value in wide.state_dict().values())


def test_momentum_buffers_not_yet_made_load_as_none(tmp_path):
    """A checkpoint saved before the first step has no buffers, and says so: not damage."""
    npnet.manual_seed(0)
    model = lenet()
    optimizer = npnet.SGD(model.parameters(), lr=0.1, momentum=0.9)
    path = save_checkpoint(tmp_path / "c.npz", model, optimizer, epoch=0, history=History())
    other, _, _ = trained_lenet()
    fresh_optimizer = npnet.SGD(other.parameters(), lr=0.5, momentum=0.5)
    load_checkpoint(path, other, fresh_optimizer)
    assert fresh_optimizer.velocity == [None] * len(other.parameters())
    assert fresh_optimizer.momentum == 0.9


def test_read_checkpoint_metadata_needs_no_model(tmp_path):
    model, optimizer, history = trained_lenet()
    path = save_checkpoint(tmp_path / "c.npz", model, optimizer, epoch=2, history=history,
                           extra={"seed": 0})
    info = read_checkpoint_metadata(path)
    assert info["epoch"] == 2 and info["history"] == history and info["extra"] == {"seed": 0}
    assert info["optimizer"] == {"type": "SGD", "settings": {"lr": 0.1, "momentum": 0.9,
                                                             "weight_decay": 0.0}}
    assert "model/1.moving_mean" in info["entries"]


def test_a_folder_is_not_called_a_missing_file(tmp_path):
    """#10.14: a folder passed as the checkpoint said "checkpoint file not found"."""
    save_checkpoint(tmp_path / "checkpoint.npz", lenet())
    with pytest.raises(IsADirectoryError, match="is a folder, not a checkpoint file; did you "
                                                "mean .*checkpoint.npz"):
        load_checkpoint(tmp_path, lenet())


# ---------------------------------------------- plots are written atomically (issue #10.9)
def savefig_killed_halfway(monkeypatch, error):
    """Make every Figure.savefig write half a PNG to its target, then fail with ``error`` (as
    a kill or a full disk would stop it)."""
    from matplotlib.figure import Figure

    real_savefig = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        import io
        buffer = io.BytesIO()
        real_savefig(self, buffer, *args, **{**kwargs, "format": "png"})
        half = buffer.getvalue()[:len(buffer.getvalue()) // 2]
        if hasattr(fname, "write"):
            fname.write(half)
        else:
            with open(fname, "wb") as file:
                file.write(half)
        raise error

    monkeypatch.setattr(Figure, "savefig", savefig)


def plot_with(kind, path):
    if kind == "learning curves":
        history = History([1.0, 0.5], [0.3, 0.6], [0.4, 0.7], [0.9, 0.4], [1.0, 1.0],
                          [100.0, 100.0])
        npnet.plots.plot_history(history, path)
    elif kind == "predictions":
        npnet.manual_seed(0)
        npnet.plots.plot_predictions(lenet(), IMAGES, LABELS, None, path, n=4)
    else:  # plots_inside, from a Recorder
        from npnet.instruments import Recorder
        from npnet.plots_inside import plot_activation_stats
        npnet.manual_seed(0)
        net = lenet()
        recorder = Recorder(net, every=1)
        fit(net, (IMAGES, LABELS), epochs=1, batch_size=8, progress=False, verbose=False,
            fast=False)
        recorder.remove()
        plot_activation_stats(recorder, path)


@pytest.mark.parametrize("kind", ["learning curves", "predictions", "inside"])
@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(28, "No space left on device")],
                         ids=["interrupted", "disk full"])
def test_a_plot_stopped_while_saving_leaves_the_old_picture_whole(tmp_path, monkeypatch, kind,
                                                                  error):
    path = tmp_path / "picture.png"
    plot_with(kind, path)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG") and before.endswith(b"IEND\xaeB`\x82")

    savefig_killed_halfway(monkeypatch, error)
    with pytest.raises(type(error)):
        plot_with(kind, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picture.png"]  # no temp file


def test_a_plot_path_without_suffix_gets_png(tmp_path):
    npnet.plots.plot_history(History([1.0], [0.5], [0.5], [1.0], [1.0], [1.0]),
                             tmp_path / "curves")
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")


# ---------------------------- temporary files of killed writers are removed (issue #10.10)
def dead_pid() -> int:
    """The process id of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_temporary_files_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    dead, alive = dead_pid(), os.getppid()
    left = {name: tmp_path / f".{name}.{dead}.tmp" for name in ("checkpoint.npz",
                                                                 "history.json")}
    busy = tmp_path / f".checkpoint.npz.{alive}.tmp"  # another process is writing it now
    for path in [*left.values(), busy]:
        path.write_bytes(b"half a file")

    save_checkpoint(tmp_path / "checkpoint.npz", lenet())
    assert not left["checkpoint.npz"].exists() and left["history.json"].exists()
    assert busy.exists()
    History().save(tmp_path / "history.json")  # any atomic write cleans up after its target
    assert not left["history.json"].exists()

    other = tmp_path / f".notes.txt.{dead}.tmp"
    other.write_text("half")
    assert remove_stale_temp_files(tmp_path) == [other]
    assert busy.exists()


def test_an_ordinary_error_leaves_no_temporary_file(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with atomic_write(tmp_path / "x.json", "w") as file:
            file.write("{")
            1 / 0
    (tmp_path / "checkpoint.npz").mkdir()
    with pytest.raises(IsADirectoryError, match="checkpoint.npz: it is a folder"):
        save_checkpoint(tmp_path / "checkpoint.npz", lenet())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]


# ------------------------------------------------- one run per folder (issue #10.17, #10.13)
@pytest.fixture(params=["flock", "lock file only"])
def make_lock(request):
    """FolderLock as on Linux (flock), and as without flock (Windows, some network file
    systems): a lock file created exclusively, holding the owner's process id."""
    def make(folder, **kwargs):
        lock = FolderLock(folder, **kwargs)
        lock._use_flock = request.param == "flock"
        return lock
    return make


def test_a_locked_folder_names_its_owner_and_is_free_again_after_release(tmp_path, make_lock):
    with make_lock(tmp_path, info={"command": "train first"}) as first:
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(FolderLockedError, match=rf"in use by another run \(pid "
                                                    rf"{os.getpid()}, started .*train first"):
            make_lock(tmp_path).acquire()
        assert first.note is None
    assert not (tmp_path / ".lock").exists()
    with make_lock(tmp_path):  # free again
        pass


def test_the_lock_of_a_killed_run_is_taken_over_with_a_note(tmp_path, make_lock):
    pid = dead_pid()
    (tmp_path / ".lock").write_text(json.dumps({"pid": pid, "started": "yesterday"}))
    with make_lock(tmp_path) as lock:
        assert f"pid {pid}, started yesterday" in lock.note and "taking it over" in lock.note
    assert not (tmp_path / ".lock").exists()


def test_a_lock_held_by_another_process_is_refused(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from npnet.atomic import FolderLock; "
                               "lock = FolderLock(sys.argv[1]); lock.acquire(); "
                               "print('locked', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()  # like kill -9: no clean-up runs in the holder
        holder.wait()
        holder.stdout.close()
    with FolderLock(tmp_path) as lock:  # the operating system released its lock
        assert f"pid {holder.pid}" in lock.note


def test_check_folder_writable(tmp_path, monkeypatch):
    check_folder_writable(tmp_path, need_bytes=1000)
    assert list(tmp_path.iterdir()) == []  # the probe is gone
    (tmp_path / "f").write_text("x")
    with pytest.raises(FolderNotWritableError, match="it is a file"):
        check_folder_writable(tmp_path / "f")
    monkeypatch.setattr(npnet.atomic.shutil, "disk_usage",
                        lambda path: type("Usage", (), {"free": 5000})())
    with pytest.raises(FolderNotWritableError, match=r"only 5 kB free on the disk holding .*"
                                                     r"about 2\.0 MB are needed") as caught:
        check_folder_writable(tmp_path, need_bytes=2_000_000)
    assert caught.value.errno == 28
