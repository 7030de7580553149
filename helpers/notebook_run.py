"""Execute the notebooks and store their outputs in them: the notebook step of ``make report``.

A reader sees every curve, table and figure on GitHub, nbviewer or Colab before running
anything, because the committed notebooks carry the outputs of the report run. This module
produces them::

    python -m helpers.notebook_run notebooks/01_data_prep.ipynb ... [--profile quick]

Each notebook is executed top to bottom with nbclient (working folder ``notebooks/``,
``SEG_PROFILE`` set) and its outputs are cleaned before they are stored:

* no execution counts, no per-cell timings, no widget state, and the notebook's metadata
  exactly as committed (no interpreter version or other machine-specific field);
* no progress-bar noise: tqdm's widget bars (``tqdm.auto`` with ipywidgets installed) and its
  text bars are removed, and so is every other widget view (a widget needs a live kernel);
* figures at screen resolution: the kernel's matplotlib draws inline figures at
  :data:`FIGURE_DPI`, and a large PNG (photos, predicted masks) is stored with a dithered
  256-colour palette (the report's PNG files in ``figures/`` keep their own dpi and colours);
* paths under the repository are written relative to it, and paths under the home folder
  from ``~``;
* the first code cell's output names the profile, the hardware and the commit it ran on.

A notebook is written (atomically, through :mod:`helpers.files`) only when every cell ran and
the cleaned file is under :data:`MAX_NOTEBOOK_BYTES`; otherwise the file is left exactly as it
was, the executed copy is kept under ``build/notebooks/`` for a look at the error, and the run
goes on with the next notebook and exits with status 1. Per-notebook and total seconds, the
hardware, the commit and the profile go to ``results/report_run.json``.

In the smoke profile (CI) the executed notebooks and the record go under ``build/smoke/``,
never over the committed ones.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from .config import PROFILE_ENV, PROFILE_NAMES, get_profile, output_dir, project_path
from .files import write_json, write_text
from .provenance import clean_json, git_commit, hardware

# Each stored notebook stays under this size (GitHub renders notebooks up to a few MB, and
# every regeneration of the report adds the notebooks' size to the repository's history).
MAX_NOTEBOOK_BYTES = 2_000_000
# Inline figures at screen resolution: matplotlib's figure.dpi in the executing kernel.
FIGURE_DPI = 80
# Inline PNGs larger than this are stored with a 256-colour palette when that is smaller.
PALETTE_PNG_ABOVE = 100_000
# The notebook-level metadata a stored notebook may carry (what Jupyter and Colab need).
NOTEBOOK_METADATA_KEYS = {"kernelspec", "language_info", "colab", "accelerator"}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# A tqdm bar as text: "desc:  45%|████▌     | 41/91 [00:10<00:12, 4.0it/s]" or "12it [00:01, ...]".
PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*[\d.]+[kMG]?/[\d.?]+[kMG]?|\d+(?:\.\d+)?[kMG]?it \[\d")
STAMP_PREFIX = "Outputs stored by make report:"


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def _screen_text(text: str) -> str:
    """Return what a terminal shows of a stream: each line as its last carriage return left it."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _without_progress_bars(text: str) -> str:
    kept, after_warning = [], False
    for line in _screen_text(text).split("\n"):
        # tqdm's warning without ipywidgets, and the source line Python prints under it
        if "IProgress not found" in line or (after_warning and line.startswith("  ")):
            after_warning = "IProgress not found" in line
            continue
        after_warning = False
        if not PROGRESS_BAR.search(line):
            kept.append(line)
    return "\n".join(kept)


def _relative_paths(text: str, root: str) -> str:
    text = text.replace(root + os.sep, "").replace(root, ".")
    return text.replace(str(Path.home()) + os.sep, "~" + os.sep)  # e.g. caches under the home


def smaller_png(encoded: str) -> str:
    """Return a base64 PNG of at most 256 colours when that is smaller (photos: about 1/3).

    Line plots are left as they are; figures of photos and predicted masks, whose millions of
    colours make large PNGs, keep their look with a dithered palette.
    """
    import base64
    import io

    from PIL import Image

    data = base64.b64decode(encoded)
    if len(data) <= PALETTE_PNG_ABOVE:
        return encoded
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    palette = image.quantize(256, method=Image.Quantize.FASTOCTREE,
                             dither=Image.Dither.FLOYDSTEINBERG)
    buffer = io.BytesIO()
    palette.save(buffer, "PNG", optimize=True)
    if buffer.tell() >= len(data):
        return encoded
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def clean_outputs(outputs: list, root: str | None = None) -> list:
    """Return a code cell's outputs without progress bars, widget views and execution counts.

    ``root`` (the repository's absolute path) is removed from paths in text outputs.
    """
    cleaned = []
    for output in outputs:
        output = copy.deepcopy(output)
        kind = output.get("output_type")
        if kind == "stream":
            text = _without_progress_bars(_text(output.get("text")))
            if root:
                text = _relative_paths(text, root)
            if not text.strip():
                continue
            output["text"] = text
        elif kind in ("display_data", "execute_result"):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                continue  # a widget (progress bar, upload form) is alive only in a running kernel
            if "image/png" in data:
                data["image/png"] = smaller_png(_text(data["image/png"]).replace("\n", ""))
            if root:
                for mime in ("text/plain", "text/html", "text/markdown"):
                    if mime in data:
                        data[mime] = _relative_paths(_text(data[mime]), root)
            if kind == "execute_result":
                output["execution_count"] = None
            output.get("metadata", {}).pop("application/vnd.jupyter.widget-view+json", None)
        elif kind == "error":
            output["traceback"] = [_relative_paths(line, root) if root else line
                                   for line in output.get("traceback", [])]
        cleaned.append(output)
    return cleaned


def clean_notebook(notebook, metadata: dict | None = None, root: str | None = None):
    """Return a copy of an executed notebook ready to commit (see the module docstring).

    ``metadata`` is the notebook-level metadata to keep (the committed file's); by default the
    notebook's own, less every key outside :data:`NOTEBOOK_METADATA_KEYS` and the interpreter
    details of ``language_info``.
    """
    notebook = copy.deepcopy(notebook)
    if metadata is None:
        metadata = {k: v for k, v in notebook.get("metadata", {}).items()
                    if k in NOTEBOOK_METADATA_KEYS}
        if "language_info" in metadata:
            metadata["language_info"] = {"name": metadata["language_info"].get("name", "python")}
    notebook["metadata"] = copy.deepcopy(metadata)
    for cell in notebook["cells"]:
        for key in ("execution", "widgets"):
            cell.get("metadata", {}).pop(key, None)
        if cell["cell_type"] == "code":
            cell["execution_count"] = None
            cell["outputs"] = clean_outputs(cell.get("outputs", []), root)
    return notebook


def notebook_problems(notebook, size: int | None = None) -> list[str]:
    """Return what keeps a notebook from being committed, one line each ([] when clean).

    Checks: execution counts, per-cell timings or widget state, machine-specific notebook
    metadata, widget views and progress bars among the outputs, and ``size`` (the file's bytes)
    over :data:`MAX_NOTEBOOK_BYTES`.
    """
    problems = []
    if size is not None and size >= MAX_NOTEBOOK_BYTES:
        problems.append(f"{size / 1e6:.2f} MB, over the limit of {MAX_NOTEBOOK_BYTES / 1e6:.0f} MB")
    metadata = notebook.get("metadata", {})
    if extra := sorted(set(metadata) - NOTEBOOK_METADATA_KEYS):
        problems.append(f"notebook metadata {extra}")
    if extra := sorted(set(metadata.get("language_info", {})) - {"name"}):
        problems.append(f"interpreter details in language_info: {extra}")
    for index, cell in enumerate(notebook.get("cells", [])):
        where = f"cell {index}"
        if extra := sorted({"execution", "widgets"} & set(cell.get("metadata", {}))):
            problems.append(f"{where}: metadata {extra}")
        if cell["cell_type"] != "code":
            continue
        if cell.get("execution_count") is not None:
            problems.append(f"{where}: execution count {cell['execution_count']}")
        for output in cell.get("outputs", []):
            if output.get("execution_count") is not None:
                problems.append(f"{where}: an output with execution count")
            if WIDGET_VIEW in output.get("data", {}):
                problems.append(f"{where}: a widget view (its state is not stored)")
            text = _text(output.get("text")) if output.get("output_type") == "stream" else ""
            if PROGRESS_BAR.search(_screen_text(text)) or "IProgress not found" in text:
                problems.append(f"{where}: a progress bar in the {output.get('name')} stream")
    return problems


def stamp(notebook, line: str):
    """Append ``line`` to the outputs of the notebook's first code cell (replacing an earlier one)."""
    cell = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
    cell["outputs"] = [output for output in cell.get("outputs", [])
                       if not _text(output.get("text")).startswith(STAMP_PREFIX)]
    cell["outputs"].append({"output_type": "stream", "name": "stdout", "text": line + "\n"})
    return notebook


def provenance_line(profile: str, commit: str | None, machine: dict) -> str:
    """Return the first cell's note: the profile, hardware and commit the outputs came from."""
    return (f"{STAMP_PREFIX} the {profile} profile on {machine['summary']}, "
            f"commit {commit or 'unknown'}")


def _kernel_environment(folder: Path, profile: str) -> dict:
    rc = folder / "matplotlibrc"
    rc.write_text(f"figure.dpi: {FIGURE_DPI}\n")
    return {PROFILE_ENV: profile, "MATPLOTLIBRC": str(rc),
            # The package of this checkout, whatever the kernel's interpreter has installed.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(project_path()),
                                                        os.environ.get("PYTHONPATH")]))}


def execute(path: Path, profile: str, timeout: float | None = None,
            kernel_name: str = "python3"):
    """Execute a notebook in its folder with ``SEG_PROFILE=profile``; return it executed.

    Raises nbclient's errors (``CellExecutionError`` and others) on the first failing cell;
    the partly executed notebook is then the exception's ``notebook`` attribute.
    """
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in (PROFILE_ENV, "MATPLOTLIBRC", "PYTHONPATH")}
    with tempfile.TemporaryDirectory() as folder:
        os.environ.update(_kernel_environment(Path(folder), profile))
        client = nbclient.NotebookClient(
            notebook, timeout=timeout, kernel_name=kernel_name, record_timing=False,
            store_widget_state=False, resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except Exception as error:
            error.notebook = notebook
            raise
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return notebook


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    # nbclient's message ends with the exception's own line ("AssertionError: ...").
    return (lines[-1] if lines else type(error).__name__)[:300]


def run_notebooks(paths: list[Path], profile: str, out_dir: Path | None = None,
                  record: Path | None = None, timeout: float | None = None,
                  kernel_name: str = "python3", failed_dir: Path | None = None) -> dict:
    """Execute notebooks, store each clean one, and return (and write) the run's record.

    ``out_dir`` None stores the outputs in the notebooks themselves, except in the smoke
    profile, whose notebooks go to ``build/smoke/notebooks``. ``record`` defaults to
    ``report_run.json`` in :func:`helpers.config.output_dir` ``("results", profile)``; the
    executed copy of a notebook that failed goes to ``failed_dir`` (``build/notebooks``).
    """
    import nbformat

    if out_dir is None and profile == "smoke":
        out_dir = project_path("build", "smoke", "notebooks")
    record = record or output_dir("results", profile) / "report_run.json"
    failed_dir = Path(failed_dir) if failed_dir else project_path("build", "notebooks")
    root = str(project_path())
    commit, machine = git_commit(), hardware()
    line = provenance_line(profile, commit, machine)
    entries, started = [], time.perf_counter()
    for path in paths:
        path = Path(path)
        target = (Path(out_dir) / path.name) if out_dir else path
        print(f"== {path} ({profile} profile)", flush=True)
        original = path.read_text(encoding="utf-8")
        metadata = nbformat.reads(original, as_version=4).metadata
        begun = time.perf_counter()
        entry = {"notebook": path.name}
        try:
            executed = execute(path.resolve(), profile, timeout, kernel_name)
        except Exception as error:  # any failure: the stored notebook stays as it was
            entry |= {"status": "failed", "seconds": round(time.perf_counter() - begun, 1),
                      "error": _first_line(error)}
            partial = getattr(error, "notebook", None)
            kept = ""
            if partial is not None:
                write_text(failed_dir / path.name, nbformat.writes(partial))
                kept = f"; the executed copy with the error is {failed_dir / path.name}"
            print(f"{path}: failed ({entry['error']}); {target} is left as it was{kept}",
                  file=sys.stderr, flush=True)
            entries.append(entry)
            continue
        seconds = time.perf_counter() - begun
        notebook = nbformat.from_dict(stamp(clean_notebook(executed, metadata, root), line))
        text = nbformat.writes(notebook)
        size = len(text.encode("utf-8"))
        entry |= {"seconds": round(seconds, 1), "bytes": size}
        if problems := notebook_problems(notebook, size):
            entry |= {"status": "failed", "error": "; ".join(problems)}
            write_text(failed_dir / path.name, text)
            print(f"{path}: not stored ({entry['error']}); {target} is left as it was; the "
                  f"executed copy is {failed_dir / path.name}", file=sys.stderr, flush=True)
        else:
            entry["status"] = "stored"
            mode = target.stat().st_mode & 0o777 if target.is_file() else 0o644
            write_text(target, text)
            os.chmod(target, mode)  # the temporary file's 0600 would hide it from other users
            print(f"{target}: stored, {seconds:.0f} s, {size / 1e6:.2f} MB", flush=True)
        entries.append(entry)
    data = {"profile": profile, "git_commit": commit, "hardware": machine,
            "total_seconds": round(time.perf_counter() - started, 1),
            "notebooks": entries,
            "failed": [entry["notebook"] for entry in entries if entry["status"] != "stored"]}
    write_json(record, clean_json(data))
    print(f"{len(entries) - len(data['failed'])} of {len(entries)} notebooks stored in "
          f"{data['total_seconds'] / 60:.1f} min; record: {record}", flush=True)
    return data


def without_outputs(paths: list[Path], out_dir: Path) -> list[Path]:
    """Write copies of notebooks with their stored outputs removed into ``out_dir``; return them.

    What ``make test`` executes with nbval: nbval refuses a stored output without an execution
    count ("Unrun reference cell has outputs"), and the committed notebooks keep the report's
    outputs without counts. The copies are otherwise the notebooks, cell for cell.
    """
    import nbformat

    copies = []
    for path in map(Path, paths):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        copies.append(write_text(Path(out_dir) / path.name, nbformat.writes(notebook)))
    return copies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.notebook_run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path, help="the .ipynb files, in order")
    parser.add_argument("--profile", default=None,
                        help=f"smoke, quick or full (default: ${PROFILE_ENV}, else quick)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the executed notebooks here instead of in place "
                             "(the smoke profile's default: build/smoke/notebooks)")
    parser.add_argument("--record", type=Path, default=None,
                        help="the run's record (default: results/report_run.json)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds one cell may run (default: no limit)")
    parser.add_argument("--kernel", default="python3", help="the Jupyter kernel to run")
    parser.add_argument("--without-outputs", type=Path, default=None, metavar="DIR",
                        help="only write copies of the notebooks without their outputs into DIR "
                             "(what make test runs nbval on), and exit")
    args = parser.parse_args(argv)
    if missing := [str(p) for p in args.notebooks if not p.is_file()]:
        print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.without_outputs:
        for copy in without_outputs(args.notebooks, args.without_outputs):
            print(copy)
        return 0
    profile = args.profile or get_profile()
    if profile not in PROFILE_NAMES:
        print(f"error: --profile {profile!r} is not a profile; choose one of {sorted(PROFILE_NAMES)}",
              file=sys.stderr)
        return 2
    result = run_notebooks(args.notebooks, profile, args.out, args.record, args.timeout,
                           args.kernel)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
