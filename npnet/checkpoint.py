"""Checkpoints: a trained network, its optimizer and its history in one ``.npz`` file.

The file is a plain NumPy archive, readable with ``np.load(path, allow_pickle=False)``; no
pickle, so loading a checkpoint cannot run code. Its entries:

    model/<name>               every parameter and buffer, e.g. model/0.weight (6, 1, 5, 5),
                               model/1.moving_mean (1, 6, 1, 1)
    optimizer/<key>/<i>        the optimizer's per-parameter arrays, e.g. SGD's momentum
                               buffers optimizer/velocity/0 (absent while still None)
    metadata                   one JSON string: format and version, the epoch, the History,
                               the optimizer's settings (lr, ...) and any ``extra`` dict

Saving is atomic: the archive is written to a temporary file in the same folder and then
renamed over the old one with ``os.replace``. A save that fails halfway (full disk, Ctrl-C)
leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .train import History

FORMAT = "npnet-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, or does not fit the model or optimizer given."""


def save_checkpoint(path: str | os.PathLike, model, optimizer=None, epoch: int | None = None,
                    history: History | None = None, extra: dict | None = None) -> Path:
    """Save ``model`` (parameters and buffers), and optionally the optimizer state, the
    number of epochs trained, the ``History`` and a JSON-able ``extra`` dict, to ``path``.

    Returns the path. The file is replaced atomically: either the old or the new checkpoint,
    never half of one.
    """
    path = Path(path)
    arrays = {f"model/{name}": value for name, value in model.state_dict().items()}
    metadata = {"format": FORMAT, "version": VERSION, "epoch": epoch,
                "history": None if history is None else history.to_dict(),
                "optimizer": None, "extra": extra}
    if optimizer is not None:
        settings, optimizer_arrays = _split_optimizer_state(optimizer.state_dict())
        metadata["optimizer"] = {"type": type(optimizer).__name__, "settings": settings}
        arrays.update(optimizer_arrays)
    # a 0-d unicode array: stored as text, loads without pickle
    arrays["metadata"] = np.array(json.dumps(metadata))
    with atomic_write(path, "wb") as file:  # a failed save leaves the old file as it was
        np.savez(file, **arrays)  # to a file object: savez does not append ".npz"
    return path


def load_checkpoint(path: str | os.PathLike, model, optimizer=None) -> dict:
    """Load a checkpoint written by ``save_checkpoint`` into ``model`` (and ``optimizer``).

    Returns the metadata: ``{'epoch': int or None, 'history': History or None,
    'extra': dict or None}``.

    Raises ``FileNotFoundError`` if there is no file, and ``CheckpointError`` naming the file
    if it is damaged or does not fit: a missing, unexpected or differently shaped entry is
    named in the message, and then nothing in the model or the optimizer has been changed.
    """
    path = Path(path)
    entries, metadata = _read(path)
    model_state = {name.removeprefix("model/"): value for name, value in entries.items()
                   if name.startswith("model/")}

    optimizer_state = None
    if optimizer is not None:
        if metadata["optimizer"] is None:
            raise CheckpointError(f"{path}: holds no optimizer state (it was saved without "
                                  f"optimizer=...); load it with optimizer=None")
        saved_type = metadata["optimizer"]["type"]
        if saved_type != type(optimizer).__name__:
            raise CheckpointError(f"{path}: holds the state of a {saved_type} optimizer; got "
                                  f"a {type(optimizer).__name__}")
        optimizer_state = _join_optimizer_state(metadata["optimizer"]["settings"], entries)
        _check_optimizer_fits(path, optimizer, optimizer_state)

    try:
        model.load_state_dict(model_state)  # checks every entry before changing anything
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: does not fit this model: {error.args[0]}") from error
    if optimizer is not None:
        optimizer.load_state_dict(optimizer_state)

    history = metadata["history"]
    return {"epoch": metadata["epoch"],
            "history": None if history is None else History.from_dict(history),
            "extra": metadata["extra"]}


# ------------------------------------------------------------------------------ helpers
def _read(path: Path) -> tuple[dict, dict]:
    """All arrays of the archive (read now, so damage shows here) and the parsed metadata."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    damaged = (f"{path}: not a readable npnet checkpoint; the file is truncated, damaged, or "
               f"was not written by save_checkpoint")
    if not zipfile.is_zipfile(path):  # an .npz archive is a zip file
        raise CheckpointError(f"{damaged} (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            entries = {name: archive[name] for name in archive.files}
        metadata = json.loads(str(entries.pop("metadata")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{damaged} ({type(error).__name__}: {error})") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{damaged} (its metadata has no '{FORMAT}' marker)")
    if metadata.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {metadata.get('version')}; "
                              f"this npnet reads version {VERSION}")
    return entries, metadata


def _split_optimizer_state(state: dict) -> tuple[dict, dict]:
    """Split an optimizer's ``state_dict()`` into JSON settings and named arrays.

    Numbers, strings and None go to the settings. A list of per-parameter arrays (each may be
    None), such as SGD's ``velocity``, becomes arrays ``optimizer/<key>/<i>``; the settings
    keep its length under ``{'<key>': {'list_length': n}}``.
    """
    settings, arrays = {}, {}
    for key, value in state.items():
        if isinstance(value, (list, tuple)):
            settings[key] = {"list_length": len(value)}
            for index, item in enumerate(value):
                if item is not None:
                    arrays[f"optimizer/{key}/{index}"] = np.asarray(item)
        elif value is None or isinstance(value, (bool, int, float, str)):
            settings[key] = value
        else:
            raise TypeError(f"save_checkpoint: cannot store optimizer state '{key}' of type "
                            f"{type(value).__name__}; expected numbers, strings or lists of "
                            f"arrays")
    return settings, arrays


def _join_optimizer_state(settings: dict, entries: dict) -> dict:
    """The inverse of ``_split_optimizer_state``."""
    state = {}
    for key, value in settings.items():
        if isinstance(value, dict) and "list_length" in value:
            state[key] = [entries.get(f"optimizer/{key}/{index}")
                          for index in range(value["list_length"])]
        else:
            state[key] = value
    return state


def _check_optimizer_fits(path: Path, optimizer, state: dict) -> None:
    """Every per-parameter array list must have one entry per parameter, of its shape."""
    params = getattr(optimizer, "params", None)
    if params is None:
        return
    for key, value in state.items():
        if not isinstance(value, list):
            continue
        if len(value) != len(params):
            raise CheckpointError(f"{path}: optimizer state '{key}' has {len(value)} entries; "
                                  f"this optimizer has {len(params)} parameters")
        for index, (array, param) in enumerate(zip(value, params)):
            if array is not None and array.shape != param.shape:
                raise CheckpointError(f"{path}: optimizer entry 'optimizer/{key}/{index}' has "
                                      f"shape {array.shape}; parameter {index} has shape "
                                      f"{param.shape}")
