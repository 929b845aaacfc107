"""Checkpoints: a trained network, its optimizer and its history in one ``.npz`` file.

The file is a plain NumPy archive, readable with ``np.load(path, allow_pickle=False)``; no
pickle, so loading a checkpoint cannot run code. Its entries:

    model/<name>               every parameter and buffer, e.g. model/0.weight (6, 1, 5, 5),
                               model/1.moving_mean (1, 6, 1, 1)
    optimizer/<key>/<i>        the optimizer's per-parameter arrays, e.g. SGD's momentum
                               buffers optimizer/velocity/0 (absent while still None)
    metadata                   one JSON string: format and version, the epoch, the History,
                               the optimizer's settings (lr, ...; for each list of arrays its
                               length and which entries are stored) and any ``extra`` dict

Saving is atomic: the archive is written to a temporary file in the same folder and then
renamed over the old one with ``os.replace``. A save that fails halfway (full disk, Ctrl-C)
leaves the previous checkpoint as it was.

Loading is all or nothing: every entry (each array's name, shape and numbers, each optimizer
setting, the history) is checked before the model or the optimizer is changed, and an error
names the file and the entry. Arrays take the dtype of the model's parameters.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import fields
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

    Raises ``FileNotFoundError`` if there is no file, ``IsADirectoryError`` for a folder, and
    ``CheckpointError`` naming the file and the entry if it is damaged or does not fit: a
    missing, unexpected or differently shaped array, a missing or malformed optimizer setting,
    a malformed history. Every entry is checked before anything is changed, so after an error
    the model and the optimizer are as they were. Arrays are converted to the dtype of the
    parameters they belong to (a float32 checkpoint in a float64 model: float64 weights and
    momentum buffers).
    """
    path = Path(path)
    entries, metadata = _read(path)
    info = _checked_metadata(path, metadata, entries)
    model_state = _checked_model_state(path, entries, model)
    optimizer_state = None
    if optimizer is not None:
        optimizer_state = _checked_optimizer_state(path, metadata, entries, optimizer)
    leftover = [name for name in entries if not name.startswith(("model/", "optimizer/"))]
    if leftover:
        raise CheckpointError(f"{path}: unexpected entries {leftover}; not a file written by "
                              f"save_checkpoint")

    # Everything fits: change the model and the optimizer, and undo both if that still fails.
    model_before = model.state_dict()
    optimizer_before = None if optimizer is None else optimizer.state_dict()
    try:
        model.load_state_dict(model_state)
        if optimizer is not None:
            optimizer.load_state_dict(optimizer_state)
    except BaseException as error:
        model.load_state_dict(model_before)
        if optimizer is not None:
            optimizer.load_state_dict(optimizer_before)
        if isinstance(error, Exception):
            raise CheckpointError(f"{path}: could not be loaded ({type(error).__name__}: "
                                  f"{error}); nothing was changed") from error
        raise
    return {name: info[name] for name in ("epoch", "history", "extra")}


def read_checkpoint_metadata(path: str | os.PathLike) -> dict:
    """What a checkpoint says about itself, without a model: ``{'epoch', 'history',
    'extra', 'optimizer', 'entries'}``. ``optimizer`` is None or ``{'type': 'SGD',
    'settings': {'lr': ..., ...}}`` (numbers only, no arrays); ``entries`` lists the names of
    its arrays (e.g. ``'model/1.moving_mean'``). Checks the file as ``load_checkpoint``
    does, so a damaged file raises ``CheckpointError`` here already."""
    path = Path(path)
    entries, metadata = _read(path)
    info = _checked_metadata(path, metadata, entries)
    optimizer = metadata["optimizer"]
    if optimizer is not None:
        optimizer = {"type": optimizer["type"],
                     "settings": {key: value for key, value in optimizer["settings"].items()
                                  if not isinstance(value, dict)}}
    return {**info, "optimizer": optimizer, "entries": list(entries)}


# ------------------------------------------------------------------------------ helpers
METADATA_KEYS = ("format", "version", "epoch", "history", "optimizer", "extra")


def _read(path: Path) -> tuple[dict, dict]:
    """All arrays of the archive (read now, so damage shows here) and the parsed metadata."""
    if path.is_dir():
        inside = path / "checkpoint.npz"
        hint = f"; did you mean {inside}?" if inside.is_file() else ""
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file{hint}")
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
    missing = [key for key in METADATA_KEYS if key not in metadata]
    if missing:
        raise CheckpointError(f"{path}: metadata entry '{missing[0]}' is missing (the file "
                              f"was changed after save_checkpoint wrote it)")
    return entries, metadata


def _checked_metadata(path: Path, metadata: dict, entries: dict) -> dict:
    """The epoch, History and extra dict of the metadata, each checked; CheckpointError
    naming the entry otherwise. Also checks the structure of the optimizer entry."""
    epoch = metadata["epoch"]
    if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool)
                              or epoch < 0):
        raise CheckpointError(f"{path}: metadata entry 'epoch' is {epoch!r}; expected a "
                              f"whole number >= 0 or null")
    extra = metadata["extra"]
    if extra is not None and not isinstance(extra, dict):
        raise CheckpointError(f"{path}: metadata entry 'extra' is a {type(extra).__name__}; "
                              f"expected a dict or null")
    optimizer = metadata["optimizer"]
    if optimizer is not None:
        if (not isinstance(optimizer, dict) or not isinstance(optimizer.get("type"), str)
                or not isinstance(optimizer.get("settings"), dict)):
            raise CheckpointError(f"{path}: metadata entry 'optimizer' is malformed; expected "
                                  f"{{'type': name, 'settings': {{...}}}}, got {optimizer!r:.80}")
    elif any(name.startswith("optimizer/") for name in entries):
        raise CheckpointError(f"{path}: metadata entry 'optimizer' is null but the file holds "
                              f"optimizer arrays; the metadata was changed")
    return {"epoch": epoch, "history": _checked_history(path, metadata["history"]),
            "extra": extra}


def _checked_history(path: Path, data) -> History | None:
    """The History stored in the metadata, after checking that every value is a number."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: metadata entry 'history' is a {type(data).__name__}; "
                              f"expected a dict of lists")
    for name in [f.name for f in fields(History)]:
        values = data.get(name, [])
        if not isinstance(values, list):
            raise CheckpointError(f"{path}: metadata entry 'history.{name}' is a "
                                  f"{type(values).__name__}; expected a list, one number per "
                                  f"epoch")
        optional = name in ("test_acc", "test_loss")  # None without test data
        for epoch, value in enumerate(values, 1):
            if not ((isinstance(value, (int, float)) and not isinstance(value, bool))
                    or (optional and value is None)):
                raise CheckpointError(f"{path}: metadata entry 'history.{name}' holds "
                                      f"{value!r:.40} for epoch {epoch}; expected a number")
    try:  # History's own checks: no unknown lists, one value per epoch in each
        return History.from_dict(data)
    except ValueError as error:
        raise CheckpointError(f"{path}: metadata entry 'history' is malformed: "
                              f"{error}") from None


def _checked_model_state(path: Path, entries: dict, model) -> dict:
    """The model's entries of the file, checked against ``model.state_dict()`` (names, shapes,
    numbers) and converted to the dtype of the model's arrays."""
    own = model.state_dict()
    state = {name.removeprefix("model/"): value for name, value in entries.items()
             if name.startswith("model/")}
    missing = [name for name in own if name not in state]
    unexpected = [name for name in state if name not in own]
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not fit this model: missing entries {missing}, "
                              f"unexpected entries {unexpected}")
    for name, current in own.items():
        value = state[name]
        if value.shape != current.shape:
            raise CheckpointError(f"{path}: does not fit this model: entry '{name}' expects "
                                  f"shape {current.shape}; the file holds {value.shape}")
        if not _is_real(value):
            raise CheckpointError(f"{path}: entry 'model/{name}' holds {value.dtype} values; "
                                  f"expected numbers")
        state[name] = value.astype(current.dtype, copy=False)
    return state


def _checked_optimizer_state(path: Path, metadata: dict, entries: dict, optimizer) -> dict:
    """The optimizer's state from the file, in the form of ``optimizer.state_dict()``, after
    checking every setting and array against what the optimizer has now. Arrays are converted
    to the dtype of their parameter."""
    saved = metadata["optimizer"]
    if saved is None:
        raise CheckpointError(f"{path}: holds no optimizer state (it was saved without "
                              f"optimizer=...); load it with optimizer=None")
    if saved["type"] != type(optimizer).__name__:
        raise CheckpointError(f"{path}: holds the state of a {saved['type']} optimizer; got "
                              f"a {type(optimizer).__name__}")
    settings, current = saved["settings"], optimizer.state_dict()
    missing = [key for key in current if key not in settings]
    unexpected = [key for key in settings if key not in current]
    if missing or unexpected:
        which = (f"setting '{missing[0]}' is missing" if missing
                 else f"setting '{unexpected[0]}' is not one this {type(optimizer).__name__} has")
        raise CheckpointError(f"{path}: metadata entry 'optimizer': {which} (expected "
                              f"{sorted(current)}); the file was changed or written by "
                              f"another version")
    params = getattr(optimizer, "params", None)
    state, used = {}, set()
    for key, now in current.items():
        value = settings[key]
        if isinstance(now, (list, tuple)):
            state[key] = _checked_array_list(path, key, value, now, params, entries, used)
        else:
            state[key] = _checked_setting(path, key, value, now)
    unused = sorted(name for name in entries if name.startswith("optimizer/")
                    and name not in used)
    if unused:
        raise CheckpointError(f"{path}: unexpected entry '{unused[0]}': this optimizer has no "
                              f"such state")
    return state


def _checked_setting(path: Path, key: str, value, now):
    """One scalar setting (lr, momentum, ...), of the kind the optimizer has now."""
    def number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if number(now):
        ok = number(value) and math.isfinite(value)
    elif isinstance(now, (bool, str)):
        ok = type(value) is type(now)
    else:  # None or something else: any JSON scalar
        ok = value is None or isinstance(value, (bool, int, float, str))
    if not ok:
        raise CheckpointError(f"{path}: optimizer setting '{key}' is {value!r:.40}; expected "
                              f"{'a finite number' if number(now) else type(now).__name__}")
    return value


def _checked_array_list(path: Path, key: str, value, now, params, entries: dict,
                        used: set) -> list:
    """A per-parameter list of arrays (SGD's ``velocity``): every entry the file says it
    stored must be there, with its parameter's shape; converted to its dtype."""
    if not isinstance(value, dict) or not isinstance(value.get("list_length"), int):
        raise CheckpointError(f"{path}: optimizer setting '{key}' is {value!r:.60}; expected "
                              f"{{'list_length': n, ...}}")
    length = value["list_length"]
    if length != len(now):
        raise CheckpointError(f"{path}: optimizer state '{key}' has {length} entries; this "
                              f"optimizer has {len(now)} parameters")
    present = [index for index in range(length) if f"optimizer/{key}/{index}" in entries]
    stored = value.get("stored")
    if stored is None:
        # written before the file listed its arrays: SGD keeps all of them or none
        stored = present if len(present) in (0, length) else list(range(length))
    if (not isinstance(stored, list)
            or not all(isinstance(i, int) and 0 <= i < length for i in stored)):
        raise CheckpointError(f"{path}: optimizer setting '{key}.stored' is malformed")
    missing = [index for index in stored if index not in present]
    if missing:
        raise CheckpointError(f"{path}: entry 'optimizer/{key}/{missing[0]}' is missing "
                              f"({len(missing)} of the {len(stored)} '{key}' arrays the file "
                              f"stored are gone); the file is damaged")
    arrays = []
    for index in range(length):
        name = f"optimizer/{key}/{index}"
        if index not in stored:
            arrays.append(None)
            continue
        used.add(name)
        array = entries[name]
        reference = params[index].data if params is not None else now[index]
        if reference is not None:
            if array.shape != reference.shape:
                raise CheckpointError(f"{path}: optimizer entry '{name}' has shape "
                                      f"{array.shape}; parameter {index} has shape "
                                      f"{reference.shape}")
            if not _is_real(array):
                raise CheckpointError(f"{path}: optimizer entry '{name}' holds {array.dtype} "
                                      f"values; expected numbers")
            array = array.astype(reference.dtype)
        arrays.append(array)
    return arrays


def _is_real(array: np.ndarray) -> bool:
    return array.dtype.kind in "fiu"


def _split_optimizer_state(state: dict) -> tuple[dict, dict]:
    """Split an optimizer's ``state_dict()`` into JSON settings and named arrays.

    Numbers, strings and None go to the settings. A list of per-parameter arrays (each may be
    None), such as SGD's ``velocity``, becomes arrays ``optimizer/<key>/<i>``; the settings
    keep its length and which indices were stored (not None) under
    ``{'<key>': {'list_length': n, 'stored': [0, 1, ...]}}``, so that a lost array is noticed.
    """
    settings, arrays = {}, {}
    for key, value in state.items():
        if isinstance(value, (list, tuple)):
            stored = [index for index, item in enumerate(value) if item is not None]
            settings[key] = {"list_length": len(value), "stored": stored}
            for index in stored:
                arrays[f"optimizer/{key}/{index}"] = np.asarray(value[index])
        elif value is None or isinstance(value, (bool, int, float, str)):
            settings[key] = value
        else:
            raise TypeError(f"save_checkpoint: cannot store optimizer state '{key}' of type "
                            f"{type(value).__name__}; expected numbers, strings or lists of "
                            f"arrays")
    return settings, arrays
