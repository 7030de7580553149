"""Peak memory of the web app under concurrent worst-case uploads.

Starts the real server (``python -m helpers.webapp --checkpoint CKPT``) on a free port of
127.0.0.1, sends it one ordinary campus photo (so that every library it loads lazily is
loaded: the idle server), then, case by case, sends N identical uploads at once and reads the
server's peak resident set size (``VmHWM`` of its process, reset before each case). The cases
are files that are small on disk but large decoded: a 16-bit PNG of 7700x7700 (the 115 KB
file that took +1.4 GB before), 16-bit RGBA and 1-bit PNGs, a float TIFF and a TIFF in one
strip, a GIF, a run-length BMP, lossless WebPs and progressive JPEGs of large dimensions, a
30000x30000 decompression bomb; the last round sends N different worst cases at once.

Target: N = 4 concurrent worst cases add at most 1 GB (1024 MiB) over the idle server, and
every answer is a normal 200, or a 413 or 415 with a message.

    python benchmarks/upload_memory.py --checkpoint runs/quick/unet-effnet-lite0/best.pt
        [--concurrent 4] [--cases png16_gray_7700 ...] [--no-mix] [--files build/upload_memory]
        [--runtime torch] [--save]

The files are generated once into ``--files`` (about 10 MB in all). ``--save`` writes
``results/benchmark_upload_memory.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the web app runs

import argparse
import http.client
import json
import signal
import struct
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path

from load_webapp import free_port, start_server  # the same server, started the same way
from PIL import Image

from helpers.config import project_path
from helpers.data import find_campus
from helpers.provenance import hardware

TARGET_MB = 1024


# --------------------------------------------------------------------------- the files


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, channels: int) -> bytes:
    """A PNG of zeros written row by row (never held decoded here): ``bit_depth`` bits per
    sample, ``colour_type`` 0 (gray) or 6 (RGBA) with ``channels`` samples per pixel."""
    row = b"\x00" * (1 + (width * channels * bit_depth + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body)
            + _png_chunk(b"IEND", b""))


def rle8_bmp(width: int, height: int) -> bytes:
    """An 8-bit run-length-encoded BMP of zeros: a few bytes a row whatever its width."""
    runs = b"\xff\x00" * (width // 255) + (bytes([width % 255, 0]) if width % 255 else b"")
    pixels = (runs + b"\x00\x00") * height + b"\x00\x01"
    palette = b"\x00" * 1024
    offset = 14 + 40 + len(palette)
    return (b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
            + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835,
                          256, 0) + palette + pixels)


def _saved(image: Image.Image, fmt: str, **options):
    def write(path: Path) -> None:
        image.save(path, fmt, **options)
    return write


CASES = {
    # name: (description, how to write it)
    "png16_gray_7700": ("16-bit grayscale PNG, 7700x7700",
                        lambda p: p.write_bytes(raw_png(7700, 7700, 16, 0, 1))),
    "png16_rgba_7700": ("16-bit RGBA PNG, 7700x7700",
                        lambda p: p.write_bytes(raw_png(7700, 7700, 16, 6, 4))),
    "png1_7745": ("1-bit PNG, 7745x7745 (just under 60 MP)",
                  lambda p: p.write_bytes(raw_png(7745, 7745, 1, 0, 1))),
    "tiff_float_7700": ("32-bit float TIFF, 7700x7700, deflate",
                        lambda p: _saved(Image.new("F", (7700, 7700)), "TIFF",
                                         compression="tiff_adobe_deflate")(p)),
    "tiff_one_strip_5400": ("RGB TIFF in one strip, 5400x5400, deflate",
                            lambda p: _saved(Image.new("RGB", (5400, 5400)), "TIFF",
                                             compression="tiff_adobe_deflate",
                                             strip_size=5400 * 5400 * 3)(p)),
    "gif_7745": ("GIF, 7745x7745", lambda p: _saved(Image.new("P", (7745, 7745)), "GIF")(p)),
    "bmp_rle_7745": ("run-length BMP, 7745x7745", lambda p: p.write_bytes(rle8_bmp(7745, 7745))),
    "webp_4000": ("lossless WebP, 4000x4000",
                  lambda p: _saved(Image.new("RGB", (4000, 4000), (9, 9, 9)), "WEBP",
                                   lossless=True)(p)),
    "webp_7745": ("lossless WebP, 7745x7745",
                  lambda p: _saved(Image.new("RGB", (7745, 7745), (9, 9, 9)), "WEBP",
                                   lossless=True)(p)),
    "progressive_jpeg_6000": ("progressive JPEG 4:4:4, 6000x6000",
                              lambda p: _saved(Image.new("RGB", (6000, 6000), (90, 120, 150)),
                                               "JPEG", progressive=True, subsampling=0)(p)),
    "progressive_jpeg_7700": ("progressive JPEG 4:4:4, 7700x7700",
                              lambda p: _saved(Image.new("RGB", (7700, 7700), (90, 120, 150)),
                                               "JPEG", progressive=True, subsampling=0)(p)),
    "bomb_png_30000": ("1-bit PNG, 30000x30000 (a decompression bomb)",
                       lambda p: p.write_bytes(raw_png(30000, 30000, 1, 0, 1))),
}
# Sent together in the last round: the heaviest accepted file of each decoder.
MIX = ("png16_rgba_7700", "tiff_float_7700", "webp_4000", "progressive_jpeg_6000")


def case_files(folder: Path, names) -> dict[str, Path]:
    """Return the file of each case, written into ``folder`` the first time."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in names:
        path = folder / name
        if not path.is_file():
            print(f"  writing {path} ({CASES[name][0]})", flush=True)
            partial = folder / f".{name}.part"
            CASES[name][1](partial)
            partial.replace(path)
        files[name] = path
    return files


# --------------------------------------------------------------------------- the server


def memory_mb(pid: int, field: str) -> float:
    """Return ``VmRSS`` or ``VmHWM`` (peak) of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def reset_peak(pid: int) -> None:
    """Reset the kernel's peak-RSS counter of a process to its current RSS (Linux)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def upload(port: int, path: Path) -> tuple[int, float, str]:
    """POST a file to /api/predict; return the status, the seconds taken and the message."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()
    body += path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    try:
        connection.request("POST", "/api/predict", body=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    elapsed = time.perf_counter() - start
    message = ""
    if response.status != 200:
        message = json.loads(payload).get("error", "")
    return response.status, elapsed, message


def concurrent_uploads(port: int, paths: list[Path]) -> list[tuple[int, float, str]]:
    """Send the files at once (one thread each, released together); return their answers."""
    answers: list = [None] * len(paths)
    barrier = threading.Barrier(len(paths))

    def client(index: int) -> None:
        barrier.wait()
        try:
            answers[index] = upload(port, paths[index])
        except (OSError, http.client.HTTPException) as error:
            answers[index] = (0, 0.0, f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a best.pt (a smoke one will do)")
    parser.add_argument("--concurrent", type=int, default=4, help="uploads sent at once")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--files", default=str(project_path("build", "upload_memory")),
                        help="folder of the generated files")
    parser.add_argument("--threads", type=int, default=4, help="waitress worker threads")
    parser.add_argument("--runtime", default="auto", help="the server's --runtime")
    parser.add_argument("--no-mix", action="store_true",
                        help="skip the last round (different worst cases at once)")
    parser.add_argument("--save", action="store_true",
                        help="write results/benchmark_upload_memory.json")
    args = parser.parse_args(argv)

    machine = hardware()
    print(f"CPU: {machine['summary']}; {os.cpu_count()} logical CPUs, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    files = case_files(Path(args.files), sorted(set(args.cases) | (set() if args.no_mix else set(MIX))))
    ordinary = sorted(find_campus().glob("*.jpg"))[0]
    port = free_port()
    print(f"starting python -m helpers.webapp --checkpoint {args.checkpoint} --threads "
          f"{args.threads} --runtime {args.runtime} on port {port}", flush=True)
    server = start_server(args.checkpoint, port, args.threads, args.runtime, timeout=300)
    rows, failures = [], []
    try:
        started = memory_mb(server.pid, "VmRSS")
        status, seconds, _ = upload(port, ordinary)  # loads what the first request loads
        assert status == 200, f"{ordinary.name}: HTTP {status}"
        time.sleep(1)
        idle = memory_mb(server.pid, "VmRSS")
        print(f"server RSS: {started:.0f} MiB after start, {idle:.0f} MiB idle after one "
              f"ordinary photo ({ordinary.name}, {seconds:.1f} s)\n")
        rounds = [(name, [files[name]] * args.concurrent) for name in args.cases]
        if not args.no_mix:
            rounds.append(("mix of " + ", ".join(MIX), [files[n] for n in MIX][: args.concurrent]))
        rounds.insert(0, (f"ordinary photo {ordinary.name}", [ordinary] * args.concurrent))
        print(f"{'case':<34} {'file':>9} {'answers':<16} {'peak RSS':>9} {'added':>7} "
              f"{'slowest':>8}")
        for name, paths in rounds:
            reset_peak(server.pid)
            answers = concurrent_uploads(port, paths)
            peak = memory_mb(server.pid, "VmHWM")
            statuses = sorted({a[0] for a in answers})
            codes = ", ".join(f"{sum(a[0] == s for a in answers)}x{s}" for s in statuses)
            size = sum(p.stat().st_size for p in paths) / len(paths)
            label = name if len(name) <= 34 else name[:31] + "..."
            print(f"{label:<34} {size / 1e3:>7.0f}KB {codes:<16} {peak:>6.0f}MiB "
                  f"{peak - idle:>+5.0f}MiB {max(a[1] for a in answers):>7.1f}s", flush=True)
            for message in sorted({a[2] for a in answers if a[2]}):
                print(f"    {message}")
            bad = [a for a in answers if a[0] not in (200, 413, 415)
                   or (a[0] != 200 and not a[2])]
            if bad or peak - idle > TARGET_MB:
                failures.append(name)
            rows.append({"case": name, "statuses": [a[0] for a in answers],
                         "peak_mb": round(peak, 1), "added_mb": round(peak - idle, 1),
                         "slowest_s": round(max(a[1] for a in answers), 2)})
            time.sleep(0.5)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    worst = max(rows, key=lambda row: row["added_mb"])
    print(f"\nworst: {worst['case']}, +{worst['added_mb']:.0f} MiB over the idle server "
          f"({idle:.0f} MiB) with {args.concurrent} at once; target +{TARGET_MB} MiB: "
          + ("met" if not failures else "NOT met: " + ", ".join(failures)))
    if args.save:
        from helpers.report import write_result

        write_result("benchmark_upload_memory", {
            "summary": {"concurrent": args.concurrent, "idle MiB": round(idle),
                        "worst added MiB": round(worst["added_mb"]), "worst case": worst["case"]},
            "rounds": rows, "checkpoint": args.checkpoint}, "benchmark")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
