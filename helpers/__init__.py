"""Semantic segmentation study: transfer learning vs a mini U-Net, on CamVid and your photos.

Modules, from the bottom up (each imports only modules listed before it, at the top of a file
or inside a function, so the package has no import cycle; docs/architecture.md says
what each owns): ``errors``, ``files``, ``config``, ``metrics``, ``labels``, ``imageio``, ``machine``,
``precision``, ``provenance``, ``distributed``, ``schedule``, ``inference``, ``pretrained``,
``transforms``, ``boundary``, ``pairs``, ``checks``, ``downloads``, ``datasets``, ``data`` (the
data command line, re-exporting the modules before it), ``batch_transforms``, ``models``,
``stats``, ``checkpoint``, ``plots``, ``export``, ``quantize``, ``runtime``, ``evaluate``,
``crf``, ``step``, ``finetune``, ``runs``, ``training_data``, ``plan``, ``train``, ``budget``,
``predict``, ``webapp``, ``widgets`` (notebook 06's upload widget and the web app opened from a
notebook), ``study_results``, ``study``, ``report``, ``experiment``, ``hub`` (released weights),
``notebook`` (the notebooks' setup; standard library only at import), ``notebook_run`` (``make
report``'s executed notebooks, stored clean). Imports stay light here so that ``import helpers``
is instant; each module imports its heavy libraries itself.
"""

from __future__ import annotations

import os
import random

__version__ = "0.1.0"


def seed_everything(seed: int = 42, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA).

    ``deterministic`` also asks cuDNN for deterministic kernels (slower on a GPU).
    DataLoader shuffling and augmentation are re-seeded per epoch by the training loop.
    """
    import numpy as np
    import torch

    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
