"""Class definitions: names, colours and the value to ignore.

:class:`ClassInfo` describes a dataset's classes (CamVid's 11 in :data:`CAMVID_CLASSES`, or
your own from a YAML/JSON class file read by :func:`load_class_file`); :func:`colorize` paints a
mask of training ids with the classes' colours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .metrics import IGNORE_INDEX


@dataclass(frozen=True)
class ClassInfo:
    """The label set of a dataset.

    ``ids`` are the values written in the source masks for each class (in class order);
    ``ignore_id`` is the source value meaning "unlabelled". Masks are re-coded to
    ``0..num_classes-1`` with :data:`IGNORE_INDEX` for ignored pixels.
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ids: tuple[int, ...]
    ignore_id: int | None = None
    ignore_color: tuple[int, int, int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def lookup_table(self) -> np.ndarray:
        """Return a 256-entry table mapping source mask values to training ids (unknown → 255)."""
        table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for index, source_id in enumerate(self.ids):
            table[source_id] = index
        return table

    def known_values(self) -> set[int]:
        """Return the source mask values this label set allows."""
        return set(self.ids) | ({self.ignore_id} if self.ignore_id is not None else set())

    def to_dict(self) -> dict:
        """Return the label set in the class-file format (ids re-coded to 0..n-1)."""
        return {
            "classes": [
                {"id": i, "name": n, "color": list(c)}
                for i, (n, c) in enumerate(zip(self.names, self.colors, strict=True))
            ],
            "ignore_index": IGNORE_INDEX,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ClassInfo:
        """Build a label set from class-file data (see :func:`load_class_file`)."""
        entries = sorted(data["classes"], key=lambda c: int(c["id"]))
        ignore_id = data.get("ignore_index")
        ignore_id = None if ignore_id is None else int(ignore_id)
        ignore_color = None
        kept = []
        for entry in entries:
            if ignore_id is not None and int(entry["id"]) == ignore_id:
                # An entry for the ignore id only gives the colour of unlabelled pixels.
                ignore_color = tuple(entry["color"]) if entry.get("color") else None
                continue
            kept.append(entry)
        names = tuple(str(e["name"]) for e in kept)
        colors = tuple(
            tuple(int(v) for v in e["color"]) if e.get("color") else default_color(i)
            for i, e in enumerate(kept)
        )
        ids = tuple(int(e["id"]) for e in kept)
        if any(not 0 <= i <= 255 for i in ids):
            raise ValueError("class ids must lie in 0..255 (8-bit masks)")
        if len(set(ids)) != len(ids):
            raise ValueError("class ids must be unique")
        return cls(names, colors, ids, ignore_id, ignore_color)


CAMVID_CLASSES = ClassInfo(
    names=(
        "sky", "building", "pole", "road", "pavement", "tree",
        "sign_symbol", "fence", "car", "pedestrian", "bicyclist",
    ),
    colors=(
        (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
        (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
    ),
    ids=tuple(range(11)),
    ignore_id=11,
    ignore_color=(0, 0, 0),
)  # fmt: skip


def default_color(index: int) -> tuple[int, int, int]:
    """Return a distinct colour for class ``index`` when a class file gives none."""
    rng = np.random.default_rng(index + 7)
    return tuple(int(v) for v in rng.integers(40, 230, size=3))


def load_class_file(path: str | Path) -> ClassInfo:
    """Read a class file (YAML or JSON) shaped like
    ``{"classes": [{"id": 0, "name": "sky", "color": [128, 128, 128]}, ...], "ignore_index": 11}``.
    """
    path = Path(path)
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
        return ClassInfo.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(
            f"{path}: not a valid class file ({error}). Expected "
            '{"classes": [{"id": 0, "name": "sky", "color": [128, 128, 128]}, ...], '
            '"ignore_index": 11}'
        ) from error


def colorize(mask: np.ndarray, classes: ClassInfo, ignore_color=(0, 0, 0)) -> np.ndarray:
    """Return an RGB picture (H, W, 3) of a training-id mask."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:] = ignore_color
    palette[: classes.num_classes] = np.array(classes.colors, dtype=np.uint8)
    return palette[np.asarray(mask, dtype=np.uint8)]
