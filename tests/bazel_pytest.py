"""Run one pytest module as a Bazel py_test (see BUILD and docs/bazel.md).

Every py_test in BUILD uses this file as `main` and passes its test module as
the first argument; `bazel test --test_arg=...` flags follow it, so they can
override the defaults (e.g. `--test_arg=-m --test_arg=slow` runs only the
slow tests of a module).
"""

import os
import sys
import tempfile

import pytest

NO_TESTS_COLLECTED = 5  # pytest.ExitCode.NO_TESTS_COLLECTED


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: bazel_pytest.py TEST_MODULE [pytest args...]", file=sys.stderr)
        return 2
    # pyproject.toml's addopts (two xdist processes) are replaced: Bazel already runs the test
    # targets side by side, one process each, and may not have pytest-xdist.
    args = ["-o", "addopts=", "-p", "no:xdist", "-q", "-m", "not slow", "-p", "no:cacheprovider"]
    args += argv
    # Temporary files (pytest's tmp_path included) go to this test's private
    # $TEST_TMPDIR, which Bazel empties, not to the /tmp shared with other runs.
    if os.environ.get("TEST_TMPDIR"):
        os.environ["TMPDIR"] = os.environ["TEST_TMPDIR"]
        tempfile.tempdir = None
    # Bazel collects per-test-case results from this JUnit XML file.
    if os.environ.get("XML_OUTPUT_FILE"):
        args.append(f"--junitxml={os.environ['XML_OUTPUT_FILE']}")
    # `bazel test --test_filter=EXPR` arrives here; treat it as `pytest -k EXPR`.
    if os.environ.get("TESTBRIDGE_TEST_ONLY"):
        args += ["-k", os.environ["TESTBRIDGE_TEST_ONLY"]]
    code = pytest.main(args)
    if code == NO_TESTS_COLLECTED:
        # A module whose tests are all marked slow is fine under `-m "not slow"`.
        print(f"bazel_pytest: no test selected in {argv[0]}", file=sys.stderr)
        return 0
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
