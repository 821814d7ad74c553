"""Where the tests find the repository's files, the same way under pytest and under `bazel test`.

pytest runs the tests in the checkout. Bazel runs each one in its runfiles tree, symlinks to
just the files BUILD gives the test: the package, the test's sources and `//:files_tests_read`
(docs/, deploy/, tests/data/, ...). Tests read repository files through `repo_file`, never through
`Path(__file__).resolve()`, which under Bazel leaves the runfiles for the checkout and so reads
files that Bazel neither gives the test nor tracks.
"""

import os
from pathlib import Path

# abspath, not resolve(): under Bazel this file is a symlink in the runfiles tree, whose root is
# the tree the test runs in.
ROOT = Path(os.path.abspath(__file__)).parent.parent

# The working tree itself, even under Bazel: only for the tests that compare BUILD or the docs
# with the files checked out (Bazel tag "external" in BUILD: their results are never cached).
CHECKOUT = Path(os.path.realpath(__file__)).parent.parent


def repo_file(path: str) -> Path:
    """`ROOT / path`; under Bazel, a file that the checkout has but the test's runfiles lack is a
    FileNotFoundError that says so and where to add it, rather than a bare missing path."""
    found = ROOT / path
    if not found.exists() and ROOT != CHECKOUT and (CHECKOUT / path).exists():
        raise FileNotFoundError(
            f"{path} is in the checkout but not in this Bazel test's runfiles: add it to the "
            "filegroup files_tests_read in BUILD (or to the py_test's data)"
        )
    return found
