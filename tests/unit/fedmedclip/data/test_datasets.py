"""Dataset readers, the federation class index and dataset validation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedmedclip.data.datasets import (
    MAX_MANIFEST_BYTES,
    ClassIndex,
    DatasetError,
    ImageRecord,
    normalize_class_name,
    read_dataset,
    read_image_folder,
    read_manifest,
    validate_dataset,
)

CLASSES = ["nevus", "melanoma", "keratosis", "carcinoma"]


def _png_bytes(size: int = 8, value: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _folder_dataset(root: Path, layout: dict[str, int]) -> list[ImageRecord]:
    for label, count in layout.items():
        for i in range(count):
            _write(root / label / f"{i}.png", _png_bytes(value=i))
    return read_image_folder(root)


# --- image folders ---------------------------------------------------------------------


def test_image_folder_lists_images_by_class_in_sorted_order(tmp_path: Path) -> None:
    png = _png_bytes()
    _write(tmp_path / "melanoma" / "b.PNG", png)
    _write(tmp_path / "melanoma" / "a.jpg", png)
    _write(tmp_path / "melanoma" / "visit2" / "c.dcm", png)
    _write(tmp_path / "nevus" / "z.jpeg", png)
    _write(tmp_path / "nevus" / "notes.txt", b"not an image")
    _write(tmp_path / "nevus" / ".hidden.png", png)
    _write(tmp_path / "nevus" / ".ipynb_checkpoints" / "x.png", png)
    _write(tmp_path / ".trash" / "y.png", png)
    _write(tmp_path / "classes.json", b"[]")

    records = read_image_folder(tmp_path)

    assert [(r.path.relative_to(tmp_path).as_posix(), r.label) for r in records] == [
        ("melanoma/a.jpg", "melanoma"),
        ("melanoma/b.PNG", "melanoma"),
        ("melanoma/visit2/c.dcm", "melanoma"),
        ("nevus/z.jpeg", "nevus"),
    ]
    assert all(r.patient_id is None for r in records)


def test_image_folder_that_does_not_exist_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="is not a folder"):
        read_image_folder(tmp_path / "nope")


# --- manifests -------------------------------------------------------------------------


def test_manifest_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "x.png"
    manifest = tmp_path / "site" / "manifest.csv"
    manifest.parent.mkdir()
    # BOM (Excel), column order and case differ from the docs, extra column ignored.
    lines = ["\ufeffLabel,site,Path,patient_id", "nevus,A,img/1.png,P1", f"melanoma,A,{elsewhere},"]
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records = read_manifest(manifest)
    assert records == [
        ImageRecord(manifest.parent / "img/1.png", "nevus", "P1"),
        ImageRecord(elsewhere, "melanoma", None),
    ]


def test_manifest_reports_every_bad_row_with_its_line_number(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    lines = ["path,label", "a.png,nevus", ",nevus", "b.png,", "c.png,nevus,extra", "d.png,melanoma"]
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as caught:
        read_manifest(manifest)
    message = str(caught.value)
    assert "line 3: empty path" in message
    assert "line 4: empty label" in message
    assert "line 5: more values than the header has columns" in message
    assert "line 2" not in message and "line 6" not in message


def test_manifest_without_a_label_column_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,class\na.png,nevus\n")
    with pytest.raises(DatasetError, match="missing 'label'"):
        read_manifest(manifest)


def test_unreadable_manifest_is_a_dataset_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"path,label\n\xff\xfe\xfa,nevus\n")
    with pytest.raises(DatasetError, match="cannot read manifest"):
        read_manifest(manifest)
    with pytest.raises(DatasetError, match="cannot read manifest"):
        read_manifest(tmp_path / "missing.csv")


def test_read_dataset_picks_the_reader_from_the_path(tmp_path: Path) -> None:
    _write(tmp_path / "folder" / "nevus" / "1.png", _png_bytes())
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nfolder/nevus/1.png,melanoma\n")
    assert [r.label for r in read_dataset(tmp_path / "folder")] == ["nevus"]
    assert [r.label for r in read_dataset(manifest)] == ["melanoma"]
    with pytest.raises(DatasetError, match="neither a folder nor a .csv manifest"):
        read_dataset(tmp_path / "folder" / "nevus" / "1.png")


# --- class index -----------------------------------------------------------------------


def test_a_site_lacking_a_class_keeps_the_global_label_ids(tmp_path: Path) -> None:
    records = _folder_dataset(tmp_path, {"nevus": 1, "keratosis": 1, "carcinoma": 1})
    index = ClassIndex(CLASSES)
    labels = {r.label: index.index(r.label) for r in records}
    # Numbering the site's own folders would give carcinoma 0, keratosis 1, nevus 2.
    assert labels == {"nevus": 0, "keratosis": 2, "carcinoma": 3}
    assert len(index) == 4 and "melanoma" in index and list(index) == CLASSES


def test_unknown_class_is_a_dataset_error_naming_the_classes() -> None:
    with pytest.raises(DatasetError, match="unknown class 'wart'.*nevus"):
        ClassIndex(CLASSES).index("wart")


@pytest.mark.parametrize(
    ("names", "message"),
    [([], "empty"), (["a", "b", "a"], "duplicate class names: a"), (["a", " b"], "invalid")],
)
def test_invalid_class_lists_are_refused(names: list[str], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        ClassIndex(names)


def test_class_index_round_trips_through_json(tmp_path: Path) -> None:
    ClassIndex(CLASSES).save(tmp_path / "classes.json")
    assert ClassIndex.load(tmp_path / "classes.json") == ClassIndex(CLASSES)
    (tmp_path / "bad.json").write_text('{"classes": ["a"]}')
    with pytest.raises(DatasetError, match="JSON array"):
        ClassIndex.load(tmp_path / "bad.json")


# --- validation ------------------------------------------------------------------------


def test_a_clean_dataset_is_usable_and_counts_absent_classes_as_zero(tmp_path: Path) -> None:
    records = _folder_dataset(tmp_path, {"nevus": 3, "carcinoma": 2})
    report = validate_dataset(records, CLASSES)
    assert report.usable
    assert report.problems == []
    assert report.n_images == 5
    assert report.per_class == {"nevus": 3, "melanoma": 0, "keratosis": 0, "carcinoma": 2}


def test_unreadable_and_missing_images_are_reported(tmp_path: Path) -> None:
    records = _folder_dataset(tmp_path, {"nevus": 2, "melanoma": 2})
    garbage = _write(tmp_path / "nevus" / "garbage.png", b"not really a png")
    cut = _write(tmp_path / "melanoma" / "cut.png", _png_bytes(size=64)[:60])
    missing = tmp_path / "melanoma" / "gone.png"
    records += [ImageRecord(garbage, "nevus"), ImageRecord(cut, "melanoma")]
    records.append(ImageRecord(missing, "melanoma"))

    report = validate_dataset(records, CLASSES)

    assert not report.usable
    assert len(report.unreadable) == 3
    assert report.unreadable[0] == f"{garbage}: not a PNG, JPEG or DICOM image"
    assert report.unreadable[1].startswith(f"{cut}: truncated or corrupt image: ")
    assert report.unreadable[2] == f"{missing}: file not found"
    assert report.problems == [f"3 of 7 images cannot be read: {'; '.join(report.unreadable)}."]


def test_check_images_false_only_checks_that_files_exist(tmp_path: Path) -> None:
    records = _folder_dataset(tmp_path, {"nevus": 1, "melanoma": 1})
    garbage = _write(tmp_path / "nevus" / "garbage.png", b"not really a png")
    records += [ImageRecord(garbage, "nevus"), ImageRecord(tmp_path / "x.png", "nevus")]
    report = validate_dataset(records, CLASSES, check_images=False)
    assert report.unreadable == [f"{tmp_path / 'x.png'}: file not found"]


def test_images_over_the_pixel_cap_are_unreadable(tmp_path: Path) -> None:
    records = _folder_dataset(tmp_path, {"nevus": 1, "melanoma": 1})
    report = validate_dataset(records, CLASSES, max_pixels=10)
    assert len(report.unreadable) == 2
    assert "more than the cap of 10" in report.unreadable[0]


def test_unknown_labels_single_class_and_duplicates_are_problems(tmp_path: Path) -> None:
    records = _folder_dataset(tmp_path, {"nevus": 2, "wart": 1})
    records.append(records[0])
    report = validate_dataset(records, ClassIndex(CLASSES))
    assert report.unknown_classes == ["wart"]
    assert report.per_class["wart"] == 1 and report.per_class["nevus"] == 3
    assert report.problems == [
        "1 images have labels that are not federation classes: wart.",
        f"1 images are listed more than once: {records[0].path}.",
        "The images cover 1 of the federation's classes; training needs at least 2.",
    ]
    assert not report.usable


def test_an_empty_dataset_is_not_usable() -> None:
    report = validate_dataset([], CLASSES)
    assert report.problems == ["The dataset has no images."]
    assert not report.usable


def test_validation_decodes_real_pixels(tmp_path: Path) -> None:
    # A PNG that is fine in its header but corrupt in its pixel data is only caught by
    # decoding it, which is what check_images is for.
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    records = _folder_dataset(tmp_path, {"nevus": 1, "melanoma": 1})
    records.append(ImageRecord(_write(tmp_path / "nevus" / "bad.png", bytes(data)), "nevus"))
    assert validate_dataset(records, CLASSES, check_images=False).usable
    assert not validate_dataset(records, CLASSES).usable


# --- class names: one canonical spelling, no control characters ---------------------------

CAFE_NFC = "caf\u00e9"
CAFE_NFD = "cafe\u0301"


def test_nfd_folder_names_match_nfc_class_names(tmp_path: Path) -> None:
    records = _folder_dataset(tmp_path, {CAFE_NFD: 2, "nevus": 2})
    assert {r.label for r in records} == {CAFE_NFC, "nevus"}
    index = ClassIndex([CAFE_NFC, "nevus"])
    assert index.index(CAFE_NFD) == index.index(CAFE_NFC) == 0 and CAFE_NFD in index
    report = validate_dataset(records, [CAFE_NFC, "nevus"])
    assert report.usable and report.per_class == {CAFE_NFC: 2, "nevus": 2}


def test_nfc_and_nfd_spellings_are_one_class(tmp_path: Path) -> None:
    assert ClassIndex([CAFE_NFD, "nevus"]).names == (CAFE_NFC, "nevus")
    with pytest.raises(DatasetError, match="duplicate class names"):
        ClassIndex([CAFE_NFC, CAFE_NFD])
    csv_path = tmp_path / "m.csv"
    _write(tmp_path / "a.png", _png_bytes())
    csv_path.write_text(f"path,label\na.png,{CAFE_NFD}\n", encoding="utf-8")
    assert read_manifest(csv_path)[0].label == CAFE_NFC


@pytest.mark.parametrize("name", ["a\u0000b", "bell\u0007", "line\nbreak", "a/b"])
def test_forbidden_characters_in_class_names_are_refused(name: str) -> None:
    with pytest.raises(DatasetError, match="forbidden character") as info:
        normalize_class_name(name)
    message = str(info.value)
    assert all(c not in message for c in "\u0000\u0007\n")  # escaped, never raw
    assert "b'" not in message


def test_a_folder_with_a_control_character_is_a_dataset_problem(tmp_path: Path) -> None:
    _write(tmp_path / "nevus" / "0.png", _png_bytes())
    _write(tmp_path / "mel\u0007anoma" / "0.png", _png_bytes())
    with pytest.raises(DatasetError, match=r'class name "mel\\x07anoma" contains a forbidden'):
        read_image_folder(tmp_path)


def test_a_manifest_label_with_a_control_character_names_its_line(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", _png_bytes())
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("path,label\na.png,nevus\na.png,mel\u0001\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="line 3: class name"):
        read_manifest(csv_path)


# --- files are size-checked before they are read ------------------------------------------


def _sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.truncate(size)
    return path


def test_a_huge_image_is_unreadable_even_without_decoding(tmp_path: Path) -> None:
    records = _folder_dataset(tmp_path, {"nevus": 1, "melanoma": 1})
    _sparse(tmp_path / "nevus" / "huge.png", 3 * 1024**3)
    records = read_image_folder(tmp_path)
    for check_images in (True, False):
        report = validate_dataset(records, CLASSES, check_images=check_images)
        assert report.unreadable == [
            f"{tmp_path / 'nevus' / 'huge.png'}: file is 3072.0 MiB, more than the 256 MiB "
            "cap for one image"
        ]


def test_a_huge_manifest_is_refused_from_its_size(tmp_path: Path) -> None:
    csv_path = _sparse(tmp_path / "m.csv", MAX_MANIFEST_BYTES + 1)
    with pytest.raises(DatasetError, match="more than the cap of"):
        read_manifest(csv_path)
