import numpy as np
import torch

from helpers import data, transforms
from helpers.config import load_config
from helpers.metrics import IGNORE_INDEX


def test_train_transform_keeps_masks_inside_the_label_set(camvid_dir):
    pairs = data.camvid_pairs(camvid_dir, "train")[:6]
    dataset = data.SegmentationDataset(pairs, data.CAMVID_CLASSES, transforms.train_transform((256, 256)))
    dataset.transform.set_random_seed(0)
    allowed = set(range(11)) | {IGNORE_INDEX}
    rotated_border_seen = False
    for _ in range(4):
        for index in range(len(dataset)):
            image, mask = dataset[index]
            assert image.shape == (3, 256, 256) and image.dtype.is_floating_point
            assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
            assert mask.shape == (256, 256) and str(mask.dtype) == "torch.int64"
            assert set(mask.unique().tolist()) <= allowed
            raw_void = (dataset.load(index)[1] == IGNORE_INDEX).mean()
            rotated_border_seen |= float((mask == IGNORE_INDEX).float().mean()) > raw_void + 0.05
    assert rotated_border_seen  # rotation corners are filled with the ignore index


def test_random_rescale_changes_object_size_only_when_asked():
    # A 32x32 square of class 1 in a 64x64 frame; the crop covers the whole frame, rotation off.
    image = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    image[16:48, 16:48], mask[16:48, 16:48] = 255, 1

    def square_sizes(scale_limit):
        transform = transforms.train_transform((64, 64), rotate_limit=0, scale_limit=scale_limit)
        transform.set_random_seed(0)
        return [int((transform(image=image, mask=mask)["mask"] == 1).sum()) for _ in range(30)]

    assert set(square_sizes(0.0)) == {32 * 32}
    rescaled = square_sizes(0.5)
    assert min(rescaled) < 0.8 * 32 * 32 and max(rescaled) > 1.2 * 32 * 32


def test_eval_transform_keeps_images_and_masks_as_they_are(camvid_dir):
    pairs = data.camvid_pairs(camvid_dir, "val")[:2]
    dataset = data.SegmentationDataset(pairs, data.CAMVID_CLASSES, transforms.eval_transform())
    image, mask = dataset[0]
    assert image.shape == (3, 360, 480) and mask.shape == (360, 480)
    original_image, original_mask = dataset.load(0)
    np.testing.assert_array_equal(mask.numpy(), original_mask)
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy() * 255, original_image, atol=1e-3)
    again_image, again_mask = dataset[0]
    assert torch.equal(again_mask, mask) and torch.equal(again_image, image)


def test_to_tensor_scales_to_0_1_and_is_channels_last_in_memory():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    tensor = transforms.to_tensor(image)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 5, 7)
    np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), image / np.float32(255))
    assert tensor.stride() == (1, 7 * 3, 3)  # channels-last: the colour of a pixel is contiguous
    assert tensor[None].is_contiguous(memory_format=torch.channels_last)


def test_smoke_datasets_use_official_splits_and_limits(camvid_dir):
    config = load_config("smoke")
    datasets = data.build_datasets(config)
    assert [len(datasets[s]) for s in ("train", "val", "test")] == [8, 4, 4]
    train_names = {p[0].name for p in datasets["train"].pairs}
    test_names = {p[0].name for p in datasets["test"].pairs}
    assert not train_names & test_names
    assert all(p[0].parent.name == "test" for p in datasets["test"].pairs)
