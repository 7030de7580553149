"""Prediction: large-photo upsampling and tiling, photo decoding, the Predictor and its command line."""

from __future__ import annotations

import io
import json
import shutil

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from helpers import crf
from helpers.imageio import ImageTooLarge, decode_photo, read_image, resize_image, working_size
from helpers.inference import (
    predict_logits,
    predict_tiled,
    resize_labels_nearest,
    tile_positions,
    upsample_labels,
)
from helpers.predict import Predictor, collect_photos, main, output_stems

SMALL_CAMPUS = ("UNH_DL_55.jpg", "UNH_DL_64.jpg")  # 1814x2419, the smallest photos


@pytest.fixture(scope="module")
def predictor(smoke_checkpoint):
    return Predictor(smoke_checkpoint, runtime="torch")


def smooth_scores(num_classes, height, width, seed=0, noise=0.1):
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, num_classes, max(1, height // 6), max(1, width // 6), generator=generator)
    scores = F.interpolate(3 * coarse, size=(height, width), mode="bilinear")[0]
    return scores + noise * torch.randn(num_classes, height, width, generator=generator)


def full_interpolation_labels(scores, size):
    return F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0].argmax(0).numpy()


@pytest.mark.parametrize("shape, size", [
    ((11, 120, 90), (1000, 750)),   # phone-photo upscale (8.3x)
    ((5, 7, 9), (30, 41)),          # odd sizes
    ((4, 1, 9), (20, 31)),          # a single source row
    ((6, 40, 50), (13, 17)),        # downsampling
    ((3, 16, 16), (16, 16)),        # same size
])
def test_upsample_labels_equals_full_bilinear_argmax(shape, size):
    for scores in (smooth_scores(*shape), torch.randn(shape)):  # smooth, and noise at every pixel
        labels = upsample_labels(scores, size, band_rows=64)
        reference = full_interpolation_labels(scores, size)
        assert labels.shape == size and labels.dtype == np.uint8
        assert (labels == reference).mean() >= 0.9999


def test_upsample_labels_handles_third_class_between_two_rows():
    # Rows 0 and 1 are won by classes 0 and 1; class 2 wins in the middle of the blend.
    scores = torch.tensor([[[4.0], [0.0]], [[0.0], [4.0]], [[3.0], [3.0]]])
    labels = upsample_labels(scores, (40, 1))
    reference = full_interpolation_labels(scores, (40, 1))
    np.testing.assert_array_equal(labels, reference)
    assert set(np.unique(labels)) == {0, 1, 2}


def test_resize_labels_nearest_keeps_labels():
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    resized = resize_labels_nearest(labels, (6, 8))
    np.testing.assert_array_equal(resized, labels.repeat(2, 0).repeat(2, 1))


def test_working_size_keeps_aspect_and_never_enlarges():
    assert working_size(4032, 3024, 480) == (480, 360)
    assert working_size(3024, 4032, 480) == (360, 480)
    assert working_size(300, 200, 480) == (300, 200)
    assert working_size(10000, 1, 480) == (480, 1)


@pytest.mark.parametrize("length, tile, overlap", [(1000, 384, 0.25), (384, 384, 0.5), (385, 384, 0.25),
                                                    (100, 384, 0.25), (960, 256, 0.5)])
def test_tile_positions_cover_with_overlap(length, tile, overlap):
    positions = tile_positions(length, tile, overlap)
    covered = np.zeros(length, dtype=int)
    for start in positions:
        covered[start:start + tile] += 1
    assert covered.min() >= 1 and positions[0] == 0
    assert min(length, positions[-1] + tile) == length
    for first, second in zip(positions, positions[1:], strict=False):
        assert first + tile - second >= int(overlap * tile) - 1  # neighbours overlap


def test_predict_tiled_blends_to_the_whole_image_result_for_a_pixelwise_model():
    # A model whose output at a pixel depends only on that pixel: any tiling must give back
    # exactly the softmax of the whole image, so the Hann blending is correctly normalized.
    weights = torch.randn(5, 3)

    def pixelwise_logits(images):
        return torch.einsum("ck,nkhw->nchw", weights, images)

    image = torch.rand(3, 150, 230)
    tiled = predict_tiled(pixelwise_logits, image, tile=64, overlap=0.3, batch_size=3)
    whole = pixelwise_logits(image[None])[0].softmax(0)
    assert tiled.shape == (5, 150, 230)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def jpeg_bytes(width, height, orientation=1, mode="RGB"):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((width, height)).convert(mode)
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif, quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation, expected", [(1, (1500, 2000)), (6, (2000, 1500)), (8, (2000, 1500))])
def test_decode_photo_draft_decodes_small_but_reports_full_oriented_size(orientation, expected):
    data = jpeg_bytes(2000, 1500, orientation)
    image, full_size = decode_photo(data, max_side=400)
    assert full_size == expected
    assert 400 <= max(image.shape[:2]) < 1000  # a 1/2 or 1/4 scale decode, not full size
    assert (image.shape[0] > image.shape[1]) == (expected[0] > expected[1])
    reference = read_image(data)  # the project's reader: full decode with EXIF orientation
    assert reference.shape[:2] == expected


@pytest.mark.parametrize("mode", ["CMYK", "L"])
def test_decode_photo_draft_converts_cmyk_and_grayscale_jpegs(mode):
    image, full_size = decode_photo(jpeg_bytes(2000, 1500, mode=mode), max_side=400)
    assert full_size == (1500, 2000)
    assert image.dtype == np.uint8 and image.shape[2] == 3 and 400 <= image.shape[1] < 1000
    reference = read_image(jpeg_bytes(2000, 1500, mode=mode))
    small = cv2.resize(reference, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - image.astype(int)).mean() < 8  # the same picture


def test_decode_photo_refuses_bad_input():
    with pytest.raises(ValueError, match="empty"):
        decode_photo(b"")
    with pytest.raises(ValueError, match="not an image"):
        decode_photo(b"this is not an image")
    with pytest.raises(ValueError, match="cannot be decoded"):
        decode_photo(jpeg_bytes(400, 300)[:3000])
    with pytest.raises(ImageTooLarge, match="limit"):
        decode_photo(jpeg_bytes(400, 300), max_pixels=100_000)
    with pytest.raises(ImageTooLarge, match="limit"):  # the one decoder: the same guard
        read_image(jpeg_bytes(400, 300), max_pixels=100_000)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_read_image_is_a_full_decode_of_decode_photo(orientation):
    data = jpeg_bytes(300, 200, orientation)
    image, full_size = decode_photo(data)
    np.testing.assert_array_equal(read_image(data), image)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    np.testing.assert_array_equal(image, np.asarray(upright))
    assert image.shape[:2] == full_size


def test_predictor_resize_mode_equals_full_resolution_pipeline(predictor, camvid_dir):
    image = read_image(sorted((camvid_dir / "test").glob("*.png"))[0])
    image = np.ascontiguousarray(image.repeat(2, 0).repeat(2, 1))  # 720x960, like a larger photo
    prediction = predictor.predict(image, max_side=480)
    assert prediction.mask.shape == (720, 960) and prediction.working_size == (360, 480)
    # The naive pipeline: the same network input, logits upsampled at full size, argmax.
    working = torch.from_numpy(cv2.resize(image, (480, 360), interpolation=cv2.INTER_AREA))
    working = working.permute(2, 0, 1)[None].float() / 255
    logits = predict_logits(predictor.model, working, predictor.dtype)[0]
    reference = full_interpolation_labels(logits, (720, 960))
    assert (prediction.mask == reference).mean() >= 0.999
    counts = np.bincount(prediction.mask.ravel(), minlength=11) / prediction.mask.size
    np.testing.assert_allclose(prediction.shares, counts)
    assert abs(prediction.shares.sum() - 1) < 1e-9


@pytest.mark.parametrize("tile", [None, 256])
def test_predictor_on_a_campus_photo_gives_a_full_size_mask(predictor, campus_dir, tile):
    path = campus_dir / SMALL_CAMPUS[0]
    with Image.open(path) as photo:
        width, height = photo.size
    prediction = predictor.predict_file(path, overlay_max_side=800, tile=tile)
    assert prediction.mask.shape == (height, width) and prediction.mask.dtype == np.uint8
    assert prediction.mask.max() < predictor.classes.num_classes
    assert prediction.mode == ("tile" if tile else "resize")
    assert max(prediction.working_size) == (960 if tile else 480)
    assert max(prediction.image.shape[:2]) < max(height, width)  # decoded at reduced scale
    assert prediction.inference_ms > 0 and prediction.total_ms >= prediction.inference_ms
    overlay = prediction.overlay(800)
    assert overlay.shape == (800, 600, 3) and overlay.dtype == np.uint8
    plain = prediction.overlay(800, legend=False)
    assert (overlay[:40, :40] != plain[:40, :40]).any()  # the legend is drawn top-left
    np.testing.assert_array_equal(overlay[-100:, -100:], plain[-100:, -100:])


def test_predictor_is_thread_safe(predictor, camvid_dir):
    from concurrent.futures import ThreadPoolExecutor

    images = [read_image(p) for p in sorted((camvid_dir / "test").glob("*.png"))[:3]]
    sequential = [predictor.predict(image).mask for image in images]
    with ThreadPoolExecutor(6) as pool:
        parallel = list(pool.map(lambda image: predictor.predict(image).mask, images * 2))
    for index, mask in enumerate(parallel):
        np.testing.assert_array_equal(mask, sequential[index % 3])


def test_crf_refines_at_working_scale_and_upsamples_nearest(predictor, camvid_dir):
    image = read_image(sorted((camvid_dir / "test").glob("*.png"))[1])
    big = np.ascontiguousarray(image.repeat(2, 0).repeat(2, 1))
    refined = predictor.predict(big, crf=True)
    assert refined.crf and refined.mask.shape == (720, 960)
    # The CRF runs on the network's softmax at the working scale (360x480, the checkpoint's
    # parameters as they are), and its labels are upsampled nearest to the photo's size.
    working = resize_image(big, working_size(720, 960, 480))
    probabilities = crf.softmax_probabilities(predictor.model, working, predictor.dtype)
    labels = crf.refine(working, probabilities, predictor.crf_params().for_size(360, 480))
    np.testing.assert_array_equal(refined.mask, labels.repeat(2, 0).repeat(2, 1))


def test_collect_photos_and_unique_output_names(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.jpg", "a/y.PNG", "a/notes.txt", "x.png"):
        (tmp_path / name).write_bytes(b"")
    photos = collect_photos([str(tmp_path / "a"), str(tmp_path / "x.png")])
    assert [p.name for p in photos] == ["x.jpg", "y.PNG", "x.png"]
    assert output_stems(photos) == ["x", "y", "x-2"]
    with pytest.raises(FileNotFoundError):
        collect_photos([str(tmp_path / "missing.jpg")])


def test_command_line_processes_a_folder_and_skips_a_bad_file(smoke_checkpoint, campus_dir,
                                                             tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in SMALL_CAMPUS:
        shutil.copy(campus_dir / name, photos / name)
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "out"
    status = main([str(photos), "--checkpoint", str(smoke_checkpoint), "--out", str(out),
                   "--json", "--no-progress"])
    assert status == 1  # one file failed, the others were written
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] == 1 and len(report["photos"]) == 3
    failed = [p for p in report["photos"] if "error" in p]
    assert len(failed) == 1 and failed[0]["file"].endswith("broken.jpg")
    for name in SMALL_CAMPUS:
        stem = name.rsplit(".", 1)[0]
        entry = next(p for p in report["photos"] if p["file"].endswith(name))
        with Image.open(campus_dir / name) as photo:
            size = photo.size
        with Image.open(out / f"{stem}_mask.png") as mask:
            assert mask.mode == "L" and mask.size == size
            assert np.asarray(mask).max() < 11
        with Image.open(out / f"{stem}_overlay.jpg") as overlay:
            assert overlay.mode == "RGB" and max(overlay.size) == 1600
        assert (entry["width"], entry["height"]) == size
        assert abs(sum(entry["shares"].values()) - 1) < 1e-3


def test_command_line_tile_mode_and_text_output(smoke_checkpoint, campus_dir, tmp_path, capsys):
    photo = campus_dir / SMALL_CAMPUS[1]
    status = main([str(photo), "--checkpoint", str(smoke_checkpoint), "--out", str(tmp_path),
                   "--tile", "256", "--overlay-max-side", "0"])
    assert status == 0
    printed = capsys.readouterr().out
    assert photo.name in printed and "%" in printed
    with Image.open(photo) as original, Image.open(tmp_path / f"{photo.stem}_overlay.jpg") as overlay:
        assert overlay.size == original.size  # --overlay-max-side 0: full size


def test_command_line_reports_missing_inputs(smoke_checkpoint, tmp_path, capsys):
    assert main([str(tmp_path / "missing.jpg"), "--checkpoint", str(smoke_checkpoint),
                 "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main([str(tmp_path), "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_command_line_names_a_file_outside_the_photo_formats_and_goes_on(smoke_checkpoint,
                                                                         campus_dir, tmp_path,
                                                                         capsys):
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\n")
    photo = campus_dir / SMALL_CAMPUS[0]
    status = main([str(scan), str(photo), "--checkpoint", str(smoke_checkpoint), "--out",
                   str(tmp_path / "out"), "--no-progress"])
    assert status == 1  # the photo was predicted, the PDF reported
    err = capsys.readouterr().err
    assert (f"{scan}: skipped: a PDF document, not an image in an accepted format: use a JPEG, "
            "PNG, WebP, TIFF, BMP, GIF or MPO file\n") in err
    assert (tmp_path / "out" / f"{photo.stem}_mask.png").is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"{photo.stem}_mask.png", f"{photo.stem}_overlay.jpg"]  # no temporary files left
