"""chalicelib is layered (core < infra < domain < connectors < flow < handlers): imports may only point down
or sideways within a layer, and never in a circle. These tests read the source with ``ast`` (importing
nothing), so an import hidden in a function or under ``if TYPE_CHECKING:`` is caught too."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
RANKS = {"core": 0, "infra": 1, "domain": 2, "connectors": 3, "flow": 4, "handlers": 5}  # chalicelib/__init__: 0


class Import(NamedTuple):
    source: str  # dotted module that imports
    where: str  # "chalicelib/x/y.py:line"
    target: str  # dotted module imported (a package's __init__ is the package's name)


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(root: Path, name: str) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(root: Path) -> Iterator[Import]:
    """Every import in every chalicelib module, at any depth; ``from p import m`` is ``p.m`` when m is a module."""
    for path in sorted((root / "chalicelib").rglob("*.py")):
        source = module_name(root, path)
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        where = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(source, f"{where}:{node.lineno}", alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: strip (level - 1) trailing parts off the containing package
                    kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(kept + ([node.module] if node.module else []))
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    target = submodule if is_module(root, submodule) else base
                    yield Import(source, f"{where}:{node.lineno}", target)


def rank(module: str) -> int | None:
    parts = module.split(".")
    return 0 if parts == ["chalicelib"] else RANKS.get(parts[1]) if parts[0] == "chalicelib" else None


def upward_imports(root: Path) -> list[str]:
    """``where -> target`` for each import of a higher layer (or of a chalicelib module in no layer)."""
    return list(dict.fromkeys(f"{i.where} -> {i.target}" for i in imports(root)
                              if i.target.split(".")[0] == "chalicelib" and rank(i.source) is not None  # else unlayered()
                              and (rank(i.target) is None or rank(i.target) > rank(i.source))))


def cycles(root: Path) -> list[str]:
    """One ``a -> b -> ... -> a`` chain per back edge of a depth-first walk: empty exactly when acyclic."""
    graph: dict[str, set[str]] = {}
    for i in imports(root):
        if i.target.split(".")[0] == "chalicelib":
            graph.setdefault(i.source, set()).add(i.target)
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def imports_of_app(root: Path) -> list[str]:
    return list(dict.fromkeys(f"{i.where} -> {i.target}" for i in imports(root) if i.target.split(".")[0] == "app"))


def unlayered(root: Path) -> list[str]:
    """Files and directories of chalicelib that sit in no layer of RANKS."""
    layers = ", ".join(f"chalicelib/{name}/" for name in sorted(RANKS, key=RANKS.get))
    problems = [f"chalicelib/{path.name}: a module directly under chalicelib/ is in no layer; move it into the "
                f"lowest of {layers} whose imports it needs (all its imports must point to that layer or below)"
                for path in sorted((root / "chalicelib").glob("*.py")) if path.name != "__init__.py"]
    problems += [f"chalicelib/{path.name}/: package not in the RANKS table of tests/test_layers.py; give it a rank "
                 f"there (and check its imports) or move its modules into one of {layers}"
                 for path in sorted((root / "chalicelib").iterdir())
                 if path.is_dir() and path.name not in RANKS and path.name != "__pycache__"
                 and not path.name.startswith(".")]
    return problems


def test_imports_only_point_down():
    assert upward_imports(ROOT) == [], "imports of a higher layer (move the code down or the import up):\n" + \
        "\n".join(upward_imports(ROOT))


def test_no_import_cycles():
    assert cycles(ROOT) == [], "import cycles:\n" + "\n".join(cycles(ROOT))


def test_nothing_in_chalicelib_imports_app():
    assert imports_of_app(ROOT) == [], "app.py is the entry point; chalicelib must not import it:\n" + \
        "\n".join(imports_of_app(ROOT))


def test_every_module_is_in_a_layer():
    assert unlayered(ROOT) == [], "\n".join(unlayered(ROOT))


def test_the_checker_catches_violations(tmp_path):
    files = {
        "__init__.py": "__version__ = '0'\n",
        "stray.py": "",
        "misc/__init__.py": "",
        "core/__init__.py": "",
        "core/errors.py": "def describe():\n    from chalicelib.infra import logs, metrics\n    import app\n",
        "infra/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import chalicelib.flow\n",
        "infra/logs.py": "import chalicelib.infra.metrics\n",
        "infra/metrics.py": "from . import logs\nfrom .. import __version__\n",
    }
    for name, text in files.items():
        (tmp_path / "chalicelib" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "chalicelib" / name).write_text(text)
    assert upward_imports(tmp_path) == ["chalicelib/core/errors.py:2 -> chalicelib.infra.logs",
                                        "chalicelib/core/errors.py:2 -> chalicelib.infra.metrics",
                                        "chalicelib/infra/__init__.py:3 -> chalicelib.flow"]
    assert cycles(tmp_path) == ["chalicelib.infra.logs -> chalicelib.infra.metrics -> chalicelib.infra.logs"]
    assert imports_of_app(tmp_path) == ["chalicelib/core/errors.py:3 -> app"]
    assert [problem.split(":")[0] for problem in unlayered(tmp_path)] == ["chalicelib/stray.py", "chalicelib/misc/"]
