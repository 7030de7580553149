"""Joint image/mask augmentation (albumentations) and the uint8 image -> tensor conversion.

Geometric transforms move image and mask together; the mask always uses nearest-neighbour
interpolation, and every pixel a transform invents (rotation corners, padding) gets
:data:`helpers.metrics.IGNORE_INDEX` so it never counts in the loss or the metrics. Padding to
the encoder's stride is not done here: :func:`helpers.inference.predict_logits` pads every
input and crops the logits back, so datasets keep images at their own size.
"""

from __future__ import annotations

import cv2
import numpy as np

from .metrics import IGNORE_INDEX


def to_tensor(image: np.ndarray):
    """Return a float32 (3, H, W) tensor on the 0-1 scale from an (H, W, 3) uint8 RGB image.

    The tensor is a permuted view made contiguous by ``float()``, which keeps the strides: it is
    channels-last in memory, the layout the models run fastest in, without an extra copy.
    """
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)


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
    """Return the evaluation transform: none, images and masks stay as they are.

    Evaluation runs at the native resolution; :func:`helpers.inference.predict_logits` pads
    the images to the encoder's stride (CamVid's 360 rows to 384) and crops the logits back
    to the mask's size, so padding is never scored.
    """
    import albumentations as A

    return A.Compose([])


def seed_style_val_transform():
    """Return the original study's validation transform, kept only to measure its flaw.

    It flipped validation images at random, so the validation loss of the same model changed
    from run to run, and the "best" epoch partly reflected the coin flips.
    """
    import albumentations as A

    return A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
