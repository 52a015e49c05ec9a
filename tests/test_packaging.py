"""The distribution itself: metadata, conda/pip agreement, the re-exported names."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import reference_impl

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower()


def _environment_pip_lines() -> list[str]:
    # environment.yml is simple enough to read without a YAML parser: the "- " lines under "- pip:".
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    return [line.strip()[2:].strip() for line in lines[start + 1 :] if line.strip().startswith("- ")]


def _expand_extra(extra: str) -> list[str]:
    """The requirements of an extra, with self-references (`name[a,b]`) replaced by those extras' lists."""
    project = _pyproject()["project"]
    found = []
    for req in project["optional-dependencies"][extra]:
        if _name(req) == project["name"]:
            for sub in req[req.index("[") + 1 : req.index("]")].split(","):
                found.extend(_expand_extra(sub.strip()))
        else:
            found.append(req)
    return found


def test_environment_yml_installs_exactly_what_pyproject_declares() -> None:
    project = _pyproject()["project"]
    declared = {_name(r): r for r in project["dependencies"] + _expand_extra("dev")}
    in_conda = {_name(r): r for r in _environment_pip_lines() if r != "-e ."}
    assert "-e ." in _environment_pip_lines(), "environment.yml must install the project itself (- -e .)"
    assert set(in_conda) == set(declared), (
        f"environment.yml and pyproject.toml list different packages: "
        f"only in environment.yml {sorted(set(in_conda) - set(declared))}, "
        f"only in pyproject.toml {sorted(set(declared) - set(in_conda))}"
    )
    for name, req in declared.items():
        if name == "torch":
            # pyproject states the series CI proves; environment.yml (like the README) pins the CPU build in
            # it
            pinned = Version(in_conda[name].removeprefix("torch=="))
            assert pinned in SpecifierSet(req.removeprefix("torch")), (
                f"environment.yml pins {in_conda[name]!r}, outside pyproject.toml's {req!r}"
            )
            continue
        assert in_conda[name] == req, (
            f"{name}: environment.yml says {in_conda[name]!r}, pyproject.toml {req!r}"
        )


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the package files that import it (anywhere in them), standard library left out."""
    import ast

    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "reference_impl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "reference_impl":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


#: Imported by the package but installed by a declared dependency, never on their own.
TRANSITIVE = {
    "numpy": "torch and matplotlib require it",
    "IPython": "ipywidgets and jupyterlab require it",
    "safetensors": "read only for transformers' checkpoints; transformers requires it",
}


def _distribution(module: str) -> str:
    from importlib.metadata import packages_distributions

    return packages_distributions().get(module, [module])[0].lower()


def test_every_third_party_import_of_the_package_is_declared() -> None:
    project = _pyproject()["project"]
    declared = {_name(r) for r in project["dependencies"]}
    declared |= {_name(r) for extra in project["optional-dependencies"] for r in _expand_extra(extra)}
    undeclared = {
        module: sorted(files)
        for module, files in _third_party_imports().items()
        if module not in TRANSITIVE and _distribution(module) not in declared
    }
    assert not undeclared, f"imported by reference_impl but not declared in pyproject.toml: {undeclared}"


def test_every_declared_dependency_is_used_by_the_package() -> None:
    imported = {_distribution(module) for module in _third_party_imports()}
    # Started as `python -m jupyterlab` by the launcher (reference_impl/workbook/lab.py), never imported.
    run_not_imported = {"jupyterlab"}
    unused = [
        req
        for req in _pyproject()["project"]["dependencies"]
        if _name(req) not in imported and _name(req) not in run_not_imported
    ]
    assert not unused, f"declared in pyproject.toml but never used by reference_impl: {unused}"


def test_transformers_pin_is_the_same_everywhere() -> None:
    from reference_impl.workbook.envcheck import PINNED_TRANSFORMERS

    pins = {r for r in _expand_extra("dev") + _expand_extra("lessons") if r.startswith("transformers")}
    assert pins == {f"transformers=={PINNED_TRANSFORMERS}"}, pins
    assert f"transformers=={PINNED_TRANSFORMERS}" in (ROOT / "README.md").read_text()


def test_package_is_typed() -> None:
    assert (Path(reference_impl.__file__).parent / "py.typed").is_file()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["reference_impl"]


@pytest.mark.parametrize("name", sorted(set(reference_impl.__all__) - {"__version__"}))
def test_every_exported_name_is_defined_in_a_component_module(name: str) -> None:
    import pkgutil

    obj = getattr(reference_impl, name)
    homes = [
        info.name
        for info in pkgutil.iter_modules(reference_impl.__path__, "reference_impl.")
        if name in getattr(importlib.import_module(info.name), "__all__", ())
        and getattr(importlib.import_module(info.name), name) is obj
    ]
    assert homes, f"{name} is in reference_impl.__all__ but in no component module's __all__"
    assert not any(home.startswith("reference_impl.workbook") for home in homes), (name, homes)


def test_transformers_names_and_additions_are_disjoint_and_make_all() -> None:
    names, additions = set(reference_impl.TRANSFORMERS_NAMES), set(reference_impl.ADDITIONS)
    assert not names & additions, names & additions
    assert set(reference_impl.__all__) == names | additions | {"__version__"}
    assert len(reference_impl.__all__) == len(set(reference_impl.__all__)), "a name is listed twice"


def test_no_exported_name_is_also_a_submodule_name() -> None:
    # `import reference_impl.x` sets the attribute `x` on the package, which would shadow an exported `x`.
    import pkgutil

    submodules = {info.name for info in pkgutil.iter_modules(reference_impl.__path__)}
    assert not submodules & set(reference_impl.__all__), submodules & set(reference_impl.__all__)


def test_unknown_name_raises_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="no_such_layer"):
        reference_impl.no_such_layer  # noqa: B018


def test_pytest_runs_every_lesson_through_nbval_in_strict_mode() -> None:
    opts = _pyproject()["tool"]["pytest"]["ini_options"]
    assert "lessons" in opts["testpaths"] and "tests" in opts["testpaths"]
    assert "--nbval" in opts["addopts"] and "--nbval-lax" not in opts["addopts"]
    assert "--nbval-current-env" in opts["addopts"]
    assert any(o.startswith("--nbval-sanitize-with") for o in opts["addopts"])


def test_code_is_lint_clean() -> None:
    done = _run_tool("ruff", "check", "reference_impl", "tests", "benchmarks", "scripts")
    assert done.returncode == 0, done.stdout[-3000:]


def test_code_is_formatted() -> None:
    done = _run_tool("ruff", "format", "--check", "reference_impl", "tests", "benchmarks", "scripts")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


def test_line_length_rule_is_on() -> None:
    ruff = _pyproject()["tool"]["ruff"]
    assert ruff["line-length"] == 110
    assert "E501" not in ruff["lint"]["ignore"], "E501 (line too long) must stay on"
    assert "E" in ruff["lint"]["select"]


def _run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.slow
def test_package_type_checks() -> None:
    # mypy reads its settings (the package, the strictness) from [tool.mypy] in pyproject.toml.
    assert _pyproject()["tool"]["mypy"]["packages"] == ["reference_impl"]
    done = _run_tool("mypy")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "Success: no issues found" in done.stdout, done.stdout[-3000:]
