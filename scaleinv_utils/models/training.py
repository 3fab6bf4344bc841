"""Training the demo zoo: one documented, resumable command.

``python -m scaleinv_utils.models train-demo --jobs 2`` trains every model of
:mod:`~scaleinv_utils.models.zoo` that the weights record does not hold yet (or holds
from another set-up), writes its float16 weights and appends its training record
(data size, seed, epochs, steps, learning curve, held-out metrics) to
``demo_models.json``. Stop it at any time: a rerun continues with the models still
missing. The book build never trains.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from . import zoo
from .demo_models import (DEMO_ARCHITECTURE, WEIGHTS_JSON, WordTokenizer,
                          build_demo_module, cosine_lr, demo_corpus, demo_weights_dir,
                          read_weights_json)

__all__ = ["train_demo_models", "train_one", "batch_indices", "LEARNING_RATE"]

LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.05
#: Held-out evaluations recorded along each learning curve.
CURVE_POINTS = 6


def _digest(images, captions):
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(json.dumps([list(c) for c in captions]).encode())
    return h.hexdigest()


stimulus_digest = _digest


@contextlib.contextmanager
def _torch_threads(n):
    """Set torch's intra-op threads for the block and restore them after."""
    import torch
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _locked(path):
    """An exclusive lock beside ``path``: parallel jobs update one record in turn."""
    import fcntl
    with open(str(path) + ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _setup(subset, lr, epochs):
    """Everything that decides the weights besides the model's own spec."""
    from .. import __version__
    from .loaders import _demo_world_version
    st = subset.stimuli
    corpus = demo_corpus()
    tokenizer = WordTokenizer.from_texts([c for caps in corpus["captions"] for c in caps]
                                         + [c for caps in st.captions for c in caps])
    import torch
    setup = {
        "architecture": json.loads(json.dumps(DEMO_ARCHITECTURE)),
        "tokenizer": tokenizer.to_dict(), "label_names": corpus["label_names"],
        "lr": lr, "epochs": epochs, "weight_decay": WEIGHT_DECAY,
        "corpus": {"seed": zoo.CORPUS_SEED, "n_images": len(corpus["images"]),
                   "sha256": _digest(corpus["images"], corpus["captions"])},
    }
    context = {
        "package_version": __version__, "torch_version": torch.__version__,
        "open_clip_version": _version_of("open_clip_torch"),
        "demo_world": {"generator_version": subset.manifest.get("demo_version"),
                       "stimuli_version": _demo_world_version(),
                       "generator": subset.manifest.get("generator"),
                       "stimuli_sha256": _digest(st.images, st.captions)},
    }
    return setup, context, corpus, tokenizer


def _version_of(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # pragma: no cover
        return None


def _as_loaded(module, architecture, tokenizer, setup, name="training"):
    from .catalogue import model_info
    from .loaders import LoadedModel
    arch = setup["architecture"]
    adapter = {"clip": "open_clip", "vision": "demo-vision", "coca": "coca"}[architecture]
    return LoadedModel(info=model_info(name) if name != "training" else None, module=module,
                       device="cpu", weights_id="training", tokenizer=tokenizer,
                       image_size=arch["vision"]["image_size"],
                       image_mean=tuple(arch["image_mean"]), image_std=tuple(arch["image_std"]),
                       adapter=adapter, extra={"label_names": setup["label_names"]})


def batch_indices(sampler, colours, size, rng):
    """The training-set indices of one batch.

    Parameters
    ----------
    sampler : {"uniform", "colour-pair"}
        ``"uniform"``: ``size`` distinct images of the training set. ``"colour-pair"``:
        two colours of the main object drawn at random, half the batch from each (hard
        negatives for a contrastive loss: colour cannot tell these pairs apart); when a
        colour has too few images, the rest of the batch is filled from any other images.
    colours : array of int, shape (n_images,)
        The main object's colour of each training image.
    size : int
        Images per batch, at most ``n_images``.
    rng : numpy.random.Generator

    Returns
    -------
    idx : array of int, shape (size,)
        Distinct indices.
    """
    colours = np.asarray(colours)
    n = len(colours)
    if not 1 <= size <= n:
        raise ValueError(f"size must be between 1 and the {n} training images, got {size}.")
    if sampler == "uniform":
        return rng.choice(n, size=size, replace=False)
    if sampler != "colour-pair":
        raise ValueError(f"sampler must be 'uniform' or 'colour-pair', got {sampler!r}.")
    values = np.unique(colours)
    if len(values) < 2:
        return rng.choice(n, size=size, replace=False)
    pair = rng.choice(values, size=2, replace=False)
    parts = []
    for colour, k in zip(pair, (size // 2, size - size // 2)):
        pool = np.flatnonzero(colours == colour)
        parts.append(rng.choice(pool, size=min(k, len(pool)), replace=False))
    idx = np.concatenate(parts)
    if len(idx) < size:
        rest = np.setdiff1d(np.arange(n), idx)
        idx = np.concatenate([idx, rng.choice(rest, size=size - len(idx), replace=False)])
    return idx


def _loss(module, architecture, x, tokens, labels, coca_loss):
    import torch
    import torch.nn.functional as F
    if architecture == "vision":
        out = module(x)
        return sum(F.cross_entropy(out[a], labels[a]) for a in out) / len(out)
    if architecture == "coca":
        out = module(x, tokens)
        contrastive, caption = coca_loss(out["image_features"], out["text_features"],
                                         out["logits"], out["labels"], out["logit_scale"])
        return contrastive + caption
    zi, zt, scale = module(x, tokens)[:3]
    logits = scale * zi @ zt.T
    target = torch.arange(len(x))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def train_one(name, subset, *, setup, corpus, tokenizer, epochs_override=None,
              n_train_images=None, progress=False):
    """Train one zoo model; return (module, record of its training).

    Parameters
    ----------
    name : str
        A trained member of the zoo.
    subset : Subset
        The demo world (held-out images for the learning curve).
    setup, corpus, tokenizer
        From the training run's shared set-up.
    epochs_override : float or None
        Fewer epochs (tests); the record says so.
    n_train_images : int or None
        Fewer training images than the zoo's spec (tests); the record says so.
    progress : bool

    Returns
    -------
    module : torch.nn.Module
        In eval mode.
    record : dict
    """
    import math

    import torch
    from .._progress import tqdm

    from .evaluation import demo_quality
    spec = zoo.spec(name)
    if not spec.trained:
        raise ValueError(f"{name!r} is a random initialisation: there is nothing to train.")
    arch = setup["architecture"]
    n_classes = {a: len(v) for a, v in setup["label_names"].items()}
    module = build_demo_module(spec.architecture, arch, tokenizer, seed=spec.seed,
                               n_classes=n_classes)
    n = int(n_train_images or spec.n_train_images)
    if n > len(corpus["images"]):
        raise ValueError(f"n_train_images={n} exceeds the corpus ({len(corpus['images'])} images).")
    epochs = setup["epochs"] if epochs_override is None else epochs_override
    b = min(spec.batch_size, n)
    steps = max(1, int(math.ceil(epochs * n / b)))
    proto = _as_loaded(None, spec.architecture, tokenizer, setup)
    with torch.no_grad():
        images = torch.cat([proto.preprocess_images(corpus["images"][i:i + 1024])
                            for i in range(0, n, 1024)])
    tokens = torch.stack([tokenizer(c) for c in corpus["captions"][:n]])  # (n, 5, context)
    labels = {a: torch.as_tensor(v[:n], dtype=torch.long) for a, v in corpus["labels"].items()}
    coca_loss = None
    if spec.architecture == "coca":
        from open_clip.loss import CoCaLoss
        coca_loss = CoCaLoss(caption_loss_weight=1.0, clip_loss_weight=1.0,
                             pad_id=WordTokenizer.PAD)
    opt = torch.optim.AdamW(module.parameters(), lr=setup["lr"], weight_decay=WEIGHT_DECAY)
    rng = np.random.default_rng(1000 + spec.seed)
    colours = labels["colour"].numpy()
    eval_at = set(np.unique(np.linspace(0, steps, CURVE_POINTS + 1).round().astype(int))[1:])
    curve, losses, t0 = [], [], time.time()
    module.train()
    for step in tqdm(range(steps), desc=name, disable=not progress, mininterval=5):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, setup["lr"], max(1, steps // 20))
        idx = batch_indices(spec.sampler, colours, b, rng)
        which = rng.integers(0, tokens.shape[1], size=b)
        loss = _loss(module, spec.architecture, images[idx], tokens[idx, which],
                     {a: v[idx] for a, v in labels.items()}, coca_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if hasattr(module, "logit_scale"):
            with torch.no_grad():  # CLIP clamps the temperature at 100
                module.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if step + 1 in eval_at:
            module.eval()
            q = demo_quality(_as_loaded(module, spec.architecture, tokenizer, setup), subset)
            module.train()
            curve.append({"step": step + 1, "epoch": round((step + 1) * b / n, 2),
                          "train_loss": round(float(np.mean(losses[-max(1, steps // 20):])), 4),
                          **{k: v for k, v in q.items() if not k.startswith("chance")
                             and k not in ("n_images", "median_rank", "top1")}})
    module.eval()
    record = {
        "architecture": spec.architecture, "seed": spec.seed, "n_train_images": n,
        "epochs": round(steps * b / n, 3), "steps": steps, "batch_size": b,
        "sampler": spec.sampler,
        "samples_seen": steps * b, "final_loss": round(float(np.mean(losses[-max(1, steps // 20):])), 4),
        "train_seconds": round(time.time() - t0, 1),
        "n_params_millions": round(sum(p.numel() for p in module.parameters()) / 1e6, 4),
        "curve": curve,
    }
    if epochs_override is not None or n_train_images is not None:
        record["note"] = (f"test run: {record['epochs']} epochs on {n} images, not the zoo's "
                          f"{setup['epochs']} epochs on {spec.n_train_images}")
    return module, record


def save_state(module, path):
    """float16 safetensors of a module's floating tensors (integer buffers kept); its SHA-256."""
    from safetensors.torch import save_file

    from .loaders import file_sha256
    state = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in module.state_dict().items()}
    tmp = Path(str(path) + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)
    return file_sha256(path)


def _update_record(out, setup, context, name=None, entry=None):
    """Read-modify-write of the weights record under a lock (parallel jobs share it)."""
    path = out / WEIGHTS_JSON
    with _locked(path):
        old = read_weights_json(out) or {}
        same = all(old.get(k) == v for k, v in setup.items())
        record = {
            "description": "The demo model zoo, trained on SYNTHETIC demo-world scenes by "
                           "`python -m scaleinv_utils.models train-demo`. Not pretrained models.",
            "command": "python -m scaleinv_utils.models train-demo --jobs 2",
            **context, **setup,
            "split": {"train": f"the first n_train_images of a {setup['corpus']['n_images']:,}-"
                               f"image corpus of demo scenes (seed {zoo.CORPUS_SEED}), not "
                               "the brain's stimuli", "test": "the demo world's shared images"},
            "models": dict(old.get("models", {})) if same else {},
        }
        if name is not None:
            record["models"][name] = entry
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
    return record


def _train_and_save(name, out, subset, setup, context, corpus, tokenizer, epochs_override,
                    progress, threads):
    import torch

    from .loaders import load_model
    from .evaluation import demo_quality
    with _torch_threads(threads):
        module, entry = train_one(name, subset, setup=setup, corpus=corpus, tokenizer=tokenizer,
                                  epochs_override=epochs_override, progress=progress)
        # the weights' bits depend on torch's thread count (1 and 2 threads differ after a
        # few steps), so the record says which one made them
        entry["torch_threads"] = torch.get_num_threads()
        entry["file"] = f"{name}.safetensors"
        entry["sha256"] = save_state(module, out / entry["file"])
        entry["metrics"] = None
        _update_record(out, setup, context, name, entry)
        # held-out metrics from the saved file, exactly as readers will load it
        entry["metrics"] = demo_quality(load_model(name, device="cpu", weights_dir=out), subset)
        _update_record(out, setup, context, name, entry)
    return name, entry


#: The demo world and training set-up of a worker process, set once by
#: :func:`_init_worker` from the parent's (drawing the 8,000-scene corpus takes ~30 s;
#: drawn again for every job it cost the 17-model zoo ~9 CPU-minutes).
_WORKER_STATE = {}


def _init_worker(setup):
    from ..datasets import load_subset
    _WORKER_STATE.update(subset=load_subset("demo"), setup=setup)


def _worker(job):
    (name, out, epochs_override, threads) = job
    setup, context, corpus, tokenizer = _WORKER_STATE["setup"]
    return _train_and_save(name, Path(out), _WORKER_STATE["subset"], setup, context, corpus,
                           tokenizer, epochs_override, False, threads)


#: Relative training cost per image seen (measured on the shipped records: CLIP 3.3 ms,
#: vision-only 2.6 ms, CoCa 4.5 ms per image on one thread), to start the longest first.
COST_PER_IMAGE = {"clip": 1.0, "vision": 0.8, "coca": 1.4}


def _expected_cost(name):
    s = zoo.spec(name)
    return s.steps * s.batch_size * COST_PER_IMAGE[s.architecture]


def train_demo_models(out=None, *, models=None, lr=LEARNING_RATE, epochs=None,
                      epochs_override=None, jobs=1, threads=None, subset=None, retrain=False,
                      progress=True):
    """Train the demo zoo (or part of it) and write weights plus the JSON record.

    Resumable: a model whose record (same set-up: architecture, tokenizer, corpus,
    learning rate, epochs; same batch size and sampler as its zoo spec) and weights file
    are present is skipped unless ``retrain``.

    Parameters
    ----------
    out : str or Path or None
        Output directory (default: the package's ``weights`` directory).
    models : list of str or None
        Zoo names to train (default: every trained member of the zoo).
    lr : float
        Peak learning rate (linear warm-up, cosine decay).
    epochs : int or None
        Epochs over each model's own training set (default :data:`zoo.EPOCHS`).
    epochs_override : float or None
        Train this many epochs instead and say so in the record (tests).
    jobs : int
        Models trained at once, in separate processes (each with ``threads`` threads).
    threads : int or None
        Torch threads per job (default: 1 when ``jobs > 1``, else torch's setting);
        torch's thread count is restored afterwards.
    subset : Subset or None
        The demo world (default ``load_subset("demo")``); ``jobs > 1`` always uses it.
    retrain : bool
    progress : bool

    Returns
    -------
    record : dict
        The weights record as written.

    Raises
    ------
    KeyError
        If a name is not a trained member of the zoo.
    """
    from ..datasets import load_subset
    trainable = zoo.names(trained=True)
    models = list(models or trainable)
    for m in models:
        if zoo.ALIASES.get(m, m) not in trainable:
            from .catalogue import unknown_message
            raise KeyError(unknown_message(m, trainable))
    models = [zoo.ALIASES.get(m, m) for m in models]
    epochs = int(epochs or zoo.EPOCHS)
    out = Path(out or demo_weights_dir())
    out.mkdir(parents=True, exist_ok=True)
    subset = subset if subset is not None else load_subset("demo")
    setup, context, corpus, tokenizer = _setup(subset, lr, epochs)
    record = _update_record(out, setup, context)
    todo = [m for m in models if retrain or not _complete(record, out, m)]
    # longest first, so that parallel jobs finish together
    todo.sort(key=lambda m: -_expected_cost(m))
    if jobs > 1 and len(todo) > 1:
        import multiprocessing as mp
        jobs_list = [(m, str(out), epochs_override, threads or 1) for m in todo]
        with mp.get_context("spawn").Pool(min(jobs, len(todo)), initializer=_init_worker,
                                          initargs=((setup, context, corpus, tokenizer),)) as pool:
            for name, entry in pool.imap_unordered(_worker, jobs_list):
                if progress:
                    print(name, json.dumps(entry["metrics"]), flush=True)
    else:
        for m in todo:
            name, entry = _train_and_save(m, out, subset, setup, context, corpus, tokenizer,
                                          epochs_override, progress, threads)
            if progress:
                print(name, json.dumps(entry["metrics"]), flush=True)
    record = read_weights_json(out)
    if all(_complete(record, out, m) for m in trainable):
        record = write_bars(out, subset)
    return record


def write_bars(out, subset):
    """Add the zoo's design targets, checked on the recorded held-out metrics, to the record.

    Besides :func:`~scaleinv_utils.models.evaluation.zoo_bars`, the brain bar: the best
    image layer of the full-data CLIPs predicts the simulated category network (subject 1,
    R^2 / NC) better than the best layer of random CLIPs (difference of medians, averaged
    over seeds, with a voxel bootstrap interval).
    """
    from .. import stats
    from .evaluation import best_layer_scores, zoo_bars
    from .loaders import load_model
    record = read_weights_json(out)
    bars = zoo_bars({n: e["metrics"] for n, e in record["models"].items()})
    full = max(zoo.DATA_SIZES.values())
    trained = [n for n in zoo.names("clip", True) if zoo.spec(n).n_train_images == full]
    random = zoo.names("clip", trained=False)
    subj = subset.subject()
    category = np.asarray(subj.voxels.network) == "category"

    def scores(names):
        return np.mean([best_layer_scores(load_model(n, device="cpu", weights_dir=out), subset,
                                          voxels=category)[0] for n in names], axis=0)
    t, r = scores(trained), scores(random)
    adv = stats.bootstrap(lambda a, b: np.median(a) - np.median(b), t, r, n_resamples=2000,
                          random_state=0)
    bars["full-data CLIP beats random init in the category network (median R^2/NC)"] = {
        "value": round(float(adv.estimate), 4), "interval": [round(float(adv.low), 4),
                                                             round(float(adv.high), 4)],
        "target": "95% interval excluding 0", "met": bool(adv.low > 0)}
    path = out / WEIGHTS_JSON
    with _locked(path):
        record = read_weights_json(out)
        record["bars"] = bars
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
    return record


def _complete(record, out, name):
    """Whether ``name``'s weights and metrics are present, trained with its current recipe."""
    entry = record.get("models", {}).get(name)
    if not (entry and entry.get("metrics") and (out / entry["file"]).is_file()):
        return False
    spec = zoo.spec(name)
    return entry.get("batch_size") == spec.batch_size and entry["sampler"] == spec.sampler
