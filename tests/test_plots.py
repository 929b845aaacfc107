"""npnet.plots: each plot returns its figure, saves it only when given a path, draws what it
says, and shows itself as a PNG where IPython displays it (a Jupyter notebook) with no pyplot.

What nbclient stores when a notebook shows such a figure is tested in test_notebooks.py.
"""

import pickle
import struct

import numpy as np
import pytest
from matplotlib.figure import Figure as MatplotlibFigure

import npnet
from npnet.models import lenet
from npnet.plots import plot_history, plot_predictions
from npnet.train import History

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def three_epochs(test_acc=(0.5, 0.7, 0.8)):
    return History(train_loss=[1.2, 0.6, 0.4], train_acc=[0.6, 0.8, 0.85],
                   test_acc=list(test_acc), test_loss=[None] * 3, epoch_time=[1.0] * 3,
                   examples_per_sec=[100.0] * 3)


def png_size(data: bytes) -> tuple:
    """(width, height) in pixels, from the PNG's IHDR chunk."""
    assert data.startswith(PNG_SIGNATURE)
    return struct.unpack(">II", data[16:24])


def digits(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28)).astype(np.float32), np.arange(n) % 10


# -------------------------------------------------------------------------- plot_history
def test_plot_history_returns_the_figure_and_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    figure = plot_history(three_epochs())
    assert isinstance(figure, MatplotlibFigure)
    assert list(tmp_path.iterdir()) == []


def test_plot_history_saves_the_figure_it_returns_when_given_a_path(tmp_path):
    path = tmp_path / "curves.png"
    figure = plot_history(three_epochs(), path)  # path: still the second positional argument
    assert isinstance(figure, MatplotlibFigure)
    assert png_size(path.read_bytes()) == (550, 380)  # 5.5 x 3.8 inches at 100 dpi


def test_plot_history_draws_one_line_per_measure_against_the_epoch():
    axes, = plot_history(three_epochs(), title="LeNet-BN").axes
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert list(lines) == ["train loss", "train acc", "test acc"]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == list(lines)
    for label, values in [("train loss", [1.2, 0.6, 0.4]), ("train acc", [0.6, 0.8, 0.85]),
                          ("test acc", [0.5, 0.7, 0.8])]:
        np.testing.assert_array_equal(lines[label].get_xdata(), [1, 2, 3])
        np.testing.assert_array_equal(lines[label].get_ydata(), values)
    assert axes.get_xlabel() == "epoch" and axes.get_title() == "LeNet-BN"


def test_plot_history_leaves_out_test_accuracy_that_was_not_measured():
    axes, = plot_history(three_epochs(test_acc=(None, None, None))).axes
    assert [line.get_label() for line in axes.get_lines()] == ["train loss", "train acc"]
    axes, = plot_history(three_epochs(test_acc=(None, 0.7, 0.8))).axes
    test_line = axes.get_lines()[-1]
    assert test_line.get_label() == "test acc"
    np.testing.assert_array_equal(test_line.get_xdata(), [2, 3])


# ----------------------------------------------------------------------- plot_predictions
def test_plot_predictions_returns_the_figure_and_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    npnet.manual_seed(0)
    x, y = digits()
    figure = plot_predictions(lenet(), x, y, None, n=4)
    assert isinstance(figure, MatplotlibFigure)
    assert len(figure.axes) == 4
    assert list(tmp_path.iterdir()) == []


def test_plot_predictions_saves_when_given_a_path_fifth(tmp_path):
    npnet.manual_seed(0)
    x, y = digits()
    path = tmp_path / "predictions.png"
    figure = plot_predictions(lenet(), x, y, None, path, 4)  # path 5th, n 6th, as before
    assert len(figure.axes) == 4
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_plot_predictions_titles_each_image_with_the_prediction_mistakes_in_red():
    npnet.manual_seed(0)
    model = lenet()
    x, y = digits(n=6)
    predicted = model.eval()(x).argmax(axis=1)
    names = [f"class {k}" for k in range(10)]
    figure = plot_predictions(model.train(), x, y, names, n=6)
    assert model.training  # it predicts in evaluation mode, and puts the mode back
    for axes, guess, truth in zip(figure.axes, predicted, y):
        title = axes.title
        assert title.get_text() == f"class {guess}\n(true: class {truth})"
        assert title.get_color() == ("red" if guess != truth else "black")


def test_plot_predictions_with_only_mistakes_shows_only_wrong_predictions():
    npnet.manual_seed(0)
    model = lenet()
    x, y = digits(n=20)
    model.eval()
    wrong = int((model(x).argmax(axis=1) != y).sum())
    figure = plot_predictions(model, x, y, None, n=50, only_mistakes=True)
    assert len(figure.axes) == wrong > 0
    assert all(axes.title.get_color() == "red" for axes in figure.axes)


# ------------------------------------------------------------- shown inline, without pyplot
@pytest.mark.parametrize("plot", ["history", "predictions"])
def test_the_figure_shows_itself_as_a_png_of_its_size(plot):
    if plot == "history":
        figure = plot_history(three_epochs())
    else:
        npnet.manual_seed(0)
        figure = plot_predictions(lenet(), *digits(), None, n=3)
    width, height = figure.get_size_inches() * figure.dpi
    assert png_size(figure._repr_png_()) == (round(width), round(height))


def test_ipython_displays_the_figure_as_a_png():
    """What IPython puts in a notebook output for the figure as a cell's value (or in
    display(figure)): a plain matplotlib Figure gives text alone unless pyplot's inline
    backend has been set up; npnet's figures give a PNG as well."""
    formatters = pytest.importorskip("IPython.core.formatters")
    data, _ = formatters.DisplayFormatter().format(plot_history(three_epochs()))
    assert data["text/plain"] == "<Figure size 550x380 with 1 Axes>"
    assert png_size(data["image/png"]) == (550, 380)
    data, _ = formatters.DisplayFormatter().format(MatplotlibFigure())
    assert "image/png" not in data  # the problem the subclass solves


def test_the_figure_is_a_plain_matplotlib_figure_that_pickles():
    figure = plot_history(three_epochs())
    assert type(figure) is npnet.plots.Figure and type(figure).__name__ == "Figure"
    copy = pickle.loads(pickle.dumps(figure))
    assert type(copy) is npnet.plots.Figure
    assert [line.get_label() for line in copy.axes[0].get_lines()] == \
        ["train loss", "train acc", "test acc"]


def test_new_figure_draws_without_pyplot():
    figure = npnet.plots.new_figure(figsize=(2, 1))
    figure.add_subplot().plot([0, 1], [1, 0])
    assert png_size(figure._repr_png_()) == (200, 100)
