#!/usr/bin/env python
"""Would ``pip install scaleinv_utils`` change Colab's preinstalled packages?

The chapters' first cell runs ``pip install "scaleinv_utils[offline-models] @ git+..."`` on
Colab. pip keeps every installed package that satisfies the requirements and upgrades the
others; an upgrade of torch, numpy, pandas, ... can break Colab's own pins and force a runtime
restart. This check replays that install against a committed snapshot of Colab's packages
(``colab-pip-freeze.gpu.txt`` beside this file):

1. a fresh virtual environment gets one stub ``.dist-info`` per package of the snapshot (name
   and version only), so pip sees exactly Colab's versions as installed;
2. ``pip install --dry-run --report`` of the package's dependencies (read from pyproject.toml,
   with the ``offline-models`` extra) resolves against PyPI (or the configured index);
3. every package of the snapshot that pip would install anyway is a change: a change of a core
   package (:data:`CORE`) fails the check, others are listed.

What it proves and what not
---------------------------
It runs pip's real resolver with Colab's versions as the installed set, so a version range that
Colab's torch, numpy, pandas, requests, scikit-learn, transformers or matplotlib do not satisfy,
or a new dependency (nilearn, himalaya, open_clip_torch) whose own requirements they do not
satisfy, shows up as a planned upgrade. It resolves for the Python that runs it (3.11 here,
3.13 on Colab): environment markers, Requires-Python and wheel availability of the *new*
packages are judged for this Python, not Colab's. The stubs declare no dependencies, so
conflicts among Colab's own packages (which pip on Colab would not check either unless it
upgrades them) are not examined. Local version labels (``+cu128``) are dropped; packages
Colab installs from URLs are not stubbed (none is a dependency of this package).

Usage::

    python tests/tools/colab_install_check.py            # exit 1 if a core package would change
    python tests/tools/colab_install_check.py --json out.json
    python tests/tools/colab_install_check.py --refresh freeze.txt --source "googlecolab/backend-info@<sha> (<date>)"
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SNAPSHOT = HERE / "colab-pip-freeze.gpu.txt"
MARKER = "# --- pip freeze ---"
EXTRAS = ("offline-models",)

#: Packages whose change on Colab would break its environment or force a restart.
CORE = ("torch", "numpy", "pandas", "requests", "scikit-learn", "transformers", "matplotlib")


def canonical(name):
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_snapshot(path=SNAPSHOT):
    """{canonical name: version} of the ``name==version`` lines (local labels dropped)."""
    versions = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "==" not in line or " @ " in line:
            continue
        name, version = line.split("==", 1)
        versions[canonical(name)] = version.split("+", 1)[0].strip()
    return versions


def snapshot_source(path=SNAPSHOT):
    """The ``# Source:`` and ``# Snapshot taken:`` lines of the snapshot's header."""
    head = Path(path).read_text().split(MARKER, 1)[0]
    return [ln[2:].strip() for ln in head.splitlines()
            if ln.startswith("# Source:") or ln.startswith("# Snapshot taken:")
            or ln.startswith("#   a") or ln.startswith("#   Ubuntu")]


def requirements(pyproject=ROOT / "pyproject.toml", extras=EXTRAS):
    """The package's install requirements (dependencies plus the given extras)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads(Path(pyproject).read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    return reqs


def _stub_environment(where, versions):
    """A venv (with pip) whose site-packages claims every snapshot package as installed."""
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    python = Path(where) / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    for name, version in versions.items():
        if name in ("pip", "setuptools", "wheel"):
            continue  # the venv's own tools stay real
        info = Path(site) / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("colab-snapshot-stub\n")
        (info / "RECORD").write_text("")
    return python


def check(snapshot=SNAPSHOT, reqs=None, workdir=None, pip_args=()):
    """Resolve the install against the snapshot.

    Returns
    -------
    result : dict
        ``planned`` {name: version} pip would install; ``changed`` {name: (colab, planned)} of
        snapshot packages pip would replace; ``core_changed`` the core subset of ``changed``;
        ``new`` {name: version} of packages Colab lacks; ``python`` the resolving Python.

    Raises
    ------
    RuntimeError
        If pip cannot resolve at all (its message says which requirement conflicts).
    """
    versions = read_snapshot(snapshot)
    missing = [c for c in CORE if c not in versions]
    if missing:
        raise ValueError(f"the snapshot {snapshot} lacks the core packages {missing}.")
    reqs = requirements() if reqs is None else list(reqs)
    with tempfile.TemporaryDirectory(prefix="colab_check_", dir=workdir) as tmp:
        python = _stub_environment(Path(tmp) / "env", versions)
        report = Path(tmp) / "report.json"
        cmd = [str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
               "--disable-pip-version-check", *pip_args, *reqs]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip could not resolve the install against the Colab snapshot:\n"
                               f"{proc.stderr[-4000:]}")
        data = json.loads(report.read_text())
    planned = {canonical(item["metadata"]["name"]): item["metadata"]["version"]
               for item in data.get("install", [])}
    changed = {n: (versions[n], v) for n, v in planned.items() if n in versions}
    return {"planned": planned, "changed": changed,
            "core_changed": {n: changed[n] for n in CORE if n in changed},
            "new": {n: v for n, v in planned.items() if n not in versions},
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "requirements": reqs}


def refresh(freeze, source, snapshot=SNAPSHOT):
    """Replace the snapshot's freeze with ``freeze`` and its source line with ``source``."""
    head = Path(snapshot).read_text().split(MARKER, 1)[0].splitlines()
    out = []
    skip = False
    for ln in head:
        if ln.startswith("# Source:"):
            out.append(f"# Source: {source}, file pip-freeze.gpu.txt.")
            skip = True
            continue
        if skip and ln.startswith("#   "):
            continue
        skip = False
        if ln.startswith("# Snapshot taken:"):
            ln = f"# Snapshot taken: {datetime.date.today().isoformat()}."
        out.append(ln)
    body = Path(freeze).read_text()
    Path(snapshot).write_text("\n".join(out) + "\n" + MARKER + "\n" + body)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshot", default=str(SNAPSHOT))
    ap.add_argument("--json", default=None, help="write the result here")
    ap.add_argument("--refresh", default=None, metavar="FREEZE", help="replace the snapshot's freeze")
    ap.add_argument("--source", default="googlecolab/backend-info", help="with --refresh")
    args = ap.parse_args(argv)
    if args.refresh:
        refresh(args.refresh, args.source, args.snapshot)
        print(f"rewrote {args.snapshot}")
        return 0
    res = check(args.snapshot)
    print(f"Colab snapshot: {'; '.join(snapshot_source(args.snapshot))}")
    print(f"resolved with Python {res['python']}; {len(res['new'])} new packages: "
          + ", ".join(f"{n}=={v}" for n, v in sorted(res["new"].items())))
    for n, (old, new) in sorted(res["changed"].items()):
        print(f"  {'CORE ' if n in CORE else ''}change: {n} {old} -> {new}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if res["core_changed"]:
        print("FAIL: the install would change Colab's core packages "
              + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in res["core_changed"].items()))
        return 1
    print("OK: no core package of Colab changes" + (" (other changes listed above)" if res["changed"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
