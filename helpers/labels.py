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

from .errors import ClassFileError, one_line
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
        """Build a label set from class-file data (see :func:`load_class_file`).

        Raises :class:`ClassFileError` (one line saying what is wrong) unless there are at
        least two classes, each with an integer id in 0..255 and a name, ids, names and colours
        are unique, and each colour is three integers in 0..255.
        """
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise ClassFileError(f"expected a 'classes' list, got {_shown(data)}")
        ignore_id = data.get("ignore_index")
        ignore_id = None if ignore_id is None else _byte(ignore_id, "ignore_index")
        ignore_color = None
        kept = []
        for number, entry in enumerate(data["classes"], start=1):
            if not isinstance(entry, dict) or "id" not in entry or "name" not in entry:
                raise ClassFileError(f"class {number} must have an id and a name, got {_shown(entry)}")
            class_id = _byte(entry["id"], f"the id of class {entry['name']!r}")
            color = entry.get("color")
            color = None if color in (None, "", []) else _color(color, entry["name"])
            if ignore_id is not None and class_id == ignore_id:
                # An entry for the ignore id only gives the colour of unlabelled pixels.
                ignore_color = color
                continue
            name = str(entry["name"]).strip()
            if not name:
                raise ClassFileError(f"class {number} (id {class_id}) has an empty name")
            kept.append((class_id, name, color))
        kept.sort(key=lambda entry: entry[0])
        names = tuple(name for _, name, _ in kept)
        colors = tuple(color or default_color(i) for i, (_, _, color) in enumerate(kept))
        ids = tuple(class_id for class_id, _, _ in kept)
        if len(kept) < 2:
            raise ClassFileError(f"{len(kept)} class(es) besides the ignored one; a segmentation "
                                 "needs at least two")
        for what, values in (("id", ids), ("name", names), ("colour", colors)):
            repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
            if repeated:
                shown = ", ".join(str(list(v)) if isinstance(v, tuple) else repr(v)
                                  for v in repeated)
                raise ClassFileError(f"each class needs its own {what}: {shown} appears more "
                                     "than once")
        if ignore_color is not None and ignore_color in colors:
            raise ClassFileError(f"the colour of unlabelled pixels {list(ignore_color)} is also "
                                 f"the colour of class {names[colors.index(ignore_color)]!r}")
        return cls(names, colors, ids, ignore_id, ignore_color)


def _shown(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _byte(value, what: str) -> int:
    """Return an integer 0..255 (a mask value), or raise :class:`ClassFileError`."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ClassFileError(f"{what} must be an integer from 0 to 255, got {_shown(value)}")
    try:
        number = int(value)
    except ValueError:
        raise ClassFileError(f"{what} must be an integer from 0 to 255, got {_shown(value)}") from None
    if not 0 <= number <= 255:
        raise ClassFileError(f"{what} is {number}: ids must lie in 0..255 (8-bit masks)")
    return number


def _color(value, name) -> tuple[int, int, int]:
    """Return an (r, g, b) colour of integers 0..255, or raise :class:`ClassFileError`."""
    if (not isinstance(value, list | tuple) or len(value) != 3
            or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255
                   for v in value)):
        raise ClassFileError(f"class {name!r} has colour {_shown(value)}: a colour is three "
                             "integers from 0 to 255, e.g. [128, 64, 128]")
    return tuple(value)


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


CLASS_FILE_EXAMPLE = ('{"classes": [{"id": 0, "name": "sky", "color": [128, 128, 128]}, '
                      '{"id": 1, "name": "road", "color": [128, 64, 128]}], "ignore_index": 11}')


def load_class_file(path: str | Path) -> ClassInfo:
    """Read a class file (YAML or JSON) shaped like :data:`CLASS_FILE_EXAMPLE`.

    Raises :class:`ClassFileError` with one line naming the file, where it does not parse
    (with its line) or what is wrong with the classes (see :meth:`ClassInfo.from_dict`), and
    ``FileNotFoundError`` for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such class file (a YAML or JSON file such as "
                                f"{CLASS_FILE_EXAMPLE})")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ClassFileError(f"{path}: not a text file; a class file is YAML or JSON such as "
                             f"{CLASS_FILE_EXAMPLE}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else _yaml(text)
    except json.JSONDecodeError as error:
        raise ClassFileError(f"{path}, line {error.lineno}: not valid JSON ({error.msg}); fix "
                             f"it, or write it as YAML") from None
    except ValueError as error:  # YAML, see _yaml
        raise ClassFileError(f"{path}{error}") from None
    if data is None:
        raise ClassFileError(f"{path}: the file is empty; write the classes, e.g. {CLASS_FILE_EXAMPLE}")
    try:
        return ClassInfo.from_dict(data)
    except ClassFileError as error:
        raise ClassFileError(f"{path}: {error}. Expected e.g. {CLASS_FILE_EXAMPLE}") from None


def _yaml(text: str):
    """Return parsed YAML, or raise ``ValueError(", line N: what is wrong")``."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or one_line(error)
        raise ValueError(f"{where}: not valid YAML ({problem}); fix it (indentation, a missing "
                         "colon or bracket...)") from None


def colorize(mask: np.ndarray, classes: ClassInfo, ignore_color=(0, 0, 0)) -> np.ndarray:
    """Return an RGB picture (H, W, 3) of a training-id mask."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:] = ignore_color
    palette[: classes.num_classes] = np.array(classes.colors, dtype=np.uint8)
    return palette[np.asarray(mask, dtype=np.uint8)]
