"""Released weights (helpers.hub): packing, the manifest, and downloads from a local HTTP server
(resumed, restarted, refused on a checksum mismatch), and which checkpoint a notebook gets."""

from __future__ import annotations

import json
import threading
import tomllib
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from helpers import hub
from helpers.checkpoint import load_model, read_checkpoint
from helpers.config import load_config

ROOT = Path(__file__).resolve().parents[1]


class AssetHandler(SimpleHTTPRequestHandler):
    """Serves a folder like a release host: byte ranges (206) unless the server ignores them, and
    optionally a connection that drops after ``cut`` bytes of a file."""

    def do_GET(self):  # noqa: N802 - http.server's name
        server = self.server
        path = Path(self.translate_path(self.path))
        server.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        wanted = self.headers.get("Range")
        if wanted and server.ranges:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut is not None:
            body, server.cut = body[:server.cut], None  # this response only
            self.close_connection = True
        self.wfile.write(body)
        server.sent.append(len(body))

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over ``tmp_path/assets`` (its ``base`` URL ends with a slash)."""
    folder = tmp_path / "assets"
    folder.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(AssetHandler, directory=str(folder)))
    httpd.folder, httpd.requests, httpd.sent, httpd.ranges, httpd.cut = folder, [], [], True, None
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def released(smoke_checkpoint, tmp_path_factory):
    """The smoke run packed as a release: ``(manifest, entry, file)``, scored on its test images
    and compared with the float32 predictions on two CamVid test images."""
    folder = tmp_path_factory.mktemp("release")
    entry = hub.pack_entry(smoke_checkpoint, folder, None, agreement_images=2, progress=False)
    manifest = hub.empty_manifest("weights-test") | {"assets": [entry]}
    return manifest, entry, folder / entry["file"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_released_file_is_small_and_converts_back_to_a_checkpoint_that_predicts_alike(
        released, smoke_checkpoint, tmp_path):
    from helpers.evaluate import evaluate_checkpoint

    manifest, entry, asset = released
    assert entry["bytes"] == asset.stat().st_size < 10e6  # float32 would be 15 MB
    assert entry["sha256"] == hub.sha256_of(asset)
    assert entry["classes"][:3] == ["sky", "building", "pole"] and len(entry["classes"]) == 11
    for field in ("model", "profile", "test_miou", "hardware", "commit"):
        assert entry[field] is not None, field
    assert entry["agreement_with_float32"]["pixel_agreement"] > 0.99

    best = hub.unpack(asset, tmp_path / "converted")
    assert read_checkpoint(best)["format"] == read_checkpoint(smoke_checkpoint)["format"]
    original, info = load_model(smoke_checkpoint)
    converted, converted_info = load_model(best)  # weights-only, like every checkpoint
    assert converted_info["config"] == info["config"]
    assert converted_info["classes"].names == info["classes"].names
    theirs, ours = original.state_dict(), converted.state_dict()
    assert theirs.keys() == ours.keys()
    for name, value in theirs.items():
        if name in dict(original.named_parameters()):  # rounded to float16 and back
            assert torch.allclose(value, ours[name], rtol=1e-3, atol=1e-4), name
        else:  # BatchNorm statistics and the input normalization: exact
            assert torch.equal(value, ours[name]), name
    assert json.loads((best.parent / "history.json").read_text()) == \
        json.loads((smoke_checkpoint.parent / "history.json").read_text())
    before = evaluate_checkpoint(smoke_checkpoint, "test", progress=False, runtime="torch-fp32")
    after = evaluate_checkpoint(best, "test", progress=False, runtime="torch-fp32")
    assert after["images"] == before["images"] and abs(after["miou"] - before["miou"]) < 0.01


def test_an_interrupted_download_resumes_where_it_stopped(released, server, tmp_path):
    _, entry, asset = released
    (server.folder / asset.name).write_bytes(asset.read_bytes())
    dest = tmp_path / "dl" / asset.name
    server.cut = entry["bytes"] // 3
    with pytest.raises(OSError, match="run again to resume"):
        hub.download(server.base + asset.name, dest, entry["sha256"], entry["bytes"], progress=False)
    part = dest.with_name(dest.name + ".part")
    assert part.stat().st_size == entry["bytes"] // 3 and not dest.exists()

    hub.download(server.base + asset.name, dest, entry["sha256"], entry["bytes"], progress=False)
    assert server.requests[-1]["range"] == f"bytes={entry['bytes'] // 3}-"
    assert server.sent[-1] == entry["bytes"] - entry["bytes"] // 3  # only the rest travelled
    assert hub.sha256_of(dest) == entry["sha256"] and not part.exists()


def test_a_server_that_ignores_the_range_gets_the_download_restarted(released, server, tmp_path):
    _, entry, asset = released
    (server.folder / asset.name).write_bytes(asset.read_bytes())
    server.ranges = False
    dest = tmp_path / "dl" / asset.name
    dest.parent.mkdir()
    dest.with_name(dest.name + ".part").write_bytes(asset.read_bytes()[:1000])
    hub.download(server.base + asset.name, dest, entry["sha256"], entry["bytes"], progress=False)
    assert server.requests[-1]["range"] == "bytes=1000-" and server.sent[-1] == entry["bytes"]
    assert dest.read_bytes() == asset.read_bytes()


def test_a_file_whose_checksum_differs_is_refused_and_nothing_is_kept(released, server, cache,
                                                                       monkeypatch):
    manifest, entry, asset = released
    damaged = bytearray(asset.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (server.folder / asset.name).write_bytes(bytes(damaged))
    monkeypatch.setenv(hub.BASE_URL_ENV, server.base)
    with pytest.raises(hub.ReleasedWeightsError, match="is not the released file.*deleted"):
        hub.fetch(entry, manifest, progress=False)
    folder = hub.released_folder(manifest, entry)
    assert not folder.exists() or list(folder.iterdir()) == []


def test_fetch_downloads_converts_and_caches_once(released, server, cache, monkeypatch):
    manifest, entry, asset = released
    (server.folder / asset.name).write_bytes(asset.read_bytes())
    monkeypatch.setenv(hub.BASE_URL_ENV, server.base)
    best = hub.fetch(entry, manifest, progress=False)
    assert best.is_relative_to(cache) and load_model(best)[1]["config"].model == entry["model"]
    assert not (best.parent / entry["file"]).exists()  # the checkpoint replaces the download
    requests = len(server.requests)
    assert hub.fetch(entry, manifest, progress=False) == best and len(server.requests) == requests


def _as_quick_release(manifest: dict, entry: dict) -> dict:
    """The manifest with the smoke run's file standing in for the quick profile's release (the
    file's content does not matter to which checkpoint is chosen; training one is 17 minutes)."""
    quick = entry | {"profile": "quick", "config": load_config("quick", entry["model"]).to_dict()}
    return manifest | {"assets": [quick]}


@pytest.fixture
def no_training(monkeypatch):
    """Records the configurations :func:`helpers.hub.checkpoint_for` would train."""
    trained = []

    def train_here(config, progress=True):
        trained.append(config)
        return Path("trained-here/best.pt")

    monkeypatch.setattr(hub, "train_here", train_here)
    return trained


def test_checkpoint_for_uses_the_released_weights_when_there_is_no_local_run(
        released, server, cache, monkeypatch, no_training, tmp_path):
    manifest, entry, asset = released
    (server.folder / asset.name).write_bytes(asset.read_bytes())
    monkeypatch.setenv(hub.BASE_URL_ENV, server.base)
    monkeypatch.setattr(hub, "read_manifest", lambda path=None: _as_quick_release(manifest, entry))
    config = load_config("quick", entry["model"], runs_dir=str(tmp_path / "runs"))
    path, sentence = hub.checkpoint_for(config, progress=False)
    assert path.is_relative_to(cache) and "released weights of unet-effnet-lite0" in sentence
    assert f"test mIoU {entry['test_miou']:.3f}" in sentence and entry["commit"] in sentence
    assert no_training == []
    # The full profile (a Colab GPU) gets the quick profile's weights while none of its own exist.
    assert hub.checkpoint_for(load_config("full", entry["model"], runs_dir=str(tmp_path / "runs")),
                              progress=False)[0] == path


def test_checkpoint_for_prefers_a_finished_local_run_of_exactly_this_configuration(
        smoke_run, no_training, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    config = load_config("smoke", "unet-effnet-lite0", runs_dir=str(runs))
    folder = runs / "smoke" / "unet-effnet-lite0"
    shutil.copytree(smoke_run.out_dir, folder)
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    path, sentence = hub.checkpoint_for(config, progress=False)
    assert path == folder / "best.pt" and "trained on this machine" in sentence
    (folder / "done.json").unlink()  # an unfinished run is not used: it is resumed by training
    assert hub.checkpoint_for(config, progress=False)[0] == Path("trained-here/best.pt")
    assert no_training == [config]


@pytest.mark.parametrize("situation", ["offline", "unpublished", "smoke", "changed", "not asked"])
def test_checkpoint_for_falls_back_to_training_with_the_reason(
        situation, released, server, cache, monkeypatch, no_training, tmp_path, capsys):
    manifest, entry, asset = released
    monkeypatch.setattr(hub, "read_manifest", lambda path=None: _as_quick_release(manifest, entry))
    base = server.base
    if situation == "offline":
        server.shutdown()
        server.server_close()  # nothing listens there any more
    monkeypatch.setenv(hub.BASE_URL_ENV, base)
    profile = "smoke" if situation == "smoke" else "quick"
    changes = {"epochs": 3} if situation == "changed" else {}
    config = load_config(profile, entry["model"], runs_dir=str(tmp_path / "runs"), **changes)
    path, sentence = hub.checkpoint_for(config, use_released=situation != "not asked",
                                        progress=False)
    assert path == Path("trained-here/best.pt") and no_training == [config]
    expected = {"offline": "could not be used (<urlopen error",
                "unpublished": "not published (HTTP 404)",
                "smoke": "the smoke profile trains in seconds",
                "changed": "are of another configuration (epochs: 16 -> 3)",
                "not asked": "released weights were not asked for"}[situation]
    assert expected in sentence and expected in capsys.readouterr().out
    assert not list(cache.rglob("*.safetensors*"))


def test_released_weights_stand_in_only_for_the_configuration_they_were_trained_with():
    quick = load_config("quick", "unet-effnet-lite0")
    entry = {"model": quick.model, "profile": "quick", "config": quick.replace(epochs=12).to_dict()}
    manifest = hub.empty_manifest("weights-old") | {"assets": [entry]}
    found, reason = hub.released_entry(quick, manifest)
    assert found is None and "are of another configuration (epochs: 12 -> 16)" in reason
    assert hub.released_entry(quick.replace(epochs=12), manifest)[0] is entry
    # A GPU's full profile gets the quick profile's weights, its own epochs aside.
    assert hub.released_entry(load_config("full", quick.model, epochs=20), manifest)[0] is entry
    found, reason = hub.released_entry(load_config("full", quick.model, lr=0.01), manifest)
    assert found is None and "not the full profile's own (lr: 0.001 -> 0.01)" in reason
    # The report trains each network with its row of RECIPES (DeepLabV3+ for 5 quick epochs).
    deeplab = hub.report_config("deeplabv3plus-effnet-lite0", "quick")
    assert deeplab == load_config("quick", deeplab.model) and deeplab.epochs == 5
    found, reason = hub.released_entry(load_config("quick", "mini-unet"), manifest)
    assert found is None and "no quick-profile weights of mini-unet are released (weights-old)" in reason


def test_a_run_the_time_budget_planned_counts_as_its_profile_configuration():
    quick = load_config("quick", "unet-effnet-lite0")
    planned = quick.replace(epochs=11, frozen_stages=2, validate_annealed_only=True,
                            time_budget={"table_epochs": 16, "train_minutes": 15.0})
    assert hub.run_differences(quick, planned.to_dict()) == []
    assert hub.run_differences(planned, quick) == []
    assert hub.run_differences(quick.replace(lr=2e-3), planned.to_dict()) == ["lr: 0.001 -> 0.002"]


def test_the_manifest_ships_with_the_package_and_describes_each_file():
    manifest = hub.read_manifest()
    assert manifest["repository"] == hub.REPOSITORY
    assert hub.REPOSITORY in (ROOT / "notebooks" / "01_data_prep.ipynb").read_text()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert hub.MANIFEST in package_data["package-data"]["helpers"]
    for entry in manifest["assets"]:
        assert {"file", "model", "profile", "classes", "test_miou", "hardware", "commit",
                "sha256", "bytes"} <= entry.keys(), entry["file"]
        assert entry["bytes"] < 10e6 and len(entry["sha256"]) == 64


def test_the_release_command_packs_a_given_checkpoint_and_writes_the_manifest(
        smoke_checkpoint, tmp_path, capsys, monkeypatch):
    # The repository's own runs (a notebook run of the smoke profile, say) are not packed here.
    monkeypatch.setattr(hub, "report_checkpoint", lambda model, profile: (None, None))
    manifest_path = tmp_path / "released_weights.json"
    status = hub.main(["pack", "--profile", "smoke", "--checkpoint",
                       f"unet-effnet-lite0={smoke_checkpoint}", "--out", str(tmp_path / "release"),
                       "--tag", "weights-test", "--manifest", str(manifest_path),
                       "--agreement-images", "0"])
    assert status == 0
    manifest = hub.read_manifest(manifest_path)
    [entry] = manifest["assets"]
    asset = tmp_path / "release" / "weights-test" / entry["file"]
    assert entry["sha256"] == hub.sha256_of(asset) and manifest["tag"] == "weights-test"
    out = capsys.readouterr().out
    assert "mini-unet (smoke): no finished run to release, skipped" in out
    assert "gh release create weights-test" in out
