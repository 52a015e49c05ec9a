"""The package's layout: components in `reference_impl/`, the course in `reference_impl/workbook/`, imports
one way.

Read from the source (the AST), not from `sys.modules`, so an import inside a function counts as much as one
at the top of a module, and nothing has to be imported to be checked.
"""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import reference_impl

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reference_impl"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name: `reference_impl`, `reference_impl.conv1d`, ..."""
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imported_names(path: Path) -> list[str]:
    """Every module name the file at `path` imports, anywhere in it (see `_imports_in`)."""
    return _imports_in(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")


def _imports_in(source: str, module_name: str, *, is_package: bool) -> list[str]:
    """Every module name `source` imports (top level, in functions, under TYPE_CHECKING), made absolute.

    `from package import name` yields `package.name` as well as `package`, so that the caller can keep
    whichever is a module.
    """
    # The package a relative import starts from: the module itself for an __init__.py, else its parent.
    package = module_name if is_package else module_name.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.append(module)
            names.extend(f"{module}.{alias.name}" for alias in node.names)
    return names


def _import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports by name (not the parent packages Python initialises on the
    way)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        # The modules named by an import; the parent packages Python initialises on the way are left out, as
        # `reference_impl/__init__.py` imports every component and each component imports `reference_impl.x`.
        graph[name] = {imported for imported in _imported_names(path) if imported in modules} - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in `graph` as a list of modules (first == last), or None when it has none."""
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        return list(error.args[1])
    return None


def _component_paths() -> list[Path]:
    return sorted(path for path in PACKAGE.glob("*.py") if path.name != "__init__.py")


@pytest.mark.parametrize("path", _component_paths(), ids=lambda p: p.name)
def test_no_component_imports_the_workbook(path: Path) -> None:
    upward = [name for name in _imported_names(path) if name.split(".")[:2] == ["reference_impl", "workbook"]]
    assert not upward, (
        f"{path.relative_to(ROOT)} imports {sorted(set(upward))}: components never import the course "
        "(reference_impl.workbook imports them, not the other way round)"
    )


def test_the_package_init_imports_no_workbook_module() -> None:
    imported = _imported_names(PACKAGE / "__init__.py")
    assert not [name for name in imported if name.startswith("reference_impl.workbook")], imported


def test_imports_inside_functions_and_relative_imports_are_seen() -> None:
    # The checker itself: a relative import of the workbook, inside a function, must be seen as one.
    source = "def f():\n    from .workbook import lesson\n    from . import conv1d\n    import torch\n"
    names = _imports_in(source, "reference_impl.rope", is_package=False)
    assert {
        "reference_impl.workbook",
        "reference_impl.workbook.lesson",
        "reference_impl.conv1d",
        "torch",
    } == set(names) - {"reference_impl"}
    in_init = _imports_in("from .conv1d import Conv1D\n", "reference_impl", is_package=True)
    assert "reference_impl.conv1d" in in_init


def test_the_package_has_no_import_circle() -> None:
    graph = _import_graph()
    assert "reference_impl.pruning_heads" in graph["reference_impl.pruning_importance"], graph
    circle = _cycle(graph)
    assert circle is None, f"import circle: {' -> '.join(circle or [])}"


def test_the_circle_finder_finds_a_circle() -> None:
    graph = _import_graph()
    # The pruning chain depends one way: pruning <- pruning_heads <- pruning_importance. Close it.
    graph["reference_impl.pruning"] = graph["reference_impl.pruning"] | {"reference_impl.pruning_importance"}
    circle = _cycle(graph)
    assert circle is not None and circle[0] == circle[-1], circle
    assert {
        "reference_impl.pruning",
        "reference_impl.pruning_heads",
        "reference_impl.pruning_importance",
    } <= set(circle)


def _table_names(readme: str, marker: str) -> list[str]:
    """The backticked names in the `names` column of the Markdown table right after `<!-- marker -->`."""
    lines = readme.split(f"<!-- {marker} -->", 1)[1].strip().splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, _rule, *body = rows
    column = header.index("names")
    return [name for row in body for name in re.findall(r"`([^`]+)`", row[column])]


@pytest.mark.parametrize(
    ("marker", "exported"),
    [("transformers-names", "TRANSFORMERS_NAMES"), ("additions", "ADDITIONS")],
)
def test_readme_package_table_lists_exactly_the_exported_names(marker: str, exported: str) -> None:
    listed = _table_names((ROOT / "README.md").read_text(), marker)
    names = getattr(reference_impl, exported)
    assert len(listed) == len(set(listed)), f"a name is listed twice in the README's {marker} table: {listed}"
    assert set(listed) == set(names), (
        f"README's {marker} table and reference_impl.{exported} differ: "
        f"only in the README {sorted(set(listed) - set(names))}, only in the package "
        f"{sorted(set(names) - set(listed))}"
    )


def test_readme_table_parser_reads_only_the_names_column() -> None:
    readme = (
        "<!-- additions -->\n| module | names | what for |\n|---|---|---|\n"
        "| `conv1d` | `a`, `b` | `not_a_name` |\n| `rope` | `c` | x |\n\nafter: `d`\n"
    )
    assert _table_names(readme, "additions") == ["a", "b", "c"]


def test_reference_impl_holds_only_components_and_the_workbook() -> None:
    entries = {path.name for path in PACKAGE.iterdir() if path.name != "__pycache__"}
    others = entries - {path.name for path in _component_paths()} - {"__init__.py", "py.typed", "workbook"}
    assert not others, (
        f"reference_impl/ holds {sorted(others)}: only component modules and workbook/ belong there"
    )
    assert (PACKAGE / "workbook").is_dir() and (PACKAGE / "workbook" / "__init__.py").is_file()


@pytest.mark.parametrize("path", _component_paths(), ids=lambda p: p.name)
def test_every_module_beside_the_workbook_is_a_component(path: Path) -> None:
    # A component is part of what `import reference_impl` loads and says what it mirrors or adds to
    # transformers; course helpers (plots, set-up, data) belong in reference_impl/workbook/.
    graph = _import_graph()
    reached, todo = set(), ["reference_impl"]
    while todo:
        node = todo.pop()
        if node not in reached:
            reached.add(node)
            todo.extend(graph[node])
    name = _module_name(path)
    assert name in reached, (
        f"{name} is not imported by `import reference_impl`: a component is part of the package"
    )
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "transformers" in docstring.partition("\n\n")[2], (
        f"{name}'s docstring must say, after its summary line, what in transformers it mirrors (or that it "
        "is not)"
    )


def test_every_note_a_comment_points_to_exists() -> None:
    # NOTE blocks move next to the code they explain; a "see NOTE [ X ]" left behind must still find one.
    sources = {path: path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}
    defined = {
        title.strip()
        for text in sources.values()
        for title in re.findall(r"^\s*#:? ?NOTE \[ ([^\]]+) \]", text, flags=re.MULTILINE)
    }
    missing = []
    for path, text in sources.items():
        for line in text.splitlines():
            if re.match(r"^\s*#:? ?NOTE \[", line):
                continue  # a definition
            for title in re.findall(r"NOTE \[ ([^\]]+) \]", line):
                prefix = title.strip().removesuffix("...").strip()
                if not any(name.startswith(prefix) for name in defined):
                    missing.append(f"{path.relative_to(ROOT)}: NOTE [ {title} ]")
    assert defined, "no NOTE block found at all: the pattern is wrong"
    assert not missing, f"references to NOTE blocks that do not exist: {missing}"
