"""Notebooks that teach on the page and read without running.

* Every committed notebook is clean: no execution counts, no progress bars or widget state,
  no machine-specific metadata, under 2 MB (as sources, and as ``make report`` stores them).
* ``helpers.notebook_run`` executes notebooks, stores clean outputs with the profile, hardware
  and commit in the first cell, records the run, and leaves a notebook that fails as it was.
* The lessons are written in cells (no printed source), and notebooks 03 and 04 share calls,
  not cells.
* Notebook 06's demo: the upload widget's handler on a real campus photo and a CamVid image,
  the web app served on 127.0.0.1, and the Colab port proxy with a mocked ``google.colab``.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import types
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from helpers import notebook_run, widgets

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAIN_NOTEBOOKS = [path for path in NOTEBOOKS if "01" <= path.name[:2] <= "07"]
# 1x1 PNG: a stand-in figure in generated notebooks.
PIXEL_PNG = base64.b64encode(
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x9a\xa0\xa0\x00"
    b"\x00\x00\x00IEND\xaeB`\x82").decode()


def cells(path: Path, kind: str) -> list[str]:
    return ["".join(cell["source"]) for cell in json.loads(path.read_text())["cells"]
            if cell["cell_type"] == kind]


# --------------------------------------------------------------------------- clean notebooks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_notebook_is_clean(path):
    notebook = json.loads(path.read_text())
    assert notebook_run.notebook_problems(notebook, path.stat().st_size) == [], path.name


def executed_notebook(root: str) -> dict:
    """A notebook as nbclient leaves it: counts, timings, widget bars, text bars, metadata."""
    bar = "train:  40%|████      | 2/5 [00:01<00:01,  2.0it/s]"
    return nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"},
                  "language_info": {"name": "python", "version": "3.11.7",
                                    "codemirror_mode": {"name": "ipython", "version": 3}},
                  "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}},
        cells=[
            nbformat.v4.new_code_cell("print('setup')", execution_count=1, outputs=[
                nbformat.v4.new_output("stream", name="stdout", text="setup\n")]),
            nbformat.v4.new_code_cell("train()", execution_count=2, metadata={
                "execution": {"iopub.execute_input": "2024-01-01T00:00:00Z"}}, outputs=[
                nbformat.v4.new_output("display_data", data={
                    "application/vnd.jupyter.widget-view+json": {"model_id": "abc",
                                                                  "version_major": 2},
                    "text/plain": "train:   0%|          | 0/5 [00:00<?, ?it/s]"}),
                nbformat.v4.new_output("stream", name="stderr", text=(
                    "/venv/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update "
                    "jupyter and ipywidgets.\n  from .autonotebook import tqdm as notebook_tqdm\n"
                    f"\r{bar}\r{bar.replace('40%', '80%')}\n")),
                nbformat.v4.new_output("stream", name="stdout", text=(
                    f"checkpoint {root}/runs/quick/best.pt\nloss 0.41\n"
                    f"cached in {Path.home()}/.cache/runtimes.json\n")),
                nbformat.v4.new_output("display_data", data={
                    "image/png": PIXEL_PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"}),
                nbformat.v4.new_output("execute_result", execution_count=2,
                                       data={"text/plain": "0.41"}),
            ]),
        ])


def test_clean_notebook_removes_counts_bars_widgets_and_machine_metadata():
    root = str(ROOT)
    dirty = executed_notebook(root)
    found = "\n".join(notebook_run.notebook_problems(dirty))
    for problem in ("execution count", "widget view", "progress bar", "language_info",
                    "notebook metadata ['widgets']", "metadata ['execution']"):
        assert problem in found, f"not reported: {problem}\n{found}"

    clean = notebook_run.clean_notebook(dirty, root=root)
    assert notebook_run.notebook_problems(clean) == []
    assert clean["metadata"] == {"kernelspec": dirty["metadata"]["kernelspec"],
                                 "language_info": {"name": "python"}}
    outputs = clean["cells"][1]["outputs"]
    assert [output["output_type"] for output in outputs] == ["stream", "display_data",
                                                             "execute_result"]
    assert outputs[0]["text"] == ("checkpoint runs/quick/best.pt\nloss 0.41\n"
                                  "cached in ~/.cache/runtimes.json\n")
    assert outputs[1]["data"]["image/png"] == PIXEL_PNG
    assert outputs[2]["data"]["text/plain"] == "0.41"
    assert dirty["cells"][1]["execution_count"] == 2, "the executed notebook is left as it was"


def test_a_notebook_over_two_megabytes_is_a_problem():
    notebook = nbformat.v4.new_notebook()
    assert notebook_run.notebook_problems(notebook, notebook_run.MAX_NOTEBOOK_BYTES - 1) == []
    problems = notebook_run.notebook_problems(notebook, notebook_run.MAX_NOTEBOOK_BYTES)
    assert problems and "over the limit of 2 MB" in problems[0]


def write_notebook(path: Path, *sources: str) -> Path:
    notebook = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}, "language_info": {"name": "python"}},
        cells=[nbformat.v4.new_markdown_cell("# A generated notebook")]
        + [nbformat.v4.new_code_cell(source) for source in sources])
    nbformat.write(notebook, path)
    return path


@pytest.mark.slow
def test_the_runner_stores_clean_outputs_and_records_the_run(tmp_path):
    pytest.importorskip("nbclient")
    source = write_notebook(
        tmp_path / "01_generated.ipynb",
        "print('setup')",
        "import os\nprint('profile', os.environ['SEG_PROFILE'])",
        "from tqdm.auto import tqdm\nfor _ in tqdm(range(50), desc='steps'):\n    pass",
        "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(4, 3))\n"
        "ax.plot([0, 1], [1, 0])",
        "6 * 7")
    before = source.read_text()
    out, record = tmp_path / "stored", tmp_path / "report_run.json"
    result = notebook_run.run_notebooks([source], "smoke", out_dir=out, record=record,
                                        timeout=300, failed_dir=tmp_path / "failed")

    assert result["failed"] == [] and source.read_text() == before, "the source stays as it was"
    stored = out / source.name
    notebook = json.loads(stored.read_text())
    assert notebook_run.notebook_problems(notebook, stored.stat().st_size) == []
    outputs = [cell["outputs"] for cell in notebook["cells"] if cell["cell_type"] == "code"]
    first = "".join("".join(output.get("text", "")) for output in outputs[0])
    summary = result["hardware"]["summary"]
    assert first.startswith("setup\n") and "smoke profile" in first and summary in first
    assert (result["git_commit"] or "unknown") in first
    assert "".join(outputs[1][0]["text"]) == "profile smoke\n"
    assert outputs[2] == [], f"the progress bar was stored: {outputs[2]}"
    figure = next(o for o in outputs[3] if "image/png" in o.get("data", {}))
    width, height = Image.open(io.BytesIO(base64.b64decode(figure["data"]["image/png"]))).size
    assert width <= 4 * notebook_run.FIGURE_DPI and height <= 3 * notebook_run.FIGURE_DPI, \
        f"a 4x3-inch figure stored at {width}x{height} px"
    assert "".join(outputs[4][0]["data"]["text/plain"]) == "42"

    saved = json.loads(record.read_text())
    assert saved["profile"] == "smoke" and saved["hardware"]["summary"] == summary
    assert saved["notebooks"][0]["notebook"] == source.name
    assert saved["notebooks"][0]["status"] == "stored"
    assert 0 < saved["notebooks"][0]["seconds"] <= saved["total_seconds"]


@pytest.mark.slow
def test_a_failing_notebook_leaves_the_committed_file_as_it_was(tmp_path, capsys):
    pytest.importorskip("nbclient")
    failing = write_notebook(tmp_path / "02_failing.ipynb", "print('setup')",
                             "assert 1 + 1 == 3, 'arithmetic is broken'", "print('never')")
    before = failing.read_bytes()
    record = tmp_path / "report_run.json"
    result = notebook_run.run_notebooks([failing], "quick", record=record, timeout=300,
                                        failed_dir=tmp_path / "failed")
    assert failing.read_bytes() == before, "a failing notebook must be left as it was"
    assert result["failed"] == [failing.name]
    entry = json.loads(record.read_text())["notebooks"][0]
    assert entry["status"] == "failed" and "arithmetic is broken" in entry["error"]
    assert (tmp_path / "failed" / failing.name).is_file(), "the executed copy is kept for a look"
    assert f"{failing}" in capsys.readouterr().err


def test_the_runner_refuses_an_unknown_profile_and_a_missing_notebook(tmp_path, capsys):
    assert notebook_run.main([str(tmp_path / "missing.ipynb")]) == 2
    assert "missing.ipynb" in capsys.readouterr().err
    existing = write_notebook(tmp_path / "03_x.ipynb", "1")
    assert notebook_run.main([str(existing), "--profile", "fast"]) == 2
    assert "'fast' is not a profile" in capsys.readouterr().err


# --------------------------------------------------------------------------- the lessons


def test_no_notebook_prints_source_code():
    for path in NOTEBOOKS:
        printed = "getsource" in path.read_text()
        assert not printed, f"{path.name} prints source code with inspect.getsource"


def test_the_lessons_are_written_in_cells():
    mini = "\n".join(cells(ROOT / "notebooks" / "04_mini_unet.ipynb", "code"))
    for written in ("def double_conv(", "class MiniUNet(nn.Module)", "torch.cat([upsample(x), skip]",
                    "package.net.state_dict()", "load_state_dict("):
        assert written in mini, f"notebook 04 does not write {written!r}"
    transfer = "\n".join(cells(ROOT / "notebooks" / "03_transfer_learning.ipynb", "code"))
    for written in ("def training_step(", "F.cross_entropy(", "ignore_index=IGNORE_INDEX",
                    "loss.backward()", "optimizer.step()", "scheduler.step()",
                    "torch.bincount(", "def iou_and_dice(", "metrics.per_image_mean_iou(",
                    "metrics.ConfusionMatrix("):
        assert written in transfer, f"notebook 03 does not write {written!r}"


def test_notebooks_03_and_04_share_calls_not_cells():
    transfer, mini = (ROOT / "notebooks" / "03_transfer_learning.ipynb",
                      ROOT / "notebooks" / "04_mini_unet.ipynb")
    for kind in ("code", "markdown"):
        shared = set(cells(transfer, kind)[1:]) & set(cells(mini, kind)[1:])  # past the setup
        assert not shared, f"{kind} cells copied between 03 and 04: {sorted(shared)}"
    for path in (transfer, mini):
        assert "experiment.report_model(" in "\n".join(cells(path, "code")), path.name


@pytest.mark.parametrize("path", MAIN_NOTEBOOKS, ids=lambda path: path.stem)
def test_main_notebook_ends_with_exercises(path):
    last = cells(path, "markdown")[-1]
    assert last.startswith("## Exercises") and last.count("\n1. ") == 1, path.name


# --------------------------------------------------------------------------- notebook 06's demo


@pytest.fixture(scope="module")
def predictor(smoke_checkpoint):
    from helpers.predict import Predictor

    return Predictor(smoke_checkpoint, runtime="torch")


def upright_size(path: Path) -> tuple[int, int]:
    """(height, width) of a photo as displayed, from its header and EXIF orientation."""
    from helpers.imageio import EXIF_ORIENTATION, oriented_size

    with Image.open(path) as image:
        return oriented_size(image.size[::-1], image.getexif().get(EXIF_ORIENTATION, 1))


@pytest.mark.slow
def test_upload_handler_segments_a_campus_photo_and_a_camvid_image(predictor, campus_dir,
                                                                   camvid_dir):
    photo = campus_dir / "UNH_DL_55.jpg"
    frame = sorted((camvid_dir / "test").glob("*.png"))[0]
    # ipywidgets 8 hands over a tuple of dicts, ipywidgets 7 (Colab) a dict by file name.
    new = ({"name": photo.name, "type": "image/jpeg", "size": photo.stat().st_size,
            "content": memoryview(photo.read_bytes())},)
    old = {frame.name: {"metadata": {"name": frame.name}, "content": frame.read_bytes()}}
    results = widgets.handle_upload(predictor, new) + widgets.handle_upload(predictor, old)
    assert [r.name for r in results] == [photo.name, frame.name]
    for result, path in zip(results, (photo, frame), strict=True):
        assert result.error is None, result.error
        prediction = result.prediction
        assert prediction.mask.shape == upright_size(path), path.name
        direct = predictor.predict_file(path, overlay_max_side=widgets.DISPLAY_MAX_SIDE)
        assert np.array_equal(prediction.mask, direct.mask), "the handler must give the predictor's mask"
        assert abs(prediction.shares.sum() - 1) < 1e-9
        shares = result.shares()
        # Each share is rounded to 0.01: their sum may pass 100 by half a step per class.
        total = shares["share (%)"].sum()
        assert shares["share (%)"].is_monotonic_decreasing and 99 <= total <= 100 + 0.005 * len(shares)
        colours = {tuple(c) for c in predictor.classes.colors}
        sample = result.colour_mask[:: max(1, prediction.height // 50), :: max(1, prediction.width // 50)]
        assert {tuple(c) for c in sample.reshape(-1, 3)} <= colours, "the mask is drawn in class colours"
        assert max(result.overlay.shape[:2]) <= widgets.DISPLAY_MAX_SIDE
        assert len(result.figure().axes) == 3


def test_upload_handler_names_a_file_that_is_not_a_photo(predictor):
    broken, empty = widgets.handle_upload(predictor, ({"name": "notes.txt", "content": b"hello"},
                                                      {"name": "empty.jpg", "content": b""}))
    assert broken.prediction is None and broken.error.startswith("notes.txt: ")
    assert "Upload a JPEG" in broken.error
    assert empty.error == "empty.jpg: the file is empty (0 bytes)"


def test_the_upload_widget_calls_the_handler(predictor, camvid_dir, monkeypatch):
    pytest.importorskip("ipywidgets")
    shown = []
    monkeypatch.setattr(widgets, "show", shown.append)
    box = widgets.upload_widget(predictor)
    upload = next(child for child in box.children if type(child).__name__ == "FileUpload")
    frame = sorted((camvid_dir / "test").glob("*.png"))[0]
    upload.value = ({"name": frame.name, "type": "image/png", "size": frame.stat().st_size,
                     "last_modified": datetime.now(UTC), "content": memoryview(frame.read_bytes())},)
    assert [result.name for result in shown] == [frame.name]
    assert shown[0].prediction.mask.shape == (360, 480)


def get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as answer:
        return answer.status, answer.read()


@pytest.mark.slow
def test_the_web_app_serves_its_page_on_127_0_0_1(predictor, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objects: shown.extend(objects))
    first = widgets.open_webapp(predictor)
    try:
        assert first.url.startswith("http://127.0.0.1:") and first.port > 0
        status, page = get(first.url + "/")
        assert status == 200 and b"<form" in page and b'name="image"' in page
        assert json.loads(get(first.url + "/healthz")[1])["model"] == predictor.model_name
        assert first.url in shown[0].data, "the notebook shows a link to the app"
        second = widgets.open_webapp(predictor, show_link=False)
        assert not first.running and second.running, "opening another stops the previous one"
        assert get(second.url + "/healthz")[0] == 200
    finally:
        first.stop()
        widgets._running.get("app") and widgets._running["app"].stop()
    assert not second.running
    with pytest.raises(urllib.error.URLError):
        get(second.url + "/healthz")


def test_on_colab_the_web_app_opens_through_the_port_proxy(monkeypatch):
    calls = []
    output = types.ModuleType("google.colab.output")
    output.serve_kernel_port_as_window = lambda port, **kw: calls.append(("window", port, kw))
    output.serve_kernel_port_as_iframe = lambda port, **kw: calls.append(("iframe", port, kw))
    colab = types.ModuleType("google.colab")
    colab.output = output
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    monkeypatch.setattr("helpers.webapp.create_app", lambda source: ("app", source))

    class FakeServer:
        """Stands in for the background server: no socket is opened."""

        def __init__(self, app):
            self.app, self.port, self.url, self.running = app, 8123, "http://127.0.0.1:8123", True

        def stop(self):
            self.running = False

    monkeypatch.setattr(widgets, "WebApp", FakeServer)
    monkeypatch.setattr(widgets, "_running", {})
    displayed = []
    monkeypatch.setattr("IPython.display.display", lambda *objects: displayed.extend(objects))

    assert widgets.in_colab()
    window = widgets.open_webapp("best.pt")
    assert window.app == ("app", "best.pt")
    assert calls == [("window", 8123, {"path": "/", "anchor_text": "Open the web app in a new tab"})]
    inline = widgets.open_webapp("best.pt", iframe_height=720)
    assert not window.running, "the previous app is stopped"
    assert calls[1] == ("iframe", 8123, {"path": "/", "height": "720"}) and inline.running
    assert displayed == [], "on Colab no 127.0.0.1 link is shown: the browser cannot reach it"


def test_nbval_runs_copies_without_the_stored_outputs(tmp_path):
    """make test runs nbval on copies without outputs: nbval refuses the committed notebooks'
    stored outputs, which have no execution counts."""
    import nbformat

    from helpers.notebook_run import without_outputs

    source = ROOT / "notebooks" / "03_transfer_learning.ipynb"
    [copy] = without_outputs([source], tmp_path / "nbval")
    original, stripped = nbformat.read(source, 4), nbformat.read(copy, 4)
    assert copy.name == source.name
    assert [c.source for c in stripped.cells] == [c.source for c in original.cells]
    code = [c for c in stripped.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
