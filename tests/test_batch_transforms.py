"""On-device batch augmentation: the same geometry as the CPU pipeline, labels never invented."""

import numpy as np
import pytest
import torch

from helpers.batch_transforms import DeviceBatches
from helpers.config import load_config
from helpers.data import IGNORE_INDEX, build_datasets


def _camvid_batches(count=4, **options):
    datasets = build_datasets(load_config("smoke"))
    pairs = [datasets["train"].load(i) for i in range(count)]
    images = torch.from_numpy(np.stack([image for image, _ in pairs]))
    masks = torch.from_numpy(np.stack([mask for _, mask in pairs]))
    return images, masks, DeviceBatches(images, masks, batch_size=count, **options)


def _find_window(source: np.ndarray, window: np.ndarray) -> bool:
    height, width = window.shape
    for y in range(source.shape[0] - height + 1):
        for x in range(source.shape[1] - width + 1):
            if np.array_equal(source[y:y + height, x:x + width], window):
                return True
    return False


def test_crops_without_rotation_or_rescale_are_exact_windows_of_the_source():
    images, masks, batches = _camvid_batches(crop_size=(64, 96), rotate_limit=0.0,
                                             generator=torch.Generator().manual_seed(0))
    out_images, out_masks = batches.augment(batches.images, batches.masks)
    assert out_images.shape == (4, 3, 64, 96) and out_masks.shape == (4, 64, 96)
    assert out_images.dtype == torch.float32 and out_masks.dtype == torch.int64
    for source, window in zip(masks.numpy(), out_masks.numpy(), strict=True):
        window = window.astype(np.uint8)
        assert _find_window(source, window) or _find_window(source, window[:, ::-1])


def test_flips_happen_about_half_the_time():
    _, _, batches = _camvid_batches(crop_size=(360, 480), rotate_limit=0.0,
                                    generator=torch.Generator().manual_seed(1))
    flips = 0
    for _ in range(10):
        _, out = batches.augment(batches.images, batches.masks)
        flips += sum(not torch.equal(o, m.long()) for o, m in zip(out, batches.masks, strict=True))
    assert 10 <= flips <= 30  # of 40 crops


def test_pixels_the_geometry_invents_are_ignored_and_black():
    _, masks, batches = _camvid_batches(crop_size=(352, 480), rotate_limit=30.0, scale_limit=0.5,
                                        generator=torch.Generator().manual_seed(2))
    invented = 0
    for _ in range(5):
        state = batches.generator.get_state()
        grid = batches.sample_grid(4, masks.shape[-2:], "cpu")
        batches.generator.set_state(state)  # augment draws the same grid
        outside = (grid.abs() > 1.01).any(-1)
        images, out = batches.augment(batches.images, batches.masks)
        labels = set(torch.unique(out).tolist())
        assert labels <= set(range(11)) | {IGNORE_INDEX}  # nearest sampling: no mixed ids
        assert bool((out[outside] == IGNORE_INDEX).all())
        assert float(images.permute(0, 2, 3, 1)[outside].abs().max()) <= 0.2  # black, then brightness
        invented += int(outside.sum())
    assert invented > 0


def test_the_same_seed_gives_the_same_batches_and_an_epoch_drops_the_remainder():
    images, masks, _ = _camvid_batches(count=5, crop_size=(64, 96))
    first = DeviceBatches(images, masks, 2, (64, 96), 10.0, 0.25, torch.Generator().manual_seed(3))
    second = DeviceBatches(images, masks, 2, (64, 96), 10.0, 0.25, torch.Generator().manual_seed(3))
    a, b = list(first), list(second)
    assert len(a) == len(first) == 2
    for (ia, ma), (ib, mb) in zip(a, b, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ma, mb)
    assert not torch.equal(a[0][0], a[1][0])


def test_brightness_contrast_and_blur_keep_the_0_1_range_and_change_a_share_of_images():
    _, _, batches = _camvid_batches(crop_size=(64, 96), generator=torch.Generator().manual_seed(4))
    images = torch.rand(200, 3, 16, 16)
    changed = batches.brightness_contrast(images.clone())
    assert float(changed.min()) >= 0.0 and float(changed.max()) <= 1.0
    share = (changed - images).abs().flatten(1).amax(1).gt(1e-6).float().mean()
    assert 0.35 < float(share) < 0.65
    blurred = batches.blur(images.clone())
    share = (blurred - images).abs().flatten(1).amax(1).gt(1e-6).float().mean()
    assert 0.1 < float(share) < 0.3
    # A blur averages: it never widens the range of an image.
    assert float(blurred.amax()) <= float(images.amax()) + 1e-6


def test_mixed_image_sizes_are_refused_with_the_fix():
    class TwoSizes:
        def __len__(self):
            return 2

        def load(self, index):
            size = (32, 48) if index == 0 else (40, 48)
            return np.zeros((*size, 3), np.uint8), np.zeros(size, np.uint8)

    with pytest.raises(ValueError, match="helpers.data resize"):
        DeviceBatches.from_dataset(TwoSizes(), torch.device("cpu"), 2, (32, 32))
