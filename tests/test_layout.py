"""The floor plan holds: folders follow the data flow, a lower layer never imports a higher one, no private
name crosses a module boundary, modules and functions stay small (or say why)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "stcstore"
# what each folder may import from (besides itself and the package root's __version__)
ALLOWED = {
    "core": set(),
    "store": {"core"},
    "models": {"core"},
    "features": {"core", "store", "models"},
    "ingest": {"core", "store"},
    "classifier": {"core", "store", "models", "features"},
    "fit": {"core", "store", "classifier"},
    "score": {"core", "store", "models", "features", "ingest", "classifier"},
    "report": {"core", "store", "classifier"},
    "cluster": {"core", "store", "models", "features", "ingest", "classifier", "fit", "score"},
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py")) + sorted((ROOT / "cli").glob("*.py"))


def _imported(path: Path, tree: ast.AST) -> list[tuple[str, list[str]]]:
    """(absolute stcstore module, imported names) of every import in the module."""
    pkg_parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if pkg_parts[0] == "cli":
        pkg_parts = ["stcstore", *pkg_parts]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[:-node.level]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return [(m, n) for m, n in out if m == "stcstore" or m.startswith("stcstore.")]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers_and_no_private_names_cross_modules(path):
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PKG).parts if path.is_relative_to(PKG) else ("cli",)
    folder = rel[0] if len(rel) > 1 else None
    for mod, names in _imported(path, tree):
        parts = mod.split(".")
        target = parts[1] if len(parts) > 1 else None
        if folder in ALLOWED and target is not None and target != folder:
            assert target in ALLOWED[folder], f"{path.name} ({folder}) imports {mod}, a higher layer"
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{path.relative_to(ROOT)} imports private {private} from {mod}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_are_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: split it by concern"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            assert n <= MAX_FUNCTION_LINES or "long because" in doc, f"{path.name}:{node.name} has {n} lines"


def test_one_definition_of_what_must_agree():
    """The feature path, the row validator, the schemas and the fingerprint recipe exist once."""
    sources = {p: p.read_text() for p in _modules()}

    def defined_in(pattern: str) -> list[str]:
        return [p.name for p, s in sources.items() if re.search(pattern, s, re.M)]

    assert defined_in(r"^FLOAT16_MAX = ") == ["compute.py"]
    assert defined_in(r"^class FeatureComputer") == ["compute.py"]
    # extract (features/stage.py; on Ray cluster/extract.py), score (groups.py) and Classifier.predict_proba
    # all compute through it
    assert sorted(defined_in(r"\bFeatureComputer\(")) == ["classifier.py", "extract.py", "groups.py", "stage.py"]
    assert defined_in(r"^class RowValidator") == ["rows.py"]
    assert defined_in(r"^[A-Z_]+ = pa\.schema\(") == ["schemas.py"]  # every schema that is API
    assert sorted(defined_in(r"hashlib\.sha256\(")) == ["fingerprint.py", "loading.py"]  # + the weights hash
    # a model's identity and location keys, and each manifest's typed view
    for name in ("IDENTITY_KEYS", "LEGACY_OPTIONAL", "LOCATION_KEYS"):
        assert defined_in(rf"^{name} = ") == ["names.py"], name
    assert defined_in(r"^class FeatureSetManifest") == ["featureset.py"]
    assert defined_in(r"^class ClassifierManifest") == ["record.py"]


# the modules that own a manifest's JSON: they write it, validate it, or are its typed view
MANIFEST_OWNERS = {"stcstore/store/featureset.py", "stcstore/classifier/manifest.py", "stcstore/classifier/record.py",
                   "stcstore/classifier/files.py"}


def test_manifests_are_read_through_their_typed_views():
    """Nobody reads a feature set's or a classifier's manifest by key: `fs.manifest.dtype`, not
    `fs.manifest["fingerprint"].get("dtype", "float16")` (each default and meaning lives in one place)."""
    by_key = re.compile(r"\bmanifest(\[|\.get\()")
    offenders = [f"{p.relative_to(ROOT)}:{s[:m.start()].count(chr(10)) + 1}"
                 for p in _modules() if str(p.relative_to(ROOT)) not in MANIFEST_OWNERS
                 for s in [p.read_text()] for m in by_key.finditer(s)]
    assert offenders == []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The stcstore modules a module imports when it runs: at module level and inside functions (a lazy import
    is still a dependency), but not under `if TYPE_CHECKING:` (annotations only)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    here = _module_name(path).split(".")
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            package = here if is_pkg else here[:-1]  # what `from .` means here
            base = package[:len(package) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
            for a in node.names:
                out.add(f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in modules and m != _module_name(path)}


def test_no_import_circles():
    """No module depends on itself through others, lazy imports included: every type has one home below
    whatever uses it (a circle is how `FitConfig` in fit/stage.py once tied seven modules of fit/ together)."""
    paths = sorted(PKG.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _runtime_imports(p, modules) for p in paths}
    assert graph["stcstore.fit.search"] >= {"stcstore.fit.grid", "stcstore.fit.validation"}  # the parser sees them
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import circle: " + " -> ".join(path[path.index(n):] + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_cli_options_are_declared_once_with_one_meaning():
    """Every option comes from cli/params.py (none inline in main.py), and an option name means one thing in
    every command: the same destination and type (0.2's renamed spellings are hidden and excluded)."""
    import click

    from stcstore.cli.main import cli

    assert "click.option(" not in (ROOT / "cli" / "main.py").read_text()
    meaning: dict[str, set[tuple[str, str]]] = {}
    for name, command in cli.commands.items():
        for p in command.params:
            if isinstance(p, click.Option) and not p.hidden:
                for opt in p.opts:
                    dest = p.name[:-1] if p.multiple and p.name.endswith("s") else p.name  # --classifier: one or more
                    meaning.setdefault(opt, set()).add((dest, type(p.type).__name__))
    assert {o: m for o, m in meaning.items() if len(m) > 1} == {}
    assert len(meaning) > 60
