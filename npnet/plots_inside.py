"""Figures of what an ``instruments.Recorder`` saw inside a network during training.

- ``plot_activation_stats``: mean, std and saturated fraction of each layer's output, by step
- ``plot_gradient_norms``: the norm of each layer's weight gradient (or any other gradient
  statistic), by step, on a log scale
- ``plot_activation_histograms``: the distribution of each layer's output at an early and a
  late step, from the values a Recorder with ``sample_size > 0`` kept

Each takes one Recorder or several as ``{"title": recorder}`` (drawn side by side, on shared
axes, e.g. a network with and one without BatchNorm), returns a matplotlib ``Figure`` and, given
``path``, saves it as PNG (atomically, see ``npnet/atomic.py``: a program killed while saving
leaves the previous file, never half of one). The figures are built with ``Figure`` and
``FigureCanvasAgg``, not pyplot, so nothing touches pyplot's global state or needs a display.

Layers are picked with ``layers``: None for the activation layers (Sigmoid, Tanh, ReLU: the
"intermediate outputs" of a network), or a list of dotted names and/or layer types, as in
``Recorder``. Lines and rows are matched across recorders by position (the first activation
of one network with the first of the other), and coloured from shallow (dark) to deep (light).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from .activation import ReLU, Sigmoid, Tanh
from .instruments import Recorder
from .plots import new_figure as _new_figure, save_figure_atomically

if TYPE_CHECKING:  # for the annotations only: matplotlib is imported where figures are made
    from matplotlib.figure import Figure

ACTIVATIONS = (Sigmoid, Tanh, ReLU)




def _as_dict(recorders) -> dict[str, Recorder]:
    if isinstance(recorders, Recorder):
        return {"": recorders}
    recorders = dict(recorders)
    if not recorders or not all(isinstance(r, Recorder) for r in recorders.values()):
        raise TypeError("expects a Recorder or a dict {title: Recorder}")
    return recorders


def _pick(recorder: Recorder, layers) -> list[str]:
    """Names of the recorder's layers to draw, in forward order."""
    modules = recorder.watched
    wanted = ACTIVATIONS if layers is None else layers
    if isinstance(wanted, type):
        wanted = (wanted,)
    names = {item for item in wanted if isinstance(item, str)}
    types = tuple(item for item in wanted if isinstance(item, type))
    chosen = [name for name in recorder.names
              if name in names or (types and isinstance(modules.get(name), types))]
    return chosen or (list(recorder.names) if layers is None else [])


def _colors(count: int):
    from matplotlib import colormaps
    cmap = colormaps["viridis"]
    return [cmap(0.85 * k / max(1, count - 1)) for k in range(count)]


def _finish(fig: Figure, path) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # attach a canvas: the figure can be drawn and saved without pyplot
    fig.tight_layout()
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_figure_atomically(fig, path, dpi=110)  # never a truncated file, even if killed
    return fig


def plot_activation_stats(recorders, path=None, layers=None,
                          stats=("mean", "std", "saturated")) -> Figure:
    """One row per statistic, one column per recorder; one line per layer, by step."""
    recorders = _as_dict(recorders)
    fig = _new_figure(figsize=(4.6 * len(recorders), 2.6 * len(stats)))
    axes = fig.subplots(len(stats), len(recorders), squeeze=False, sharex="col", sharey="row")
    for column, (title, recorder) in enumerate(recorders.items()):
        arrays, names = recorder.to_arrays(), _pick(recorder, layers)
        colors = _colors(len(names))
        for row, stat in enumerate(stats):
            ax = axes[row, column]
            for name, color in zip(names, colors):
                if stat in arrays:
                    values = arrays[stat][:, recorder.names.index(name)]
                    ax.plot(arrays["steps"], values, color=color, label=recorder.labels[name])
            if column == 0:
                ax.set_ylabel({"saturated": "fraction saturated"}.get(stat, stat))
            if row == 0:
                ax.set_title(title)
                ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        axes[-1, column].set_xlabel("training step")
    return _finish(fig, path)


def plot_gradient_norms(recorders, path=None, layers=(), stat="grad_norm.weight") -> Figure:
    """One panel per recorder: ``stat`` (default ||dL/dW||) of each layer that has it, by
    step, log scale. ``layers=()`` means every layer with that statistic."""
    recorders = _as_dict(recorders)
    fig = _new_figure(figsize=(4.6 * len(recorders), 3.4))
    axes = fig.subplots(1, len(recorders), squeeze=False, sharey="row")[0]
    for ax, (title, recorder) in zip(axes, recorders.items()):
        arrays = recorder.to_arrays()
        table = arrays.get(stat, np.empty((len(arrays["steps"]), 0)))
        names = _pick(recorder, layers) if layers else recorder.names
        names = [name for name in names  # only layers that have the statistic
                 if table.size and not np.isnan(table[:, recorder.names.index(name)]).all()]
        for name, color in zip(names, _colors(len(names))):
            ax.plot(arrays["steps"], table[:, recorder.names.index(name)], color=color,
                    label=recorder.labels[name])
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0].set_ylabel(_norm_label(stat))
    return _finish(fig, path)


def _norm_label(stat: str) -> str:
    if stat == "grad_in_norm":
        return "||dL/d input||"
    if stat.startswith("grad_norm."):
        return f"||dL/d {stat.split('.', 1)[1]}||"
    return stat


def plot_activation_histograms(recorders, path=None, layers=None, steps=None,
                               bins: int = 50, value_range=None) -> Figure:
    """One row per layer, one column per recorder; in each panel the distribution of the
    layer's output at each of ``steps`` (default: the first and the last sampled step).
    ``value_range=(low, high)`` fixes the x axis of every panel, e.g. (0, 1) for Sigmoids;
    by default each panel spans its own values."""
    recorders = _as_dict(recorders)
    picked = {title: _pick(rec, layers) for title, rec in recorders.items()}
    rows = max(len(names) for names in picked.values())
    fig = _new_figure(figsize=(4.2 * len(recorders), 1.9 * rows + 0.6))
    axes = fig.subplots(rows, len(recorders), squeeze=False)
    for column, (title, recorder) in enumerate(recorders.items()):
        if not recorder.samples:
            raise ValueError(f"recorder {title!r} kept no activation samples; create it with "
                             f"sample_size > 0")
        sampled = sorted(recorder.samples)
        wanted = (sampled[0], sampled[-1]) if steps is None else steps
        chosen = [recorder.samples_near(step) for step in wanted]
        for row in range(rows):
            ax = axes[row, column]
            if row >= len(picked[title]):
                ax.set_visible(False)
                continue
            name = picked[title][row]
            values = [samples[name] for _, samples in chosen if name in samples]
            if value_range is not None:
                low, high = value_range
            else:
                low = min(v.min() for v in values) if values else 0.0
                high = max(v.max() for v in values) if values else 1.0
            edges = np.linspace(low, high if high > low else low + 1, bins + 1)
            for (step, samples), color in zip(chosen, _colors(len(chosen))):
                if name in samples:
                    ax.hist(samples[name], bins=edges, density=True, histtype="stepfilled",
                            alpha=0.45, color=color, label=f"step {step}")
            ax.set_ylabel(recorder.labels[name], fontsize=7)
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(title)
                ax.legend(fontsize=7)
    return _finish(fig, path)
