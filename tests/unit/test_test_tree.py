"""Every module has a test file of its own, or a line in tests/README.md naming its test.

A reader who changes ``services/aggregator/nodes.py`` looks for ``test_nodes.py``; where the
module is covered elsewhere (through the API tests, say), the README's "Which tests cover a
module" section says where, so no module is left without a known test.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
SECTION = "## Which tests cover a module"


def _has_code(path: Path) -> bool:
    """More than a docstring and imports (an ``__init__`` that only names a package is not)."""
    body = ast.parse(path.read_text()).body
    return any(not isinstance(n, ast.Expr | ast.Import | ast.ImportFrom) for n in body)


def _modules() -> dict[str, Path]:
    found = {}
    for base, prefix in ((ROOT / "shared", ""), (ROOT, "")):
        top = base / ("fedmedclip" if base.name == "shared" else "services")
        for path in top.rglob("*.py"):
            if "migrations" in path.parts or not _has_code(path):
                continue
            dotted = ".".join(path.relative_to(base).with_suffix("").parts)
            found[prefix + dotted.removesuffix(".__init__")] = path
    return found


FOLDERS = {
    "fedmedclip": {"fedmedclip"},
    "aggregator": {"aggregator"},
    "hospital_node": {"hospital_node", "node"},
    "inference_api": {"inference_api", "inference"},
    "common": {"common"},
    "commands": {"cli"},
    "cli": {"cli"},
}
"""The test folders of each part of the code (tests/unit/<folder>, tests/integration/<folder>)."""


def _own_test(dotted: str, tests: dict[Path, str]) -> bool:
    """A ``test_<name>*.py`` (or ``test_<package>_<name>*.py``) that imports the module or
    sits in its part's test folder."""
    package, _, name = dotted.rpartition(".")
    stems = (f"test_{name}", f"test_{package.rpartition('.')[2]}_{name}")
    parts = dotted.split(".")
    part = parts[0] if parts[0] == "fedmedclip" else parts[1] if len(parts) > 1 else ""
    folders = FOLDERS.get(part, set())
    imports = re.compile(
        rf"(\b{re.escape(dotted)}\b)|(from {re.escape(package)} import [^\n]*\b{name}\b)"
    )
    return any(
        path.name.startswith(stems)
        and (imports.search(text) or folders & set(path.relative_to(TESTS).parts))
        for path, text in tests.items()
    )


def _readme_lines() -> dict[str, str]:
    text = (TESTS / "README.md").read_text()
    assert SECTION in text, f"tests/README.md has no '{SECTION}' section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([\w.]+)` \| (.+) \|$", section, re.MULTILINE))


def test_every_module_has_its_own_test_or_a_readme_line_naming_one() -> None:
    tests = {p: p.read_text() for p in TESTS.rglob("test_*.py")}
    listed = _readme_lines()
    uncovered = [m for m in _modules() if not _own_test(m, tests) and m not in listed]
    assert uncovered == [], "modules with no test file of their own and no README line"


def test_the_readme_lines_name_real_modules_and_existing_tests() -> None:
    modules = _modules()
    for module, where in _readme_lines().items():
        assert module in modules, f"tests/README.md lists {module}, which is not a module"
        cited = re.findall(r"`(tests/[\w/.]+\.py)", where)
        assert cited, f"the line for {module} names no test file"
        for path in cited:
            assert (ROOT / path).exists(), f"the line for {module} cites missing {path}"
