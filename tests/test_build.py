"""BUILD must list every package file and every test file (issue 9).

Plain-text checks, no Bazel needed: the Bazel build (docs/bazel.md) only sees
files that BUILD names, so a module missing there would silently be left out
of `bazel build` / `bazel test`.
"""

import re
from pathlib import Path

import pytest

# The working tree even under `bazel test`: the files to compare BUILD with are those checked out.
from repo_files import CHECKOUT as ROOT

BUILD = ROOT / "BUILD"


def _strip_comments(text: str) -> str:
    """Drop `#` comments (outside string literals) so commented-out entries don't count."""
    lines = []
    for line in text.splitlines():
        quote = None
        for i, ch in enumerate(line):
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                line = line[:i]
                break
        lines.append(line)
    return "\n".join(lines)


def _build_text() -> str:
    assert BUILD.is_file(), f"no BUILD file at {BUILD}"
    return _strip_comments(BUILD.read_text())


def _listed_paths(text: str) -> set[str]:
    return set(re.findall(r"[\"']([^\"'\s]+\.[A-Za-z0-9_]+)[\"']", text))


def _py_test_blocks(text: str) -> dict[str, str]:
    """name -> body of each top-level `py_test(...)` call (closing paren at column 0)."""
    blocks = {}
    for match in re.finditer(r"^py_test\((.*?)^\)", text, re.S | re.M):
        body = match.group(1)
        name = re.search(r"\bname\s*=\s*[\"']([^\"']+)[\"']", body)
        assert name, f"py_test without a name in BUILD:\n{body}"
        blocks[name.group(1)] = body
    return blocks


def _package_files() -> list[str]:
    """Every file of the package, and the modules of benchmarks/ (its scripts come by a glob)."""
    files = []
    for path in sorted((ROOT / "tfresnet").rglob("*")) + sorted((ROOT / "benchmarks").glob("*.py")):
        rel = path.relative_to(ROOT)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
            files.append(rel.as_posix())
    return files


def _test_helpers() -> list[str]:
    """Other tests/*.py (conftest, launcher, subprocess helpers): Bazel needs them too."""
    return [
        p.relative_to(ROOT).as_posix()
        for p in sorted((ROOT / "tests").glob("*.py"))
        if not p.name.startswith("test_")
    ]


def _test_modules() -> list[str]:
    return [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "tests").glob("test_*.py"))]


def test_every_package_file_and_test_module_is_listed_in_build():
    listed = _listed_paths(_build_text())
    wanted = _package_files() + _test_modules() + _test_helpers()
    assert wanted, "found no tfresnet/ files or tests/test_*.py modules"
    missing = [path for path in wanted if path not in listed]
    assert not missing, "BUILD does not list: " + ", ".join(missing)


def test_every_file_build_lists_exists():
    listed = _listed_paths(_build_text())
    gone = sorted(
        path
        for path in listed
        if "/" in path
        and "*" not in path
        and not path.startswith(("@", "//", ":"))
        and not (ROOT / path).exists()
    )
    assert not gone, "BUILD lists files that do not exist: " + ", ".join(gone)


def test_each_test_module_has_its_own_sized_py_test():
    blocks = _py_test_blocks(_build_text())
    problems = []
    for module in _test_modules():
        name = Path(module).stem
        body = blocks.get(name)
        if body is None:
            problems.append(f"{module}: no py_test named {name!r}")
            continue
        if f'"{module}"' not in body:
            problems.append(f"{module}: py_test {name!r} does not list it in srcs")
        if not re.search(r"\bsize\s*=\s*\"(small|medium|large|enormous)\"", body):
            problems.append(f"{module}: py_test {name!r} has no size")
        if '":pytest_support"' not in body:
            problems.append(
                f"{module}: py_test {name!r} does not depend on :pytest_support (the launcher's "
                "helpers and the files tests read)"
            )
    assert not problems, "BUILD py_test problems:\n" + "\n".join(problems)


def test_a_file_missing_from_a_bazel_tests_runfiles_names_the_fix(tmp_path, monkeypatch):
    """A checked-in file that BUILD does not give a test is an error saying where to add it,
    not a bare path in Bazel's cache (issue 30)."""
    import repo_files

    monkeypatch.setattr(repo_files, "ROOT", tmp_path)  # a runfiles tree without docs/
    with pytest.raises(FileNotFoundError, match="^docs/errors.md is in the checkout but not in "):
        repo_files.repo_file("docs/errors.md")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "errors.md").write_text("x")
    assert repo_files.repo_file("docs/errors.md").read_text() == "x"
    # A file the checkout lacks too is the caller's to report.
    assert repo_files.repo_file("docs/none.md") == tmp_path / "docs" / "none.md"
