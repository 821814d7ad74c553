"""The docs' relative links: every file and heading they point to is in the repository; and the
README, the page a newcomer reads first, stays short and leads to every docs page.

The results pages link each number to the committed results.json it came from, so a renamed run
or heading would silently leave a claim without its evidence.
"""

import os
import re
import subprocess

import pytest
from repo_files import CHECKOUT

# The working tree even under `bazel test`: the docs and git's file list are the checkout's.
ROOT = str(CHECKOUT)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _tracked() -> list[str]:
    args = ["git", "ls-files"]
    try:
        out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (the docs are checked in one)")
    return out.split()


def anchor(heading: str) -> str:
    """GitHub's id for a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    return {anchor(h) for h in re.findall(r"^#+ (.*)$", markdown, re.M)}


def broken_links(path: str, markdown: str, tracked: set[str]) -> list[str]:
    """The relative links in `markdown` (the file at repo path `path`) that lead nowhere."""
    broken = []
    for link in LINK.findall(markdown):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:, gs: ...
            continue
        target, _, heading = link.partition("#")
        file = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
        if target and file not in tracked and not any(t.startswith(file + "/") for t in tracked):
            broken.append(f"{link} (no such file)")
        elif heading and file.endswith(".md"):
            text = markdown if file == path else open(os.path.join(ROOT, file)).read()
            if heading not in anchors(text):
                broken.append(f"{link} (no such heading)")
    return broken


def test_anchor_follows_github():
    assert (
        anchor("Budget 0.3: ResNet-56 against ResNet-20") == "budget-03-resnet-56-against-resnet-20"
    )
    assert anchor("Shortcuts at depth 56 (Table 3)") == "shortcuts-at-depth-56-table-3"


def test_broken_links_are_found():
    tracked = {"docs/a.md", "experiments/results/x/results.json"}
    markdown = (
        "# Top\n[ok](../experiments/results/x/results.json) [dir](../experiments/results)"
        " [gone](../experiments/results/y/results.json) [self](#top) [bad](#nothing)"
        " [web](https://example.com/a)"
    )
    assert broken_links("docs/a.md", markdown, tracked) == [
        "../experiments/results/y/results.json (no such file)",
        "#nothing (no such heading)",
    ]


def test_every_relative_link_in_the_docs_resolves():
    tracked = set(_tracked())
    broken = {}
    for path in sorted(p for p in tracked if p.endswith(".md")):
        with open(os.path.join(ROOT, path)) as f:
            found = broken_links(path, f.read(), tracked)
        if found:
            broken[path] = found
    assert broken == {}


# What a newcomer reads first (issue 31): the README stays a ten-minute page and sends the reader
# to every docs page; CI (.ci/run) and the checks before a commit run its two commands verbatim.
README_LINES = 150
README_COMMANDS = (
    "pip install -e '.[test]' && tfresnet train",
    "pip install -e '.[test]' && pytest -q",
)


def test_readme_is_short_runs_as_ci_does_and_links_every_docs_page():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    lines = readme.splitlines()
    assert len(lines) <= README_LINES, "move the detail into a docs/ page and link it"
    assert [c for c in README_COMMANDS if c not in lines] == []
    linked = {os.path.normpath(link.partition("#")[0]) for link in LINK.findall(readme)}
    pages = {p for p in _tracked() if p.startswith("docs/") and p.endswith(".md")}
    pages = {p for p in pages if p.count("/") == 1}  # the pages, not committed outputs
    assert sorted(pages - linked) == []
