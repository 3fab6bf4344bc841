"""Write the book's repository and release into every chapter's install cell.

The one place the project's repository is named is ``repository`` in book/_config.yml:
``url`` (where Colab opens the notebooks and where the install cell installs the package
from) and ``branch`` (the release tag, ``v`` + the version in pyproject.toml). Colab links
are derived from it by Jupyter Book; the install cell of each chapter cannot read the
config (on Colab the package is not installed yet), so this script writes the pinned
requirement into it::

    python book/set_repository.py          # rewrite notebooks/text/*.md (then jupytext --sync)
                                           # and the set-up cell shown in book/contributing.md
    python book/set_repository.py --check  # exit 1 when a chapter disagrees with the config

tests/test_notebooks.py fails when a chapter's install line, the config and the package
version disagree.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "book" / "_config.yml"
TEXTS = ROOT / "notebooks" / "text"
CONTRIBUTING = ROOT / "book" / "contributing.md"  # shows the set-up cell too
# The requirement inside the install cell: "scaleinv_utils[...] @ git+<url>[@<ref>]".
INSTALL_RE = re.compile(r'(scaleinv_utils(?:\[[^\]]*\])? @ )git\+[^"\']+')


def package_version():
    """The version in pyproject.toml (read as text: no TOML parser needed on Python 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, flags=re.M)
    if not match:
        raise ValueError("pyproject.toml has no `version = \"...\"` line.")
    return match.group(1)


def repository():
    """(url, ref) from book/_config.yml's ``repository`` section."""
    import yaml
    config = yaml.safe_load(CONFIG.read_text())["repository"]
    return config["url"].rstrip("/"), str(config["branch"])


def install_requirement(url, ref):
    """The pip requirement the install cell uses: the package pinned at the release."""
    return f"git+{url}@{ref}"


def rewrite(text, requirement):
    """The chapter text with its install requirement replaced (and how many were)."""
    return INSTALL_RE.subn(lambda m: m.group(1) + requirement, text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report disagreements")
    args = parser.parse_args(argv)
    url, ref = repository()
    if ref != f"v{package_version()}":
        print(f"book/_config.yml: repository.branch={ref!r} should be the release tag "
              f"'v{package_version()}' (the version in pyproject.toml).")
        if args.check:
            return 1
    requirement = install_requirement(url, ref)
    changed, bad = [], []
    for path in [*sorted(TEXTS.glob("*.md")), CONTRIBUTING]:
        text = path.read_text()
        new, n = rewrite(text, requirement)
        if n == 0:
            bad.append(f"{path.name}: no install requirement found")
        elif new != text:
            changed.append(path)
            if not args.check:
                path.write_text(new)
    for line in bad:
        print(line)
    if args.check:
        for path in changed:
            print(f"{path.name}: install cell does not use {requirement}")
        return 1 if changed or bad else 0
    chapters = [str(path) for path in changed if path.parent == TEXTS]
    if chapters:
        subprocess.run([str(Path(sys.executable).parent / "jupytext"), "--sync", *chapters],
                       check=True)
    print(f"{len(changed)} chapter(s) updated to {requirement}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
