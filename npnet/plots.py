"""Pictures of a training run: matplotlib figures, shown inline in Jupyter, saved as PNG.

- ``plot_history(history, path=None)``: the learning curves (train loss, train accuracy,
  test accuracy against the epoch), the picture the book's ``Animator`` draws during training;
- ``plot_predictions(model, x, y, class_names, path=None)``: test images with the predicted
  and the true label, wrong predictions in red.

Each returns its ``Figure`` and, given ``path``, also saves it (PNG, or the format of the
path's suffix). Files are replaced atomically (``npnet/atomic.py``): a program killed while
saving leaves the previous picture, whole.

The figures are drawn with ``matplotlib.figure.Figure`` and the Agg canvas directly, not with
``pyplot``: importing this module never changes the user's matplotlib backend or opens a
window, and it works on a machine without a display. Such a figure is not one that Jupyter
knows how to show (it shows ``<Figure size 550x380 with 1 Axes>`` unless pyplot or
``%matplotlib inline`` has set up its inline display), so the figures made here are a small
subclass, ``npnet.plots.Figure``, that gives itself a PNG picture (``_repr_png_``, the method
IPython looks for): the last expression of a cell, or ``display(figure)``, shows it inline.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_write


def _figure_class() -> type:
    """``npnet.plots.Figure``, made on first use: matplotlib is imported here, so that
    ``import npnet`` does not need it."""
    if "Figure" in globals():
        return globals()["Figure"]
    from matplotlib.figure import Figure as MatplotlibFigure

    class Figure(MatplotlibFigure):
        """A ``matplotlib.figure.Figure`` that Jupyter shows inline as a PNG, with no pyplot,
        no backend and no ``%matplotlib inline``: IPython calls ``_repr_png_`` on the last
        value of a cell (and in ``display``). Where the inline backend is set up (pyplot was
        imported in the kernel), IPython's own figure formatter takes precedence."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=self.dpi)  # the size it says it has
            return buffer.getvalue()

    Figure.__module__, Figure.__qualname__ = __name__, "Figure"  # where pickle looks for it
    globals()["Figure"] = Figure
    return Figure


def __getattr__(name: str):
    """``npnet.plots.Figure`` is created when first asked for (module ``__getattr__``)."""
    if name == "Figure":
        return _figure_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def new_figure(**kwargs):
    """A ``npnet.plots.Figure(**kwargs)`` (matplotlib's Figure arguments: figsize, layout,
    ...) with the Agg canvas attached: it can be drawn, saved and shown in Jupyter without
    pyplot's global state or a display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = _figure_class()(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def plot_history(history, path: str | os.PathLike | None = None,
                 title: str | None = None):
    """The learning curves of a ``History`` (from ``npnet.train.fit``); returns the Figure
    and, given ``path``, saves it there (PNG by default).

    One axis, x = epoch (1, 2, ...), like the book's figures: train loss, train acc and,
    when measured, test acc.
    """
    epochs = np.arange(1, len(history) + 1)
    figure = new_figure(figsize=(5.5, 3.8), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(epochs, history.train_loss, "-", marker=".", label="train loss")
    axes.plot(epochs, history.train_acc, "--", marker=".", label="train acc")
    measured = [(epoch, acc) for epoch, acc in zip(epochs, history.test_acc) if acc is not None]
    if measured:
        axes.plot(*zip(*measured), "-.", marker=".", label="test acc")
    axes.set_xlabel("epoch")
    axes.set_xlim(0.8, max(len(history), 1) + 0.2)
    axes.xaxis.get_major_locator().set_params(integer=True)  # no epoch 2.5
    axes.grid(True, alpha=0.4)
    axes.legend()
    if title:
        axes.set_title(title)
    return _finish(figure, path)


def plot_predictions(model, x: np.ndarray, y: np.ndarray, class_names,
                     path: str | os.PathLike | None = None, n: int = 18,
                     only_mistakes: bool = False, columns: int = 9):
    """A grid of the first ``n`` images of x (N, 1, H, W) with the model's predictions;
    returns the Figure and, given ``path``, saves it there (PNG by default).

    Each image is titled with the predicted class and, below, the true one from y (N,);
    wrong predictions are drawn in red. ``class_names[k]`` names class k (None: the class
    numbers). With ``only_mistakes=True`` the grid shows the first n misclassified images.
    The model runs in evaluation mode and is put back in the mode it was in.
    """
    x, y = np.asarray(x, dtype=model.dtype), np.asarray(y)
    was_training = model.training
    model.eval()
    try:
        # predict in chunks: only_mistakes may have to look far into x
        predicted = np.concatenate([model(x[start:start + 1000]).argmax(axis=1)
                                    for start in range(0, len(x), 1000)])
    finally:
        model.train(was_training)
    shown = np.flatnonzero(predicted != y) if only_mistakes else np.arange(len(x))
    shown = shown[:n]

    name = (lambda k: str(k)) if class_names is None else (lambda k: str(class_names[k]))
    columns = max(1, min(columns, len(shown)))
    rows = max(1, math.ceil(len(shown) / columns))
    figure = new_figure(figsize=(1.3 * columns, 1.65 * rows), layout="constrained")
    for position, index in enumerate(shown):
        axes = figure.add_subplot(rows, columns, position + 1)
        axes.imshow(x[index, 0], cmap="gray_r")
        wrong = predicted[index] != y[index]
        axes.set_title(f"{name(predicted[index])}\n(true: {name(y[index])})", fontsize=8,
                       color="red" if wrong else "black")
        axes.set_xticks([])
        axes.set_yticks([])
        if wrong:  # a red frame as well as a red title
            for spine in axes.spines.values():
                spine.set_color("red")
                spine.set_linewidth(2)
    if len(shown) == 0:
        figure.text(0.5, 0.5, "no mistakes" if only_mistakes else "no images", ha="center")
    return _finish(figure, path)


def _finish(figure, path: str | os.PathLike | None):
    """Save the figure when a path is given, as PNG (or the format of path's suffix),
    atomically: a kill or a full disk while writing leaves the previous picture, never a
    truncated one (see ``npnet/atomic.py``). Returns the figure."""
    if path is not None:
        save_figure_atomically(figure, path, dpi=100)
    return figure


def save_figure_atomically(figure, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """``figure.savefig(path)``, but written to a temporary file that replaces ``path`` only
    once complete. A path without a suffix gets ".png", as savefig gives it. Returns the
    path written."""
    path = Path(path)
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    with atomic_write(path, "wb") as file:
        figure.savefig(file, format=path.suffix[1:].lower(), **savefig_kwargs)
    return path
