"""Every Python package folder is listed in pyproject.toml (else installs miss it)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_all_packages_are_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for top, name in (("shared", "fedmedclip"), ("services", "services")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    assert found == listed
