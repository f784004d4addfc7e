"""The docs name only what exists: modules, their names, and the repository's paths.

The docs drifted once (docs/architecture.md listed ``build_fam`` and ``adapt_features`` long
after both were gone, others cited moved tests); these tests read every row of the
architecture's "Core library modules" table and every backticked dotted name and path in
the README and docs, and look each up in the code.
"""

import importlib
import inspect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()
DOCS = [
    ROOT / "README.md",
    ROOT / "bench" / "README.md",
    ROOT / "tests" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "services").glob("*/README.md")),
]
DOTTED = re.compile(r"`((?:fedmedclip|services)(?:\.\w+)+)(?![\w/.])")
PATH = re.compile(r"`((?:services|shared|tests|bench|scripts|deploy|docs)/[\w./-]+)")
ROW = re.compile(r"^\| `([a-z_]+)` \| (.+) \|$", re.MULTILINE)
NAME = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\([^`]*\))?`")


def _library_rows() -> list[tuple[str, str]]:
    section = ARCHITECTURE.split("## Core library modules", 1)[1].split("\n## ", 1)[0]
    return ROW.findall(section)


def _source(module) -> str:
    """The module's source, or for a package that of every module in it."""
    path = Path(inspect.getfile(module))
    files = path.parent.rglob("*.py") if path.name == "__init__.py" else [path]
    return "\n".join(p.read_text() for p in files)


def _exists(module, name: str, source: str) -> bool:
    """An attribute path of the module, a submodule, or a name its source spells out."""
    target = module
    for part in name.split("."):
        if not hasattr(target, part):
            break
        target = getattr(target, part)
    else:
        return True
    return re.search(rf"\b{re.escape(name.split('.')[-1])}\b", source) is not None


def test_the_library_table_lists_every_library_module_and_nothing_else() -> None:
    listed = {module for module, _ in _library_rows()}
    library = ROOT / "shared" / "fedmedclip"
    present = {p.stem for p in library.glob("*.py") if p.stem != "__init__"} | {
        p.parent.name for p in library.glob("*/__init__.py")
    }
    assert present - listed == set(), "library modules missing from docs/architecture.md"
    assert listed - present == set(), "docs/architecture.md lists modules that do not exist"


def test_every_name_in_the_library_table_exists_in_its_module() -> None:
    missing = []
    for module_name, text in _library_rows():
        module = importlib.import_module(f"fedmedclip.{module_name}")
        source = _source(module)
        missing += [
            f"fedmedclip.{module_name}: {name}"
            for name in NAME.findall(text)
            if not _exists(module, name, source)
        ]
    assert missing == [], "docs/architecture.md names what does not exist"


def _resolves(dotted: str) -> bool:
    """The longest importable prefix of ``dotted``, with the rest as attributes of it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            if not hasattr(target, part):
                return False
            target = getattr(target, part)
        return True
    return False


def _docs() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in DOCS if p.exists()}


def test_every_dotted_name_in_the_docs_can_be_imported() -> None:
    stale = [
        f"{doc}: {name}"
        for doc, text in _docs().items()
        for name in sorted(set(DOTTED.findall(text)))
        if not _resolves(name)
    ]
    assert stale == [], "the docs name modules or attributes that do not exist"


def test_every_repository_path_in_the_docs_exists() -> None:
    stale = [
        f"{doc}: {path}"
        for doc, text in _docs().items()
        for path in sorted(set(PATH.findall(text)))
        if not (ROOT / path.split(":")[0].rstrip(".")).exists()
    ]
    assert stale == [], "the docs cite files that do not exist"
