"""A hospital's local dataset: records read from an image folder or a CSV manifest, the
federation-wide class index, and a validation report a site admin can act on.

Readers only describe the data (path, label, patient); they decode nothing, so listing a
large dataset is cheap. ``validate_dataset`` is the one place that opens the images.
"""

from __future__ import annotations

import csv
import json
import os
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageDecodeError,
    check_file_size,
    load_image_file,
)

MANIFEST_COLUMNS = ("path", "label", "patient_id")
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
"""A manifest line is about 100 bytes, so 64 MiB is over half a million images; a bigger
file named .csv is refused from its size instead of being parsed into memory."""
# Long error lists help nobody: show the first few and count the rest.
_MAX_LISTED_ERRORS = 10


class DatasetError(ValueError):
    """A dataset or class list cannot be used as given; the message says where and why."""


def normalize_class_name(name: str) -> str:
    """The canonical spelling of a class name: Unicode NFC, surrounding spaces removed.

    Two spellings of one name (a folder created on macOS is NFD, "e" + combining accent;
    the same name typed on Linux is NFC, one code point) must map to one class, or a site
    would train "café" as an unknown class. Control characters (NUL included) and "/"
    are refused (DatasetError): they cannot name a folder portably and corrupt logs and
    prompts. The message escapes them so that it stays one readable line.
    """
    if not isinstance(name, str):
        raise DatasetError("a class name must be text")
    canonical = unicodedata.normalize("NFC", name).strip()
    if not canonical:
        raise DatasetError("a class name must not be empty")
    bad = sorted({c for c in canonical if c == "/" or unicodedata.category(c) == "Cc"})
    if bad:
        shown = ", ".join("'/'" if c == "/" else f"U+{ord(c):04X}" for c in bad)
        raise DatasetError(
            f"class name {_escaped(canonical)} contains a forbidden character ({shown}); "
            "control characters and '/' are not allowed"
        )
    return canonical


def _escaped(text: str) -> str:
    """``text`` in quotes, control characters written as \\xNN (never raw, never bytes)."""
    return (
        '"'
        + "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in text)
        + '"'
    )


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image. ``patient_id`` keeps a patient's images in one split."""

    path: Path
    label: str
    patient_id: str | None = None


def read_image_folder(root: Path) -> list[ImageRecord]:
    """List ``root/<class name>/**/<image>`` as records, in sorted (reproducible) order.

    The class is the top-level folder name (normalised by :func:`normalize_class_name`;
    a folder name it refuses is a DatasetError); images may sit in sub-folders of it. Hidden
    files and folders (``.DS_Store``, ``.ipynb_checkpoints``) and files at the top level
    are ignored. Only names ending in an image suffix are listed; whether they really
    are images is ``validate_dataset``'s job.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    records: list[ImageRecord] = []
    errors: list[str] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not _hidden(p.name)):
        try:
            label = normalize_class_name(class_dir.name)
        except DatasetError as exc:
            errors.append(str(exc))
            continue
        for path in sorted(class_dir.rglob("*")):
            relative = path.relative_to(class_dir).parts
            if (
                path.suffix.lower() in IMAGE_SUFFIXES
                and not any(_hidden(part) for part in relative)
                and path.is_file()
            ):
                records.append(ImageRecord(path=path, label=label))
    if errors:
        raise DatasetError(f"{root}: {_summarise(errors)}")
    return records


def read_manifest(csv_path: Path) -> list[ImageRecord]:
    """Read a CSV manifest with a header naming ``path``, ``label`` and optionally
    ``patient_id`` (any order, other columns ignored).

    Relative paths are resolved against the CSV's folder, so a dataset folder can be
    moved as a whole. Every bad row is reported with its line number in one error, so
    an admin can fix the file in one pass.
    """
    csv_path = Path(csv_path)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_MANIFEST_BYTES:
                raise DatasetError(
                    f"manifest {csv_path} is {size} bytes, more than the cap of "
                    f"{MAX_MANIFEST_BYTES} bytes"
                )
            return _parse_manifest(csv.DictReader(handle), csv_path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read manifest {csv_path}: {exc}") from exc


def _parse_manifest(reader: csv.DictReader[str], csv_path: Path) -> list[ImageRecord]:
    header = [name.strip().lower() for name in reader.fieldnames or []]
    missing = [column for column in MANIFEST_COLUMNS[:2] if column not in header]
    if missing:
        raise DatasetError(
            f"{csv_path}: the header must name the columns 'path' and 'label' "
            f"(missing {', '.join(repr(c) for c in missing)}; found {header})"
        )
    reader.fieldnames = header
    records: list[ImageRecord] = []
    errors: list[str] = []
    for row in reader:
        line = reader.line_num
        if None in row:
            errors.append(f"line {line}: more values than the header has columns")
            continue
        path_text = (row["path"] or "").strip()
        label = (row["label"] or "").strip()
        if not path_text:
            errors.append(f"line {line}: empty path")
        if not label:
            errors.append(f"line {line}: empty label")
        else:
            try:
                label = normalize_class_name(label)
            except DatasetError as exc:
                errors.append(f"line {line}: {exc}")
                label = ""
        if path_text and label:
            patient_id = (row.get("patient_id") or "").strip() or None
            records.append(ImageRecord(csv_path.parent / path_text, label, patient_id))
    if errors:
        raise DatasetError(f"{csv_path}: {_summarise(errors)}")
    return records


def read_dataset(path: Path) -> list[ImageRecord]:
    """Read a dataset given either as a ``.csv`` manifest or as an image folder."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_manifest(path)
    if path.is_dir():
        return read_image_folder(path)
    raise DatasetError(f"{path} is neither a folder nor a .csv manifest")


class ClassIndex:
    """The federation's class name -> label id mapping.

    Every site builds it from the same global list (never from its own folders), so a
    site that lacks a class, or lists its folders in another order, still gives every
    class the same id; otherwise aggregated models would mix up classes. Names are kept
    in NFC and looked up in any Unicode spelling (see :func:`normalize_class_name`).
    """

    def __init__(self, names: Sequence[str]) -> None:
        names = tuple(names)
        if not names:
            raise DatasetError("the class list is empty")
        for name in names:
            if not isinstance(name, str) or not name.strip() or name != name.strip():
                raise DatasetError(f"invalid class name {_escaped(str(name))}")
        names = tuple(normalize_class_name(name) for name in names)
        duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
        if duplicates:
            raise DatasetError(f"duplicate class names: {', '.join(duplicates)}")
        self._names = names
        self._ids = {name: i for i, name in enumerate(names)}

    @classmethod
    def load(cls, path: Path) -> ClassIndex:
        """Read a class list saved by :meth:`save` (a JSON array of names)."""
        try:
            names = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read class list {path}: {exc}") from exc
        if not isinstance(names, list):
            raise DatasetError(f"{path}: the class list must be a JSON array of names")
        return cls(names)

    def save(self, path: Path) -> None:
        """Write the class list as a JSON array, the order being the label ids."""
        Path(path).write_text(json.dumps(list(self._names), indent=2) + "\n", encoding="utf-8")

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def index(self, name: str) -> int:
        """The label id of ``name`` (any Unicode spelling); unknown names raise DatasetError."""
        try:
            return self._ids[unicodedata.normalize("NFC", name)]
        except KeyError:
            raise DatasetError(
                f"unknown class {name!r}; the federation's classes are {list(self._names)}"
            ) from None

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and unicodedata.normalize("NFC", name) in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassIndex) and other._names == self._names

    def __hash__(self) -> int:
        return hash(self._names)

    def __repr__(self) -> str:
        return f"ClassIndex({list(self._names)!r})"


@dataclass
class DatasetReport:
    """What ``validate_dataset`` found. ``problems`` are sentences for a site admin;
    any problem makes the dataset unusable for training."""

    n_images: int
    per_class: dict[str, int]
    unreadable: list[str] = field(default_factory=list)
    unknown_classes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problems


def validate_dataset(
    records: Sequence[ImageRecord],
    class_names: Sequence[str] | ClassIndex,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    check_images: bool = True,
) -> DatasetReport:
    """Check a dataset against the federation's classes before any training uses it.

    ``per_class`` lists every federation class (0 where the site lacks it), then any
    unknown labels. ``unreadable`` holds ``"<path>: <reason>"`` entries. With
    ``check_images`` every image is fully decoded (slow but catches truncated files);
    without it only the files' existence and size are checked.
    """
    index = class_names if isinstance(class_names, ClassIndex) else ClassIndex(class_names)
    counts = Counter(unicodedata.normalize("NFC", record.label) for record in records)
    unknown = sorted(label for label in counts if label not in index)
    per_class = {name: counts.get(name, 0) for name in index.names}
    per_class.update((label, counts[label]) for label in unknown)
    unreadable = [
        reason
        for record in records
        if (reason := _image_problem(record.path, check_images, max_pixels)) is not None
    ]
    duplicates = sorted(str(p) for p, n in Counter(r.path for r in records).items() if n > 1)

    problems: list[str] = []
    if not records:
        problems.append("The dataset has no images.")
    if unknown:
        problems.append(
            f"{sum(counts[label] for label in unknown)} images have labels that are not "
            f"federation classes: {', '.join(unknown)}."
        )
    if unreadable:
        problems.append(
            f"{len(unreadable)} of {len(records)} images cannot be read: {_summarise(unreadable)}."
        )
    if duplicates:
        problems.append(
            f"{len(duplicates)} images are listed more than once: {_summarise(duplicates)}."
        )
    present = sum(1 for name in index.names if counts.get(name, 0) > 0)
    if records and present < 2:
        problems.append(
            f"The images cover {present} of the federation's classes; training needs at least 2."
        )
    return DatasetReport(
        n_images=len(records),
        per_class=per_class,
        unreadable=unreadable,
        unknown_classes=unknown,
        problems=problems,
    )


def _image_problem(path: Path, check_images: bool, max_pixels: int) -> str | None:
    if not path.is_file():
        return f"{path}: file not found"
    try:
        # The size cap is checked even without check_images: stat is cheap, and a
        # multi-GB file must be refused before a training job tries to read it.
        check_file_size(path)
        if check_images:
            load_image_file(path, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        return f"{path}: {exc}"
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return None


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _summarise(items: Sequence[str]) -> str:
    listed = "; ".join(items[:_MAX_LISTED_ERRORS])
    rest = len(items) - _MAX_LISTED_ERRORS
    return f"{listed}; and {rest} more" if rest > 0 else listed
