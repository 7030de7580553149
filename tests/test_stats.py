import json

import numpy as np
import pytest

from helpers import data, stats


def test_streaming_stats_equal_numpy_on_camvid_images(camvid_dir):
    paths = [p for p, _ in data.camvid_pairs(camvid_dir, "train")[:12]]
    result = stats.channel_stats(paths)
    pixels = np.concatenate([data.read_image(p).reshape(-1, 3) for p in paths]) / 255.0
    np.testing.assert_allclose(result["mean"], pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(result["std"], pixels.std(0), rtol=1e-7)
    assert result["pixels"] == 12 * 360 * 480


def test_cli_prints_json(camvid_dir, capsys, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((4, 4, 3), [0, 128, 255], np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 4, 3), [255, 128, 0], np.uint8)).save(tmp_path / "b.png")
    assert stats.main(["--images", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["mean"] == pytest.approx([127.5 / 255, 128 / 255, 127.5 / 255])
    assert printed["std"] == pytest.approx([127.5 / 255, 0.0, 127.5 / 255])


def test_cache_is_reused_only_for_the_same_images(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((2, 2, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    paths = sorted(tmp_path.glob("*.png"))
    cache = tmp_path / "stats.json"
    first = stats.cached_stats(paths, cache)
    assert stats.cached_stats(paths, cache) == first
    assert stats.cached_stats(paths[:2], cache)["mean"] != first["mean"]
