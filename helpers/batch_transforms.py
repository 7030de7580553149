"""The training augmentation applied to a whole batch on the training device.

:func:`helpers.transforms.train_transform` augments one image at a time on the CPU; on a GPU
that input pipeline, not the network, sets the pace (a full-profile epoch of the Lite0 U-Net
took 2.5x its step time on an H100). :class:`DeviceBatches` keeps the decoded training split on
the device as uint8 and draws the same augmentation for a whole batch at once:

* a random rescale by a factor in [1 - scale_limit, 1 + scale_limit], a random crop (padded
  where the rescaled image is smaller than the crop), a horizontal flip (p = 0.5) and a rotation
  up to ``rotate_limit`` degrees (p = 0.5) — composed into one affine map per image and applied
  with one ``grid_sample`` (bilinear for the image, nearest for the mask);
* brightness and contrast (p = 0.5, each up to +-0.2 on the 0-1 scale);
* a Gaussian blur (p = 0.2) with a 3x3 or 5x5 kernel and sigma in [0.5, 3].

As in the CPU pipeline, every pixel that the geometry invents (padding, rotation corners) is
black in the image and :data:`IGNORE_INDEX` in the mask. Randomness comes from a seeded CPU
generator, so an epoch is reproducible whatever the device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .metrics import IGNORE_INDEX


class DeviceBatches:
    """Shuffled, augmented training batches drawn from images held on the device.

    ``images``: uint8 (N, H, W, 3); ``masks``: uint8 or int64 (N, H, W) of class ids with
    :data:`IGNORE_INDEX`. Iterating yields ``(images, masks)``: float32 (B, 3, h, w) on the 0-1
    scale and int64 (B, h, w), ``h, w = crop_size``; the last incomplete batch is dropped.

    In a distributed run (``num_replicas`` processes, this one ``rank``) every process draws
    the same shuffled order from ``generator`` (seeded alike everywhere) and takes its own
    disjoint share of it, as a ``DistributedSampler`` does; its augmentation then draws from a
    stream of its own, so the processes do not apply the same rotations and crops side by side.
    """

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, batch_size: int,
                 crop_size: tuple[int, int], rotate_limit: float = 10.0, scale_limit: float = 0.0,
                 generator: torch.Generator | None = None, rank: int = 0, num_replicas: int = 1):
        if images.ndim != 4 or images.shape[-1] != 3 or masks.shape != images.shape[:3]:
            raise ValueError(f"expected images (N, H, W, 3) and masks (N, H, W), got "
                             f"{tuple(images.shape)} and {tuple(masks.shape)}")
        self.images = images.permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8
        self.masks = masks.to(torch.uint8).contiguous()
        self.batch_size = batch_size
        self.crop_size = tuple(crop_size)
        self.rotate_limit = rotate_limit
        self.scale_limit = scale_limit
        self.generator = generator or torch.Generator()
        self.rank, self.num_replicas = rank, num_replicas
        self._own_stream: torch.Generator | None = None  # this process's augmentation stream

    @classmethod
    def from_dataset(cls, dataset, device: torch.device, batch_size: int, crop_size,
                     rotate_limit: float = 10.0, scale_limit: float = 0.0,
                     generator: torch.Generator | None = None, rank: int = 0,
                     num_replicas: int = 1) -> DeviceBatches:
        """Decode every pair of a :class:`helpers.datasets.SegmentationDataset` onto ``device``.

        All images must share one size (CamVid's are 360x480); a folder dataset of mixed sizes
        is resized first (``python -m helpers.data resize``) or trained with the CPU pipeline.
        """
        import numpy as np

        pairs = [dataset.load(index) for index in range(len(dataset))]
        sizes = {image.shape[:2] for image, _ in pairs}
        if len(sizes) != 1:
            raise ValueError(f"on-device augmentation needs images of one size, found {sorted(sizes)}; "
                             "resize the dataset (python -m helpers.data resize) or set "
                             "augment_on_device=false")
        images = torch.from_numpy(np.stack([image for image, _ in pairs])).to(device)
        masks = torch.from_numpy(np.stack([mask for _, mask in pairs])).to(device)
        return cls(images, masks, batch_size, crop_size, rotate_limit, scale_limit, generator,
                   rank, num_replicas)

    def __len__(self) -> int:
        return len(self.images) // self.num_replicas // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.images), generator=self.generator)
        self._own_stream = None
        if self.num_replicas > 1:
            share = len(self.images) // self.num_replicas
            order = order[:share * self.num_replicas][self.rank::self.num_replicas]
            seed = int(torch.randint(2**62, (1,), generator=self.generator)) + self.rank
            self._own_stream = torch.Generator().manual_seed(seed)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start:start + self.batch_size].to(self.images.device)
            yield self.augment(self.images[index], self.masks[index])

    @property
    def _random(self) -> torch.Generator:
        """The generator augmentation draws from."""
        return self.generator if self._own_stream is None else self._own_stream

    def _uniform(self, count: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=self._random, dtype=torch.float64)

    def _chance(self, count: int, p: float) -> torch.Tensor:
        return torch.rand(count, generator=self._random) < p

    def augment(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return one augmented batch from uint8 images (B, 3, H, W) and masks (B, H, W)."""
        grid = self.sample_grid(len(images), images.shape[-2:], images.device)
        images = F.grid_sample(images.float().div_(255.0), grid, mode="bilinear",
                               padding_mode="zeros", align_corners=False)
        # Masks shifted by one so that zero padding marks invented pixels, then ignored.
        shifted = F.grid_sample(masks.unsqueeze(1).float() + 1.0, grid, mode="nearest",
                                padding_mode="zeros", align_corners=False).squeeze(1).long()
        masks = torch.where(shifted == 0, IGNORE_INDEX, shifted - 1)
        images = self.brightness_contrast(images)
        images = self.blur(images)
        return images, masks

    def sample_grid(self, count: int, source_size, device) -> torch.Tensor:
        """Return a ``grid_sample`` grid (B, h, w, 2): rescale, crop, flip and rotate in one map.

        For an output pixel p of the crop (centre c), the source pixel is
        ``(R(theta) (flip(p) - c) + c + offset) / scale``.
        """
        height, width = source_size
        crop_h, crop_w = self.crop_size
        scale = (self._uniform(count, 1 - self.scale_limit, 1 + self.scale_limit)
                 if self.scale_limit > 0 else torch.ones(count, dtype=torch.float64))
        # Crop offset in the rescaled image; negative where it is smaller than the crop (padding).
        room_y, room_x = height * scale - crop_h, width * scale - crop_w
        offset_y = torch.minimum(room_y, torch.zeros(())) + room_y.abs() * torch.rand(
            count, generator=self._random, dtype=torch.float64)
        offset_x = torch.minimum(room_x, torch.zeros(())) + room_x.abs() * torch.rand(
            count, generator=self._random, dtype=torch.float64)
        flip = self._chance(count, 0.5)
        angle = self._uniform(count, -self.rotate_limit, self.rotate_limit) * math.pi / 180
        angle = torch.where(self._chance(count, 0.5), angle, torch.zeros_like(angle))

        # The random numbers come from the CPU generator; the grid is built on the device.
        def on_device(values):
            return values.to(device=device, dtype=torch.float32).view(-1, 1, 1)

        ys = torch.arange(crop_h, device=device, dtype=torch.float32) + 0.5  # pixel centres
        xs = torch.arange(crop_w, device=device, dtype=torch.float32) + 0.5
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        x = torch.where(on_device(flip) > 0, crop_w - x, x)
        cy, cx = crop_h / 2, crop_w / 2
        cos, sin, scale = on_device(angle.cos()), on_device(angle.sin()), on_device(scale)
        rx = cos * (x - cx) - sin * (y - cy) + cx + on_device(offset_x)
        ry = sin * (x - cx) + cos * (y - cy) + cy + on_device(offset_y)
        # grid_sample with align_corners=False: -1 and 1 are the outer edges of the image.
        return torch.stack([2 * rx / (scale * width) - 1, 2 * ry / (scale * height) - 1], dim=-1)

    def brightness_contrast(self, images: torch.Tensor, limit: float = 0.2, p: float = 0.5):
        """Return ``alpha * image + beta`` (clipped to 0-1) for a random half of the batch."""
        count = len(images)
        apply = self._chance(count, p)
        alpha = torch.where(apply, 1 + self._uniform(count, -limit, limit), torch.ones(count, dtype=torch.float64))
        beta = torch.where(apply, self._uniform(count, -limit, limit), torch.zeros(count, dtype=torch.float64))
        alpha = alpha.float().to(images.device).view(-1, 1, 1, 1)
        beta = beta.float().to(images.device).view(-1, 1, 1, 1)
        return (images * alpha + beta).clamp_(0.0, 1.0)

    def blur(self, images: torch.Tensor, p: float = 0.2, sigma=(0.5, 3.0)) -> torch.Tensor:
        """Return the batch with a Gaussian blur (3x3 or 5x5, random sigma) on a random fifth."""
        count, channels = images.shape[:2]
        apply = self._chance(count, p)
        if not bool(apply.any()):
            return images
        sizes = torch.where(self._chance(count, 0.5), 5, 3)
        sigmas = self._uniform(count, *sigma)
        taps = torch.arange(-2, 3, dtype=torch.float64)
        kernels = torch.exp(-0.5 * (taps.view(1, -1) / sigmas.view(-1, 1)) ** 2)
        kernels = torch.where((taps.abs().view(1, -1) <= sizes.view(-1, 1) // 2), kernels, 0.0)
        kernels = kernels / kernels.sum(1, keepdim=True)
        kernels = torch.where(apply.view(-1, 1), kernels, (taps == 0).double().view(1, -1))
        k = kernels.float().to(images.device).repeat_interleave(channels, 0)  # (B*3, 5)
        flat = images.reshape(1, count * channels, *images.shape[-2:])
        # Separable blur, reflecting at the borders as OpenCV does.
        flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="reflect"), k.view(-1, 1, 1, 5),
                        groups=count * channels)
        flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="reflect"), k.view(-1, 1, 5, 1),
                        groups=count * channels)
        return flat.view_as(images)
