"""Packaging: the library sits where its import name says, and every package installs."""

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def test_the_library_folder_is_its_import_name() -> None:
    import fedmedclip

    assert Path(fedmedclip.__file__).resolve().parent == ROOT / "shared" / "fedmedclip"


def test_every_package_folder_is_discovered() -> None:
    """Each folder with an ``__init__.py`` under shared/fedmedclip and services installs."""
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = set()
    for where in find["find"]["where"]:
        found |= set(find_packages(str(ROOT / where), include=find["find"]["include"]))
    expected = set()
    for top, name in (("shared/fedmedclip", "fedmedclip"), ("services", "services")):
        for init in (ROOT / top).rglob("__init__.py"):
            expected.add(".".join((name, *init.parent.relative_to(ROOT / top).parts)))
    assert "fedmedclip.simulator" in expected and "services.common" in expected
    assert found == expected
