"""Released weights: the report's trained models as small files, downloaded instead of retrained.

A notebook opened alone on Colab gets a fresh machine, with no run of notebook 03 on it. Rather
than train the transfer U-Net again (17 minutes on a CPU, the full profile's 80 epochs on a
GPU), :func:`checkpoint_for` takes, in this order:

1. a finished local run of exactly this configuration (``make report`` trains it in 03 and 04);
2. the released weights of the profile's own configuration of the model, when published;
3. training here, with a sentence saying why the first two were not used.

The weights are GitHub release assets of the project's repository (``docs/colab.md`` says why
there and not the Hugging Face Hub): one safetensors file per model, parameters in float16 and
BatchNorm statistics in float32 (under 10 MB for the EfficientNet-Lite0 networks), whose header
holds the checkpoint's description (model, classes, configuration, metrics) and the training
history. The manifest ``helpers/released_weights.json`` ships inside the package: the release
tag every file is pinned to, and per file the model, profile, classes, test mIoU, hardware,
commit, SHA-256 and size. A download resumes where an interrupted one stopped (an HTTP range
request; a server that ignores it sends the whole file again), is refused when its SHA-256
differs, and is converted once into the project's checkpoint format in the cache
(:func:`helpers.runtime.cache_dir`), which :func:`helpers.checkpoint.load_model` reads
weights-only like any other checkpoint. ``SEG_RELEASE_URL`` points the downloads at a mirror or
a local folder of the assets (``file:///path/``).

Command line::

    python -m helpers.hub pack --profile quick     # make release: build/release/TAG/ + manifest
    python -m helpers.hub list                     # what the manifest offers
    python -m helpers.hub fetch --model unet-effnet-lite0 --profile quick
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from .config import Config, load_config, project_path
from .errors import InputError
from .files import write_json
from .runtime import cache_dir

MANIFEST = "released_weights.json"
MANIFEST_FORMAT = "campus-segmentation-released-weights/1"
REPOSITORY = "segmentation-study/campus-segmentation"
RELEASE_URL = "https://github.com/{repository}/releases/download/{tag}/"
BASE_URL_ENV = "SEG_RELEASE_URL"
RELEASED_MODELS = ("unet-effnet-lite0", "mini-unet", "deeplabv3plus-effnet-lite0")
# Fields that change where or how fast a run goes, not the weights it ends with, and the
# quick profile's per-machine time budget: ignored when released weights stand in for a run.
NOT_IN_THE_WEIGHTS = ("train_minutes", "time_budget", "runs_dir", "num_workers", "cache_images")


class ReleasedWeightsError(InputError):
    """A released weight file that is unpublished, unreachable, damaged or not of this model."""


# -- the manifest ---------------------------------------------------------------------------

def empty_manifest(tag: str | None = None) -> dict:
    """Return a manifest listing no files, pinned to ``tag``."""
    return {"format": MANIFEST_FORMAT, "repository": REPOSITORY, "tag": tag, "assets": []}


def read_manifest(path: str | Path | None = None) -> dict:
    """Return the released-weights manifest (by default the one shipped in the package)."""
    if path is None:
        from importlib.resources import files

        text = files("helpers").joinpath(MANIFEST).read_text()
    else:
        text = Path(path).read_text()
    manifest = json.loads(text)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ReleasedWeightsError(f"{path or MANIFEST}: not a {MANIFEST_FORMAT} manifest")
    return manifest


def asset_url(manifest: dict, entry: dict) -> str:
    """Return the URL of a released file: ``$SEG_RELEASE_URL`` + name, else the pinned release's."""
    base = os.environ.get(BASE_URL_ENV) or RELEASE_URL.format(repository=manifest["repository"],
                                                               tag=manifest["tag"])
    return base.rstrip("/") + "/" + entry["file"]


def _differences(ours: dict, theirs: dict, ignored: set[str]) -> list[str]:
    keys = [k for k in {**theirs, **ours} if k not in ignored]
    return [f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in keys
            if theirs.get(k) != ours.get(k)]


def run_differences(config: Config, saved: Config | dict, ignored=NOT_IN_THE_WEIGHTS) -> list[str]:
    """Return how ``config`` differs from a saved run's configuration (``field: saved -> ours``).

    A run the time budget planned (``time_budget`` set) counts as its table row's: the epochs
    compared are those it was planned from (``table_epochs``), not those it trained.
    """
    from .runs import run_identity

    ours, theirs = run_identity(config), run_identity(saved)
    records = [(c.to_dict() if isinstance(c, Config) else c).get("time_budget") for c in (config, saved)]
    skip = set(ignored)
    if any(records):  # compare the epochs of the table row each side was planned from
        skip.add("epochs")
        mine, its = (record.get("table_epochs", record.get("profile_epochs")) if record else identity.get("epochs")
                     for record, identity in zip(records, (ours, theirs), strict=True))
        if None not in (mine, its) and mine != its:
            return [f"epochs: {its!r} -> {mine!r}"]
    return _differences(ours, theirs, skip)


def released_entry(config: Config, manifest: dict | None = None) -> tuple[dict | None, str]:
    """Return ``(entry, "")``: the released file standing in for ``config``, or ``(None, why not)``.

    Released weights stand in for the configuration they were trained with (the time budget's
    planning aside). The full profile, while only quick-profile weights of a model are released,
    gets those when its configuration is the full profile's own (its epochs aside). The smoke
    profile trains in seconds and has none.
    """
    manifest = manifest or read_manifest()
    tag = manifest.get("tag") or "not yet published"
    if config.profile == "smoke":
        return None, "the smoke profile trains in seconds, so no weights are released for it"
    entries = {e["profile"]: e for e in manifest["assets"] if e["model"] == config.model}
    entry = entries.get(config.profile)
    if entry is not None:
        differences = run_differences(config, entry["config"])
        if not differences:
            return entry, ""
        return None, (f"the released {config.model} weights ({tag}) are of another configuration "
                      f"({_shown(differences)})")
    if config.profile == "full" and "quick" in entries:
        own = run_differences(config, load_config("full", config.model),
                              ignored=(*NOT_IN_THE_WEIGHTS, "epochs"))
        if not own:
            return entries["quick"], ""
        return None, (f"this configuration is not the full profile's own ({_shown(own)}), and "
                      f"only quick-profile weights of {config.model} are released")
    return None, f"no {config.profile}-profile weights of {config.model} are released ({tag})"


def _shown(differences: list[str]) -> str:
    return "; ".join(differences[:4]) + ("; ..." if len(differences) > 4 else "")


# -- a local run of this configuration --------------------------------------------------------

def report_config(model: str, profile: str | None = None) -> Config:
    """Return the configuration the report trains a model with in a profile (default
    ``$SEG_PROFILE``): its row of :data:`helpers.config.RECIPES`, before the time budget's plan."""
    return load_config(profile, model)


def finished_run(config: Config) -> Path | None:
    """Return the best checkpoint of a finished local run of ``config``, or None.

    Looks where :func:`helpers.train.ensure_trained` keeps runs (the default folder and its
    ``@hash`` siblings); a run the time budget planned from ``config`` counts as ``config``'s.
    """
    from .runs import run_dir, saved_run_config

    folder = run_dir(config)
    for candidate in [folder, *sorted(folder.parent.glob(f"{folder.name}@*"))]:
        if not ((candidate / "done.json").is_file() and (candidate / "best.pt").is_file()):
            continue
        saved = saved_run_config(candidate)
        if saved is not None and not run_differences(config, saved, ignored=("tensorboard", "runs_dir")):
            return candidate / "best.pt"
    return None


def train_here(config: Config, progress: bool = True) -> Path:
    """Train ``config`` on this machine (or resume or reuse its run) and return its best checkpoint.

    The one place where :func:`checkpoint_for` trains: through
    :func:`helpers.budget.plan_run` (which fits a quick-profile run's epochs to its time budget
    on a CPU, and prints what it decided) and :func:`helpers.train.ensure_trained`.
    """
    from .budget import plan_run
    from .train import ensure_trained

    return ensure_trained(plan_run(config, progress=progress), progress=progress)


def checkpoint_for(config: Config, use_released: bool = True,
                   progress: bool = True) -> tuple[Path, str]:
    """Return ``(checkpoint, sentence)``: the checkpoint to use for ``config`` and which it is.

    A finished local run of exactly this configuration first, else (with ``use_released``) the
    released weights, else training here (:func:`train_here`), after printing why.
    """
    local = finished_run(config)
    if local is not None:
        return local, f"Using the run trained on this machine: {local}."
    if not use_released:
        reason = "released weights were not asked for"
    else:
        entry, reason = released_entry(config)
        if entry is not None:
            try:
                path = fetch(entry, progress=progress)
            except (OSError, ReleasedWeightsError) as error:
                reason = f"the released weights could not be used ({error})"
            else:
                return path, (f"Using the released weights of {entry['model']} ({entry['profile']} "
                              f"profile, test mIoU {entry['test_miou']:.3f}, trained on "
                              f"{entry['hardware']} at commit {entry['commit']}): {path}.")
    print(f"Training {config.model} ({config.profile} profile) here: {reason}.", flush=True)
    path = train_here(config, progress)
    return path, f"Trained on this machine ({reason}): {path}."


# -- downloading ------------------------------------------------------------------------------

def sha256_of(path: str | Path) -> str:
    """Return the SHA-256 of a file (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: str | Path, sha256: str, size: int | None = None,
             progress: bool = True, timeout: float = 30) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, resuming a partial download; return ``dest``.

    The bytes arrive in ``dest``'s ``.part`` file, which an interrupted download leaves for the
    next call to continue (an HTTP range request; a server that ignores it sends the whole file
    and the download starts over). The finished file is renamed into place only when its
    SHA-256 (and ``size``) match; otherwise it is deleted and :class:`ReleasedWeightsError`
    raised. Network failures raise ``OSError`` (``urllib.error.URLError``).
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Appended to across calls, so not through helpers.files.atomic_write; the rename below
    # is what makes the finished file appear whole.
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is None or have < size:
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise ReleasedWeightsError(f"{url}: not published (HTTP 404)") from None
            raise
        with response:
            resumed = (have > 0 and response.status == 206 and response.headers
                       .get("Content-Range", "").startswith(f"bytes {have}-"))
            have = have if resumed else 0
            length = int(response.headers.get("Content-Length") or 0)
            with part.open("ab" if resumed else "wb") as out, \
                    tqdm(total=have + length or None, initial=have, unit="B", unit_scale=True,
                         desc=dest.name, disable=not progress) as bar:
                received = 0
                try:
                    while chunk := response.read(1 << 16):
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                except http.client.HTTPException:
                    pass  # the connection dropped mid-file: said below
                if length and received < length:
                    raise ConnectionError(f"{url}: download interrupted after {have + received} "
                                          f"of {have + length} bytes; run again to resume it")
    got, digest = part.stat().st_size, sha256_of(part)
    if digest != sha256 or (size is not None and got != size):
        part.unlink()
        raise ReleasedWeightsError(
            f"{url}: the download ({got} bytes, SHA-256 {digest[:12]}...) is not the released "
            f"file ({size} bytes, SHA-256 {sha256[:12]}...), so it was deleted; run again to "
            f"download it anew, or set {BASE_URL_ENV} to a folder holding the right file")
    os.replace(part, dest)
    return dest


def released_folder(manifest: dict, entry: dict) -> Path:
    """Return the cache folder of a released file and the checkpoint converted from it."""
    return cache_dir() / "released" / (manifest["tag"] or "unpublished") / Path(entry["file"]).stem


def fetch(entry: dict, manifest: dict | None = None, progress: bool = True) -> Path:
    """Return the project checkpoint of a released file, downloading and converting it once.

    The conversion writes ``best.pt`` (and the run's ``history.json``) into
    :func:`released_folder`; later calls return it at once.
    """
    manifest = manifest or read_manifest()
    folder = released_folder(manifest, entry)
    best = folder / "best.pt"
    if best.is_file() and (folder / "sha256").is_file() \
            and (folder / "sha256").read_text().strip() == entry["sha256"]:
        return best
    asset = download(asset_url(manifest, entry), folder / entry["file"], entry["sha256"],
                     entry.get("bytes"), progress=progress)
    unpack(asset, folder)
    from .files import write_text

    write_text(folder / "sha256", entry["sha256"] + "\n")
    asset.unlink()  # the checkpoint holds the same weights
    return best


# -- packing and unpacking --------------------------------------------------------------------

def _plain(value):
    """Tensors inside metrics and configurations as lists, so they fit in JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def pack_bytes(checkpoint: str | Path) -> bytes:
    """Return a checkpoint as a safetensors file: parameters in float16, buffers (BatchNorm
    statistics, the input normalization) as they are, its description and history in the header.
    """
    import torch
    from safetensors.torch import save

    from .checkpoint import read_checkpoint
    from .models import build_model

    payload = read_checkpoint(checkpoint)
    spec = payload["model"]
    # Which entries are parameters: a model of the same shape, built without its weights.
    model = build_model(spec["name"], spec["num_classes"], width=spec["width"], pretrained=False,
                        output_stride=spec.get("output_stride", 16), mean=tuple(spec["mean"]),
                        std=tuple(spec["std"]), decoder_channels=spec.get("decoder_channels"))
    parameters = {name for name, _ in model.named_parameters()}
    tensors = {name: (value.to(torch.float16) if name in parameters and value.is_floating_point()
                      else value).contiguous().clone()
               for name, value in payload["state_dict"].items()}
    description = {k: _plain(v) for k, v in payload.items()
                   if k not in ("state_dict", "training_state")}
    history_file = Path(checkpoint).parent / "history.json"
    history = json.loads(history_file.read_text()) if history_file.is_file() else []
    return save(tensors, metadata={"checkpoint": json.dumps(description),
                                   "history": json.dumps(history)})


def unpack(asset: str | Path, folder: str | Path) -> Path:
    """Convert a released safetensors file into ``folder/best.pt`` (the project's checkpoint
    format, float32) and ``folder/history.json``; return the checkpoint's path.

    Read with safetensors (tensors only: nothing in the file can run code). A file that is not
    a released checkpoint raises :class:`ReleasedWeightsError`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    from .checkpoint import FORMAT, save_checkpoint
    from .labels import ClassInfo
    from .models import build_model

    asset, folder = Path(asset), Path(folder)
    raw = asset.read_bytes()
    try:
        tensors = load(raw)
        header_length = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8:8 + header_length])["__metadata__"]
        description = json.loads(metadata["checkpoint"])
        history = json.loads(metadata.get("history", "[]"))
    except (SafetensorError, KeyError, ValueError) as error:
        raise ReleasedWeightsError(f"{asset}: not a released checkpoint ({error})") from None
    if description.get("format") != FORMAT:
        raise ReleasedWeightsError(f"{asset}: holds no checkpoint of this project")
    spec = description["model"]
    model = build_model(spec["name"], spec["num_classes"], width=spec["width"], pretrained=False,
                        output_stride=spec.get("output_stride", 16), mean=tuple(spec["mean"]),
                        std=tuple(spec["std"]), decoder_channels=spec.get("decoder_channels"))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in tensors.items()})
    config = Config.from_dict(description["config"])
    path = save_checkpoint(folder / "best.pt", model, config,
                           ClassInfo.from_dict(description["classes"]),
                           metrics=description.get("metrics"), epoch=description.get("epoch"),
                           world_size=description.get("world_size", 1),
                           precision=description.get("precision"))
    write_json(folder / "history.json", history)
    return path


def prediction_agreement(original: str | Path, released: str | Path, images: int = 8) -> dict:
    """Return how the released (float16-rounded) weights' predictions compare with the original's
    on ``images`` evenly spaced CamVid test images: pixel share with the same class, and the
    largest logit difference."""
    import torch

    from .checkpoint import load_model
    from .datasets import build_datasets
    from .inference import predict_logits

    first, info = load_model(original)
    second, _ = load_model(released)
    test = build_datasets(info["config"].replace(max_test_images=None))["test"]
    step = max(1, len(test) // images)
    same = total = 0
    largest = 0.0
    with torch.inference_mode():
        for index in range(0, step * images, step)[:images]:
            image = test[index][0][None]
            a = predict_logits(first, image, dtype=None)
            b = predict_logits(second, image, dtype=None)
            largest = max(largest, (a - b).abs().max().item())
            same += (a.argmax(1) == b.argmax(1)).sum().item()
            total += a[:, 0].numel()
    return {"images": images, "pixel_agreement": same / total, "max_logit_difference": largest}


def _result_for(checkpoint: Path, result: dict | None) -> dict | None:
    """The results entry when it was computed from this very checkpoint file."""
    from .report import checkpoint_of

    if not result or checkpoint_of(result).resolve() != checkpoint.resolve():
        return None
    stamp = result.get("checkpoint_mtime_ns")
    return result if stamp is None or stamp == checkpoint.stat().st_mtime_ns else None


def report_checkpoint(model: str, profile: str) -> tuple[Path | None, dict | None]:
    """Return the report's checkpoint of a model in a profile and its results entry (or None):
    the one ``results/<model>.json`` names, else the finished run ``make report`` trained."""
    from .report import checkpoint_of, read_results

    result = read_results(project_path("results")).get(model)
    if result and result.get("profile") == profile and checkpoint_of(result).is_file():
        return checkpoint_of(result), result
    return finished_run(report_config(model, profile)), None


def pack_entry(checkpoint: str | Path, out_dir: str | Path, result: dict | None = None,
               agreement_images: int = 8, progress: bool = True) -> dict:
    """Write a checkpoint's released file into ``out_dir`` and return its manifest entry.

    The test mIoU, hardware and commit come from ``result`` (``results/<model>.json``) when it
    was computed from this checkpoint; otherwise the checkpoint is scored on the test split
    here. With CamVid at hand the released weights' predictions are compared with the
    original's on ``agreement_images`` test images (0: not compared).
    """
    import tempfile

    from .checkpoint import read_checkpoint
    from .files import write_bytes
    from .provenance import git_commit, hardware

    checkpoint = Path(checkpoint)
    payload = read_checkpoint(checkpoint)
    config = Config.from_dict(payload["config"])
    result = _result_for(checkpoint, result)
    if result is not None:
        test_miou, commit = result["test"]["miou"], result.get("git_commit")
        scored_on = result.get("hardware", {}).get("summary")
    else:
        from .evaluate import evaluate_checkpoint

        if progress:
            print(f"{checkpoint}: no results entry of this file, scoring it on the test split")
        test_miou = evaluate_checkpoint(checkpoint, "test", progress=progress)["miou"]
        commit, scored_on = git_commit(), hardware()["summary"]
    name = f"{config.model}-{config.profile}.safetensors"
    asset = write_bytes(Path(out_dir) / name, pack_bytes(checkpoint))
    entry = {
        "file": name, "model": config.model, "profile": config.profile,
        "classes": [c["name"] for c in payload["classes"]["classes"]],
        "test_miou": round(float(test_miou), 4),
        "hardware": (payload.get("precision") or {}).get("hardware") or scored_on,
        "scored_on": scored_on, "commit": commit, "epoch": payload.get("epoch"),
        "sha256": sha256_of(asset), "bytes": asset.stat().st_size,
        "dtype": "float16 parameters, float32 buffers", "config": config.to_dict(),
    }
    if agreement_images:
        try:
            with tempfile.TemporaryDirectory() as folder:
                entry["agreement_with_float32"] = prediction_agreement(
                    checkpoint, unpack(asset, folder), agreement_images)
        except FileNotFoundError as error:  # no CamVid here: the comparison is left out
            print(f"{name}: predictions not compared ({error})")
    return entry


def release(profiles=("quick",), out: str | Path | None = None, tag: str | None = None,
            manifest_path: str | Path | None = None, checkpoints: dict | None = None,
            agreement_images: int = 8, progress: bool = True) -> dict:
    """Pack the report's trained models of ``profiles`` and write the manifest; return it.

    The files go to ``out/<tag>/`` (default ``build/release``), the manifest to
    ``manifest_path`` (default the package's ``helpers/released_weights.json``). ``tag``
    defaults to ``weights-<commit>``. ``checkpoints`` maps ``model`` or ``model@profile`` to a
    checkpoint to pack instead of the report's. Models without a finished run are skipped.
    """
    from .provenance import git_commit

    tag = tag or f"weights-{git_commit() or 'unversioned'}"
    folder = Path(out or project_path("build", "release")) / tag
    checkpoints = checkpoints or {}
    manifest = empty_manifest(tag) | {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    for profile in profiles:
        for model in RELEASED_MODELS:
            checkpoint, result = report_checkpoint(model, profile)
            given = checkpoints.get(f"{model}@{profile}") or checkpoints.get(model)
            if given:
                from .checkpoint import read_checkpoint

                checkpoint = Path(given)
                if read_checkpoint(checkpoint)["config"]["profile"] != profile:
                    if f"{model}@{profile}" in checkpoints:
                        raise ReleasedWeightsError(f"{checkpoint}: not a {profile}-profile run")
                    continue  # given for another of the profiles released
            if checkpoint is None or not checkpoint.is_file():
                print(f"{model} ({profile}): no finished run to release, skipped")
                continue
            entry = pack_entry(checkpoint, folder, result, agreement_images, progress)
            manifest["assets"].append(entry)
            agreement = entry.get("agreement_with_float32", {}).get("pixel_agreement")
            print(f"{entry['file']}: {entry['bytes'] / 1e6:.1f} MB, test mIoU "
                  f"{entry['test_miou']:.3f}, SHA-256 {entry['sha256'][:12]}..."
                  + (f", same class as float32 on {100 * agreement:.3f}% of test pixels"
                     if agreement is not None else ""))
    path = write_json(manifest_path or project_path("helpers", MANIFEST), manifest)
    print(f"manifest: {path}")
    if manifest["assets"]:
        print(f"publish: gh release create {tag} {folder}/*.safetensors --repo {REPOSITORY} "
              f"--title 'Trained weights {tag}' --notes 'python -m helpers.hub list'")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.hub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("pack", help="pack the report's models and write the manifest")
    pack.add_argument("--profile", action="append", default=None,
                      help="profile to release (repeatable; default quick)")
    pack.add_argument("--checkpoint", action="append", default=[], metavar="MODEL[@PROFILE]=PATH",
                      help="pack this checkpoint instead of the report's (repeatable)")
    pack.add_argument("--out", default=None, help="folder of the release files (build/release)")
    pack.add_argument("--tag", default=None, help="release tag (default weights-<commit>)")
    pack.add_argument("--manifest", default=None, help="manifest to write (the package's)")
    pack.add_argument("--agreement-images", type=int, default=8,
                      help="CamVid test images to compare float16 and float32 predictions on")
    commands.add_parser("list", help="print the released files of the package's manifest")
    fetch_parser = commands.add_parser("fetch", help="download a released model into the cache")
    fetch_parser.add_argument("--model", default="unet-effnet-lite0")
    fetch_parser.add_argument("--profile", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            given = dict(item.split("=", 1) for item in args.checkpoint)
            release(args.profile or ["quick"], args.out, args.tag, args.manifest, given,
                    args.agreement_images)
        elif args.command == "list":
            manifest = read_manifest()
            print(f"release {manifest['tag'] or '(none published yet: make release)'} of "
                  f"{manifest['repository']}")
            for e in manifest["assets"]:
                print(f"  {e['file']}: {e['model']}, {e['profile']} profile, test mIoU "
                      f"{e['test_miou']:.3f}, {e['bytes'] / 1e6:.1f} MB, {e['hardware']}")
        else:
            config = load_config(args.profile, args.model)
            entry, reason = released_entry(config)
            if entry is None:
                raise ReleasedWeightsError(reason)
            print(fetch(entry))
    except (InputError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
