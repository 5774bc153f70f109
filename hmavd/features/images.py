"""Discovery of stimulus images on disk, in the order the feature cache and the EEG data use.

A ThingsEEG2 image set root looks like::

    <images>/training_images/00001_aardvark/aardvark_01b.jpg
    <images>/test_images/00001_aircraft_carrier/aircraft_carrier_06s.jpg

Concept folders and the files inside them are sorted in plain code-point order (Python ``sorted``),
which is the order of ThingsEEG2's ``image_metadata.npy``. Each image is named by its id
``"<concept folder>/<file name>"`` (see :func:`hmavd.features.cache.image_ids`).

A split may also be a *flat* folder of images plus a concept list: a text file with one
``file,concept`` (or tab-separated) line per image; the image ids are then ``"<concept>/<file>"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.thingseeg2 import ImageMetadata, concept_name
from ..errors import UserError

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLIT_DIRS",
    "ImageList",
    "scan_split",
    "scan_flat",
    "read_concept_list",
    "tree_metadata",
    "metadata_from_lists",
    "image_list_from_metadata",
    "center_images",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_DIRS = {"training": "training_images", "test": "test_images"}


@dataclass(frozen=True)
class ImageList:
    """The images of one split, in cache/EEG order.

    Attributes
    ----------
    ids : tuple of str
        ``"<concept folder>/<file>"`` per image.
    paths : tuple of Path
        File of each image.
    """

    ids: tuple[str, ...]
    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def image_concepts(self) -> tuple[str, ...]:
        """Concept folder of each image."""
        return tuple(i.split("/", 1)[0] for i in self.ids)

    @property
    def image_files(self) -> tuple[str, ...]:
        """File name of each image."""
        return tuple(i.split("/", 1)[1] for i in self.ids)

    @property
    def concepts(self) -> tuple[str, ...]:
        """Unique concept folders, sorted (the order of text features)."""
        return tuple(sorted(set(self.image_concepts)))


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def scan_split(split_dir: str | Path, what: str = "--images") -> ImageList:
    """All images below ``<split_dir>/<concept folder>/``, folders and files in sorted order."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise UserError(f"{what}: {split_dir} is not a folder; point it at a folder of <concept>/ image folders")
    ids: list[str] = []
    paths: list[Path] = []
    folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        files = sorted(p.name for p in (split_dir / folder).iterdir() if _is_image(p))
        if not files:
            log.warning("%s: concept folder %s holds no images; skipped", split_dir, folder)
        for f in files:
            ids.append(f"{folder}/{f}")
            paths.append(split_dir / folder / f)
    if not ids:
        raise UserError(
            f"{what}: {split_dir} has no <concept>/<image> files (extensions {', '.join(IMAGE_EXTENSIONS)}); "
            "point it at a ThingsEEG2 split folder such as training_images/"
        )
    return ImageList(tuple(ids), tuple(paths))


def read_concept_list(path: str | Path, what: str = "--concepts") -> dict[str, str]:
    """Read ``file,concept`` lines (comma or tab separated; ``#`` comments) into ``{file: concept}``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what}: {path} does not exist; give a text file with one 'file,concept' line per image")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        sep = "\t" if "\t" in line else ","
        parts = [p.strip() for p in line.split(sep)]
        if len(parts) != 2 or not all(parts):
            raise UserError(f"{what}: {path} line {n} is {line!r}; expected 'file,concept'")
        if parts[0] in out:
            raise UserError(f"{what}: {path} line {n} lists {parts[0]!r} twice; give each image once")
        out[parts[0]] = parts[1].replace(" ", "_")
    if not out:
        raise UserError(f"{what}: {path} lists no images; add 'file,concept' lines")
    return out


def scan_flat(folder: str | Path, concept_list: str | Path, what: str = "--concepts") -> ImageList:
    """A flat folder of images plus a concept list; ordered by (concept, file), like a tree."""
    folder = Path(folder)
    mapping = read_concept_list(concept_list, what)
    missing = [f for f in mapping if not (folder / f).is_file()]
    if missing:
        raise UserError(
            f"{what}: {len(missing)} listed images are not in {folder} (first: {missing[0]!r}); fix the list or folder"
        )
    pairs = sorted((c, f) for f, c in mapping.items())
    return ImageList(tuple(f"{c}/{f}" for c, f in pairs), tuple(folder / f for _, f in pairs))


def metadata_from_lists(train: ImageList, test: ImageList) -> ImageMetadata:
    """The ThingsEEG2 ``ImageMetadata`` describing two image lists."""
    return ImageMetadata(
        train_img_concepts=train.image_concepts,
        train_img_files=train.image_files,
        test_img_concepts=test.image_concepts,
        test_img_files=test.image_files,
    )


def tree_metadata(images_root: str | Path) -> ImageMetadata:
    """Scan ``<images_root>/training_images`` and ``test_images`` into an ``ImageMetadata``."""
    root = Path(images_root)
    return metadata_from_lists(
        scan_split(root / SPLIT_DIRS["training"], "--images"), scan_split(root / SPLIT_DIRS["test"], "--images")
    )


def image_list_from_metadata(split_dir: str | Path, meta: ImageMetadata, split: str) -> ImageList:
    """The images of ``split`` in metadata order, found as ``<split_dir>/<concept>/<file>`` or ``<split_dir>/<file>``.

    Raises a one-line :class:`UserError` naming how many files are missing and the first one.
    """
    split_dir = Path(split_dir)
    if split == "training":
        concepts, files = meta.train_img_concepts, meta.train_img_files
    else:
        concepts, files = meta.test_img_concepts, meta.test_img_files
    ids, paths, missing = [], [], []
    for c, f in zip(concepts, files):
        p = split_dir / c / f
        if not p.is_file() and (split_dir / f).is_file():
            p = split_dir / f
        if not p.is_file():
            missing.append(f"{c}/{f}")
        ids.append(f"{c}/{f}")
        paths.append(p)
    if missing:
        raise UserError(
            f"--metadata: {len(missing)} of the {len(ids)} {split} images it lists are not in {split_dir} "
            f"(first: {missing[0]}); use the image set that belongs to this image_metadata"
        )
    return ImageList(tuple(ids), tuple(paths))


def center_images(centers_dir: str | Path, concepts: Sequence[str]) -> list[list[Path]]:
    """For each concept folder, the images in ``<centers_dir>/<concept folder or bare name>/`` (sorted).

    ``"00001_aircraft_carrier"`` is looked up as ``00001_aircraft_carrier/`` and then ``aircraft_carrier/``.
    """
    centers_dir = Path(centers_dir)
    if not centers_dir.is_dir():
        raise UserError(f"--centers: {centers_dir} is not a folder; give a folder of <concept>/ image folders")
    out: list[list[Path]] = []
    missing: list[str] = []
    for c in concepts:
        cands = [centers_dir / c, centers_dir / concept_name(c).replace(" ", "_")]
        folder = next((d for d in cands if d.is_dir()), None)
        files = sorted((p for p in folder.iterdir() if _is_image(p)), key=lambda p: p.name) if folder else []
        if not files:
            missing.append(c)
        out.append(files)
    if missing:
        raise UserError(
            f"--centers: {len(missing)} of {len(concepts)} test concepts have no images in {centers_dir} "
            f"(first: {missing[0]}); add <concept>/ folders with images for every test concept"
        )
    return out
