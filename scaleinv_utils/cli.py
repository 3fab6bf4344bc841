"""``scaleinv-data``: get, check and describe real NSD subsets from the shell.

Examples
--------
::

    scaleinv-data info
    scaleinv-data download --subject 1 --roi nsdgeneral --agree-nsd-terms
    scaleinv-data prepare  --subject 1 --roi nsdgeneral --n-train 1000 --agree-nsd-terms
    scaleinv-data verify [--repair]
    scaleinv-data smoke --agree-nsd-terms     # on a machine with internet: check the readers

Every command has a Python twin in :mod:`scaleinv_utils.nsd`
(``download``, ``prepare``, ``verify``, ``info``, ``smoke``). Every failure
ends in one line on stderr (``error: ...``) and a non-zero status: 1 for a
problem, 2 for a refusal (terms not agreed, a subset of that name built from
other parameters). ``SCALEINV_DEBUG=1`` shows the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

__all__ = ["main", "build_parser", "models_main"]


def _add_selection(p):
    p.add_argument("--subject", "-s", type=int, action="append", dest="subjects",
                   help="NSD subject 1..8 (repeat for several; default 1)")
    p.add_argument("--space", action="append", dest="spaces",
                   choices=("func1pt8mm", "fsaverage", "fsaverage5"),
                   help="func1pt8mm volume, fsaverage surface or its fsaverage5 vertices "
                        "(repeat for several subsets; default func1pt8mm)")
    p.add_argument("--roi", default="nsdgeneral",
                   help="nsdgeneral, streams, prf-visualrois, prf-eccrois, floc-faces, floc-bodies, "
                        "floc-places, floc-words, Kastner2015, HCP_MMP1 or cortex (default nsdgeneral)")
    p.add_argument("--no-networks", action="store_true",
                   help="label voxels with the streams atlas only, without the Kastner2015 and "
                        "HCP_MMP1 atlases that name the functional networks")
    p.add_argument("--n-train", default="1000",
                   help="training images per subject, or 'all' (default 1000)")
    p.add_argument("--no-test", action="store_true", help="leave out the shared1000 test images")
    p.add_argument("--sessions", default=None,
                   help="sessions to use, e.g. '1-10' or '1,2,5' (default: all)")
    p.add_argument("--seed", type=int, default=0, help="picks the training images (default 0)")
    p.add_argument("--name", default=None, help="subset name (default: derived from the choice)")
    p.add_argument("--image-size", type=int, default=None, help="resize images (default 425, NSD's)")
    p.add_argument("--trials", choices=("expdesign", "responses"), default="expdesign",
                   help="map trials to images with nsd_expdesign.mat or responses.tsv")
    p.add_argument("--base-url", default=None, help="NSD bucket root (default the public S3 bucket)")
    p.add_argument("--cache", default=None, help="download cache (default $SCALEINV_DATA/nsd)")
    p.add_argument("--agree-nsd-terms", action="store_true",
                   help="agree to NSD's terms of use (https://naturalscenesdataset.org/); "
                        "or set SCALEINV_NSD_AGREE=1")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.add_argument("--retries", type=int, default=5,
                   help="attempts per request after the first without progress (default 5)")


def build_parser():
    """The argparse parser of ``scaleinv-data``."""
    parser = argparse.ArgumentParser(
        prog="scaleinv-data",
        description="Download, prepare and verify real NSD subsets for the scaleinv book.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("download", help="fetch the small NSD files a subset needs into the cache")
    _add_selection(p)
    p = sub.add_parser("prepare", help="build a subset (range-reads betas and images)")
    _add_selection(p)
    p.add_argument("--out", default=None, help="where subsets go (default $SCALEINV_DATA/subsets)")
    p.add_argument("--captions", action="append", default=None,
                   help="COCO caption file or URL (json or zip; repeatable; default "
                        "$SCALEINV_COCO_URL, else <base-url>/coco/annotations_trainval2017.zip for "
                        "a base URL other than NSD's, else COCO's own 2017 zip)")
    p.add_argument("--overwrite", "--force", action="store_true", dest="overwrite",
                   help="rebuild an existing subset (also one built with other parameters)")
    p = sub.add_parser("verify", help="re-check every cached file and prepared NSD subset")
    p.add_argument("--cache", default=None)
    p.add_argument("--size-only", action="store_true", help="skip checksums")
    p.add_argument("--repair", action="store_true",
                   help="fetch damaged cached files again and rebuild damaged NSD subsets")
    p = sub.add_parser("smoke", help="read a few byte ranges of the real bucket's beta and "
                                     "stimulus files and compare them with h5py's own slicing")
    p.add_argument("--subject", "-s", type=int, default=1)
    p.add_argument("--session", type=int, default=1)
    p.add_argument("--base-url", default=None)
    p.add_argument("--agree-nsd-terms", action="store_true")
    p = sub.add_parser("info", help="where things are, what is cached, whether terms are agreed")
    p.add_argument("--cache", default=None)
    return parser


def _parse_sessions(text):
    if text is None:
        return None
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def _specs(args):
    from .nsd import NSDSpec
    n_train = None if str(args.n_train).lower() == "all" else int(args.n_train)
    return [NSDSpec(subjects=args.subjects or [1], space=space, roi=args.roi, n_train=n_train,
                    test=not args.no_test, sessions=_parse_sessions(args.sessions),
                    random_state=args.seed, name=args.name, image_size=args.image_size,
                    trials=args.trials, networks=not args.no_networks)
            for space in (args.spaces or ["func1pt8mm"])]


def _one_line(text):
    return " ".join(str(text).split())


def _warning_line(message, category, filename, lineno, file=None, line=None):
    return f"warning: {_one_line(message)}\n"


def main(argv=None):
    """Run ``scaleinv-data``; returns the exit status (0 ok, 1 problems found, 2 refused)."""
    args = build_parser().parse_args(argv)
    old_format = warnings.formatwarning
    warnings.formatwarning = _warning_line
    try:
        return _run(args)
    except Exception as exc:  # noqa: BLE001 (the CLI's promise: one line, not a traceback)
        from . import nsd
        if os.environ.get("SCALEINV_DEBUG"):
            raise
        if isinstance(exc, nsd.TermsNotAccepted):
            print(str(exc), file=sys.stderr)
            return 2
        if isinstance(exc, nsd.SpecMismatch):
            print(f"refused: {_one_line(exc)}", file=sys.stderr)
            return 2
        from .remote import DownloadError
        known = (DownloadError, ValueError, FileNotFoundError, KeyError, OSError)
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        kind = "" if isinstance(exc, known) else f"{type(exc).__name__}: "
        print(f"error: {kind}{_one_line(text)} (SCALEINV_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = old_format


def _run(args):
    from . import nsd

    if args.command == "info":
        print(nsd.info(cache=args.cache))
        return 0
    if args.command == "verify":
        problems = nsd.verify(cache=args.cache, checksum=not args.size_only, repair=args.repair)
        for path, what in problems.items():
            print(f"PROBLEM {path}: {what}")
        if not problems:
            print("all cached files and subsets verified" + (" (after repair)" if args.repair else ""))
        else:
            print(f"{len(problems)} problem(s)" + ("" if args.repair else
                                                    "; `scaleinv-data verify --repair` repairs them"))
        return 1 if problems else 0
    if args.command == "smoke":
        report = nsd.smoke(agree_terms=args.agree_nsd_terms, base_url=args.base_url,
                           subject=args.subject, session=args.session)
        for check, ok, detail in report:
            print(f"{'OK  ' if ok else 'FAIL'} {check}: {detail}")
        return 0 if all(ok for _, ok, _ in report) else 1
    from .remote import HTTPClient

    client = HTTPClient(retries=args.retries, progress=not args.quiet)
    for spec in _specs(args):
        if args.command == "download":
            paths = nsd.download(spec, agree_terms=args.agree_nsd_terms, base_url=args.base_url,
                                 cache=args.cache, client=client, progress=not args.quiet)
            print(f"{len(paths)} files cached for {spec.name}")
        else:
            path = nsd.prepare(spec, agree_terms=args.agree_nsd_terms, base_url=args.base_url,
                               cache=args.cache, out_dir=args.out, overwrite=args.overwrite,
                               captions=args.captions, client=client, progress=not args.quiet)
            print(f"subset ready: {path}\nload it with scaleinv_utils.load_subset({str(path)!r})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def models_main(argv=None):
    """``python -m scaleinv_utils.models``: train the demo zoo (resumable) or list models."""
    import json

    from . import models
    parser = argparse.ArgumentParser(
        prog="python -m scaleinv_utils.models",
        description="Train the demo model zoo (resumable: a rerun trains only what is missing) "
                    "or list the catalogue.")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train-demo", help="train the demo zoo on the demo world's corpus")
    tr.add_argument("--out", default=str(models.demo_weights_dir()))
    tr.add_argument("--models", nargs="*", default=None, help="zoo names (default: all trained)")
    tr.add_argument("--jobs", type=int, default=1, help="models trained at once (processes)")
    tr.add_argument("--threads", type=int, default=None, help="torch threads per job")
    tr.add_argument("--epochs", type=int, default=None)
    tr.add_argument("--epochs-override", type=float, default=None,
                    help="train this many epochs instead (tests; recorded)")
    tr.add_argument("--lr", type=float, default=None)
    tr.add_argument("--retrain", action="store_true", help="retrain models already recorded")
    tr.add_argument("--quiet", action="store_true")
    ls = sub.add_parser("list", help="list the catalogue")
    ls.add_argument("--kind", default=None)
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in models.list_models(args.kind):
            print(name)
        return 0
    kwargs = {} if args.lr is None else {"lr": args.lr}
    record = models.train_demo_models(args.out, models=args.models, jobs=args.jobs,
                                      threads=args.threads, epochs=args.epochs,
                                      epochs_override=args.epochs_override,
                                      retrain=args.retrain, progress=not args.quiet, **kwargs)
    if not args.quiet:
        for name, entry in record["models"].items():
            print(name, json.dumps(entry.get("metrics")))
    return 0
