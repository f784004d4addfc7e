"""Dataset registration refuses unusable datasets with a 422 that lists the problems."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def node(make_settings, run_node, tmp_path, federation):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    return run_node(make_settings("hospital-a", data_roots=[allowed, federation.root]))


def _problems(response) -> list[str]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["problems"] and body["detail"].startswith("the dataset cannot be used")
    return body["problems"]


def test_paths_outside_the_data_roots_are_refused(node, tmp_path, federation):
    outside = tmp_path / "outside"
    shutil.copytree(federation.hospital_dirs[0], outside)
    assert "outside the data roots" in _problems(node.register(outside))[0]
    sneaky = tmp_path / "allowed" / ".." / "outside"
    assert "outside the data roots" in _problems(node.register(sneaky))[0]
    link = tmp_path / "allowed" / "link"
    link.symlink_to(outside, target_is_directory=True)
    assert "outside the data roots" in _problems(node.register(link))[0]

    # A folder inside a root whose images are symlinks to files outside it.
    inside = tmp_path / "allowed" / "mixed"
    for source in sorted(outside.rglob("*.png"))[:6]:
        target = inside / source.parent.name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source)
    assert any("lie outside the data roots" in p for p in _problems(node.register(inside)))
    assert node.http.get("/api/v1/datasets").json() == []


def test_empty_missing_and_unknown_class_datasets_are_refused(node, tmp_path, federation):
    empty = tmp_path / "allowed" / "empty"
    empty.mkdir()
    assert "no images" in " ".join(_problems(node.register(empty)))
    assert "does not exist" in _problems(node.register(tmp_path / "allowed" / "nope"))[0]

    unknown = tmp_path / "allowed" / "unknown"
    shutil.copytree(federation.hospital_dirs[0], unknown)
    shutil.copytree(unknown / federation.class_names[0], unknown / "not_a_class")
    (unknown / federation.class_names[1] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    response = node.register(unknown)
    problems = " ".join(_problems(response))
    assert "not_a_class" in problems and "cannot be read" in problems
    report = response.json()["report"]
    assert report["unknown_classes"] == ["not_a_class"]
    assert any("broken.png" in u for u in report["unreadable"])


def test_a_good_dataset_is_registered_with_its_report(node, federation):
    response = node.register(federation.hospital_dirs[1])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["n_images"] == 40 and body["report"]["problems"] == []
    expected = federation.per_hospital[federation.hospital_dirs[1].name]
    assert {k: v for k, v in body["report"]["per_class"].items()} == expected
    again = node.register(federation.hospital_dirs[1])
    assert again.status_code == 409
    assert [d["id"] for d in node.http.get("/api/v1/datasets").json()] == [body["id"]]


def test_a_huge_file_is_refused_from_its_size_without_being_read(node, tmp_path, federation):
    """A 3 GiB file named .png (sparse: free to create) costs a stat, not 3 GiB of memory."""
    dataset = tmp_path / "allowed" / "huge"
    shutil.copytree(federation.hospital_dirs[0], dataset)
    huge = dataset / federation.class_names[0] / "scan.png"
    with huge.open("wb") as handle:
        handle.truncate(3 * 1024**3)
    response = node.register(dataset)
    problems = " ".join(_problems(response))
    assert "scan.png: file is 3072.0 MiB, more than the 256 MiB cap for one image" in problems


@pytest.mark.parametrize("body", [{"path": "a\u0000b"}, {"path": "ok", "name": "x\u0000"}])
def test_a_nul_character_in_a_dataset_path_or_name_is_a_422(node, body):
    response = node.http.post("/api/v1/datasets", json=body)
    assert response.status_code == 422, response.text
    assert "NUL character" in response.json()["detail"]
