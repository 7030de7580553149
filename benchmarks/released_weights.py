"""Time what a notebook opened alone pays for released weights instead of training.

Packs a checkpoint as ``make release`` does, serves the file over HTTP from 127.0.0.1, and times
:func:`helpers.hub.fetch` on an empty cache (download, SHA-256 check, conversion into the
checkpoint format), then again (cached), then loading the model. Prints the CPU and the file's
size: on Colab the download itself takes the size over the network's bandwidth, which is not
measured here.

    python benchmarks/released_weights.py --checkpoint runs/quick/unet-effnet-lite0/best.pt
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from helpers import hub
    from helpers.checkpoint import load_model, read_checkpoint
    from helpers.config import Config
    from helpers.provenance import git_commit, hardware

    print(f"{hardware()['summary']}, commit {git_commit()}")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        started = time.perf_counter()
        data = hub.pack_bytes(args.checkpoint)
        pack_s = time.perf_counter() - started
        model = Config.from_dict(read_checkpoint(args.checkpoint)["config"])
        name = f"{model.model}-{model.profile}.safetensors"
        (folder / "assets").mkdir()
        (folder / "assets" / name).write_bytes(data)
        entry = {"file": name, "model": model.model, "profile": model.profile,
                 "sha256": hub.sha256_of(folder / "assets" / name), "bytes": len(data)}
        manifest = hub.empty_manifest("weights-benchmark") | {"assets": [entry]}
        server = ThreadingHTTPServer(("127.0.0.1", 0),
                                     partial(QuietHandler, directory=str(folder / "assets")))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        os.environ[hub.BASE_URL_ENV] = f"http://127.0.0.1:{server.server_address[1]}/"
        original = Path(args.checkpoint).stat().st_size
        print(f"{name}: {len(data) / 1e6:.1f} MB (the checkpoint's weights: "
              f"{original / 1e6:.1f} MB), packed in {pack_s:.2f} s")
        for repeat in range(args.repeats):
            os.environ["SEG_CACHE_DIR"] = str(folder / f"cache{repeat}")
            started = time.perf_counter()
            best = hub.fetch(entry, manifest, progress=False)
            cold = time.perf_counter() - started
            started = time.perf_counter()
            hub.fetch(entry, manifest, progress=False)
            warm = time.perf_counter() - started
            started = time.perf_counter()
            load_model(best)
            load = time.perf_counter() - started
            print(f"run {repeat + 1}: download from 127.0.0.1, SHA-256 and conversion {cold:.2f} s; "
                  f"cached {1000 * warm:.1f} ms; load_model {load:.2f} s")
        server.shutdown()


if __name__ == "__main__":
    main()
