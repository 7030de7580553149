"""Joint image/mask augmentation (albumentations) and padding to the encoder stride.

Geometric transforms move image and mask together; the mask always uses nearest-neighbour
interpolation, and every pixel a transform invents (rotation corners, padding) gets
:data:`helpers.data.IGNORE_INDEX` so it never counts in the loss or the metrics.
"""

from __future__ import annotations

import cv2

from .data import IGNORE_INDEX

STRIDE = 32  # U-Net encoders downsample five times: inputs must be multiples of 32.


def train_transform(crop_size: tuple[int, int] = (224, 320), rotate_limit: float = 10.0,
                    scale_limit: float = 0.0):
    """Return the training augmentation: (rescale,) crop, flip, rotate, brightness/contrast, blur.

    Only horizontal flips: a street scene upside down (vertical flip) puts the sky under the
    road, a picture the model never meets. ``scale_limit`` > 0 first rescales the whole image by
    a random factor in [1 - scale_limit, 1 + scale_limit], so objects appear at several sizes.
    """
    import albumentations as A

    height, width = crop_size
    rescale = []
    if scale_limit > 0:
        rescale = [A.RandomScale(scale_limit=scale_limit, interpolation=cv2.INTER_LINEAR,
                                 mask_interpolation=cv2.INTER_NEAREST, p=1.0)]
    return A.Compose(
        [
            *rescale,
            A.PadIfNeeded(
                min_height=height,
                min_width=width,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=IGNORE_INDEX,
            ),
            A.RandomCrop(height=height, width=width),
            A.HorizontalFlip(p=0.5),
            A.Rotate(
                limit=rotate_limit,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=IGNORE_INDEX,
                p=0.5,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        ]
    )


def eval_transform():
    """Return the evaluation transform: no randomness, only padding to a multiple of 32.

    Padding goes to the bottom and right with the mask padded as ignore, so CamVid's 360 rows
    become 384 and the extra rows are never scored.
    """
    import albumentations as A

    return A.Compose([pad_to_stride()])


def pad_to_stride(stride: int = STRIDE):
    """Return an albumentations transform padding bottom/right to a multiple of ``stride``."""
    import albumentations as A

    return A.PadIfNeeded(
        min_height=None,
        min_width=None,
        pad_height_divisor=stride,
        pad_width_divisor=stride,
        position="top_left",
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        fill_mask=IGNORE_INDEX,
    )


def seed_style_val_transform():
    """Return the original study's validation transform, kept only to measure its flaw.

    It flipped validation images at random, so the validation loss of the same model changed
    from run to run, and the "best" epoch partly reflected the coin flips.
    """
    import albumentations as A

    return A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), pad_to_stride()])
