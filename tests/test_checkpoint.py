"""Checkpoints: what goes in comes back out, bad files say so, and a failed save loses nothing."""

from __future__ import annotations

import numpy as np
import pytest

import npnet
from npnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from npnet.models import lenet
from npnet.train import fit

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
