"""The notebooks in notebooks/ run, headless, as a user's Jupyter would run them.

Each jupytext percent file is converted to a notebook and executed by nbclient in a fresh
python3 kernel (what ``jupyter nbconvert --execute`` does), in a temporary folder. A notebook
passes when every cell runs: its own asserts check its numbers (shapes, differences below
1e-12, gradcheck errors below 1e-6, accuracies above measured floors). On top of that, what
the notebook stores must display well:

- every figure shown is stored as an ``image/png``, not only as ``<Figure size ...>`` text;
- fit's progress bars do not store their refreshes: a progress bar is a widget (tqdm.auto,
  with ipywidgets), or at most a few lines of text, never hundreds of carriage returns.

Each notebook's run time is printed (``pytest -s`` shows it). The module is skipped when the
Jupyter packages are missing: ``pip install -e ".[notebooks]"`` installs them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

for _module in ("jupytext", "nbclient", "nbformat", "ipykernel", "ipywidgets"):
    pytest.importorskip(_module, reason=f"{_module} is needed to run the notebooks: "
                                        f'pip install -e ".[notebooks]"')

import jupytext  # noqa: E402
import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

import npnet.plots_inside  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))

# How many figures each notebook shows (cells whose value is a figure).
FIGURES = {"04_train_lenet_bn.py": 3, "05_look_inside.py": 3}
# Stored lines of progress-bar text, at most (a few, never one per refresh).
MAX_PROGRESS_TEXT = 5
CELL_TIMEOUT = 300  # seconds; each notebook takes well under a minute on an idle machine

TIMES: dict[str, float] = {}


def execute(notebook, folder: Path) -> None:
    """Run every cell in a fresh python3 kernel whose working folder is ``folder``; raises
    nbclient's CellExecutionError (with the cell and its traceback) if a cell fails. The
    kernel's own log (its stderr) goes to a file, printed only if the run fails."""
    client = NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(folder)}})
    log = folder / "kernel-stderr.txt"
    try:
        with open(log, "w") as stderr:
            client.execute(stderr=stderr)  # passed on to the kernel's Popen
    except BaseException:
        print(f"--- the kernel's stderr:\n{log.read_text()}")
        raise


def outputs(notebook):
    for cell in notebook.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


def is_figure(output) -> bool:
    text = output.get("data", {}).get("text/plain", "")
    return output.get("output_type") in ("execute_result", "display_data") and \
        text.startswith("<Figure size")


PROGRESS_LINE = re.compile(r"\|[^|\n]*\|\s*\d+/\d+")  # tqdm's text bar: "| 12/100 [..."


def progress_text(notebook) -> int:
    """Refreshes of text progress bars stored in the notebook's streams: carriage returns
    (how a text bar redraws itself) and lines that look like a tqdm bar."""
    count = 0
    for output in outputs(notebook):
        if output.get("output_type") == "stream":
            count += output["text"].count("\r")
            count += len(PROGRESS_LINE.findall(output["text"]))
    return count


def inside_figures_display_inline() -> bool:
    """Whether npnet.plots_inside's figures show themselves as PNG (see notebooks/README.md)."""
    return hasattr(npnet.plots_inside._new_figure(), "_repr_png_")


@pytest.fixture(autouse=True)
def no_downloads(tmp_path, monkeypatch):
    """The notebooks use the MNIST sample shipped with npnet; nothing else is read or fetched."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("NPNET_DATA", str(empty))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_the_notebook_runs_and_displays_well(path, tmp_path):
    notebook = jupytext.read(path)
    start = time.perf_counter()
    execute(notebook, tmp_path)
    TIMES[path.name] = seconds = time.perf_counter() - start
    print(f"\n{path.name}: ran in {seconds:.1f} s")

    assert not [o for o in outputs(notebook) if o.get("output_type") == "error"]
    figures = [o for o in outputs(notebook) if is_figure(o)]
    assert len(figures) == FIGURES.get(path.name, 0), f"{path.name}: figures shown"
    if path.name == "05_look_inside.py" and not inside_figures_display_inline():
        pytest.xfail("npnet.plots_inside makes plain matplotlib Figures, which Jupyter shows "
                     "as text: it should make them with npnet.plots.new_figure")
    for figure in figures:
        png = figure["data"].get("image/png")
        assert png, f"{path.name}: a figure stored as {figure['data']['text/plain']!r} only"
        assert png.startswith("iVBORw0KGgo")  # base64 of the PNG signature
    refreshes = progress_text(notebook)
    assert refreshes <= MAX_PROGRESS_TEXT, \
        f"{path.name}: {refreshes} progress-bar refreshes stored as text"


def test_a_figure_is_shown_once_even_where_pyplot_set_up_the_inline_backend(tmp_path):
    """Importing pyplot in a kernel sets up matplotlib's inline display, whose formatter then
    draws npnet's figures instead of their own _repr_png_: still one PNG per figure, and
    pyplot does not show npnet's figures a second time at the end of the cell."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in (
        "from npnet.plots import plot_history\n"
        "from npnet.train import History\n"
        "history = History([1.0, 0.5], [0.5, 0.8], [0.6, 0.9], [None] * 2, [1.0] * 2, [1.0] * 2)\n"
        "plot_history(history)",
        "import matplotlib.pyplot as plt\n"
        "plot_history(history)",
        "figure = plot_history(history)",  # no value: nothing shown
        "display(plot_history(history))",
    )])
    execute(notebook, tmp_path)
    shown = [[o for o in cell.outputs if "image/png" in o.get("data", {})]
             for cell in notebook.cells]
    assert [len(images) for images in shown] == [1, 1, 0, 1]


def test_the_progress_check_catches_a_text_bar(tmp_path):
    """What the check above guards against: tqdm's text bar (tqdm.auto's fallback without
    ipywidgets) stores every refresh in the notebook, one carriage return each."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from tqdm.std import tqdm\n"
        "for _ in tqdm(range(100), mininterval=0, leave=False):\n"
        "    pass")])
    execute(notebook, tmp_path)
    assert progress_text(notebook) > 100
