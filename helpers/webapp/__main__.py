"""Serve the web app with waitress: ``python -m helpers.webapp --checkpoint CKPT``.

Listens on 127.0.0.1:5000 by default (``--host 0.0.0.0`` to serve a network). Request bodies
up to the upload limit are buffered in memory, never in temporary files; larger ones are read
and discarded and get a 413 with a message (:mod:`helpers.webapp.server`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

# Idle OpenMP threads sleep instead of spinning: requests resize and upsample in parallel with
# the network, and spinning threads would starve them (see helpers.predict). Set before torch
# is imported (in main).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    from ..runtime import RUNTIMES  # imports torch: after the OpenMP setting above

    parser = argparse.ArgumentParser(prog="python -m helpers.webapp", description=__doc__)
    parser.add_argument("--checkpoint", required=True,
                        help="best.pt from helpers.train (or a .onnx file with --runtime onnx)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="auto: the fastest measured on this machine (timed once, cached); "
                             "torch, onnx or one of the timed variants forces it")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile'd variants (slower start, sometimes faster "
                             "requests)")
    parser.add_argument("--max-upload-mb", type=float, default=25.0,
                        help="larger request bodies get 413")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="larger images get 413 before decoding (default 60 million)")
    parser.add_argument("--max-decode-mb", type=float, default=None,
                        help="images whose decoding would take more memory get 413 before "
                             "decoding (default 256; photos decode one at a time)")
    parser.add_argument("--threads", type=int, default=4, help="waitress worker threads")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="CPU threads for the network (default: PyTorch's choice)")
    args = parser.parse_args(argv)

    import torch

    from ..imageio import DEFAULT_MAX_DECODE_BYTES
    from ..predict import DEFAULT_MAX_PIXELS, Predictor
    from .app import create_app
    from .server import make_server, return_freed_memory

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return_freed_memory()  # a request's peak memory does not stay resident after it
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    max_upload_bytes = int(args.max_upload_mb * 2**20)
    try:
        predictor = Predictor(args.checkpoint, runtime=args.runtime, compile=args.compile)
        predictor.warmup()
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    app = create_app(predictor, max_upload_bytes=max_upload_bytes,
                     max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
                     max_decode_bytes=(int(args.max_decode_mb * 2**20) if args.max_decode_mb
                                       else DEFAULT_MAX_DECODE_BYTES))
    server = make_server(app, host=args.host, port=args.port, threads=args.threads,
                         ident="campus-segmentation")
    info = predictor.describe()
    print(f"serving {predictor.model_name} ({info['runtime']}, {info['precision']}) on "
          f"http://{args.host}:{args.port}", flush=True)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
