"""The one atomic writer: whole files or none, unique temporary names, readable results."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from helpers import files


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "history.json"
    files.write_json(path, {"epoch": 1})
    with pytest.raises(RuntimeError), files.atomic_write(path) as handle:
        handle.write('{"epoch": 2, "loss"')
        raise RuntimeError("killed half-way")
    assert path.read_text() == '{\n  "epoch": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]


def test_concurrent_writers_never_share_a_temporary_file(tmp_path):
    path = tmp_path / "results.json"
    barrier = threading.Barrier(8)

    def writer(index):
        barrier.wait()
        for _ in range(20):
            files.write_text(path, f"writer {index}\n" * 1000)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = set(path.read_text().splitlines())
    assert len(lines) == 1 and lines.pop().startswith("writer ")  # one writer's whole file
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_written_files_get_the_usual_permissions_or_keep_their_own(tmp_path):
    fresh = files.write_bytes(tmp_path / "best.pt", b"weights")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~files._UMASK  # not mkstemp's 0600
    kept = tmp_path / "run.sh"
    kept.write_text("old")
    os.chmod(kept, 0o750)
    files.write_text(kept, "new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o750 and kept.read_text() == "new"


def test_only_whole_file_modes(tmp_path):
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"), files.atomic_write(tmp_path / "x", "a"):
        pass
