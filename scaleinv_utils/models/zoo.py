"""The demo model zoo: which tiny models exist, on how much data and with which seed.

One table, read by the catalogue (names, metadata), the loaders (architecture, seed)
and the training command (what to train, for how long). Every trained model sees its
training set for the same number of epochs (:data:`EPOCHS`), so a smaller training
set means less data, not more repetition of it. The training sets are nested
(the 1,000-image set is part of the 2,000-image set, ...) and drawn from a corpus of
demo-world scenes that is *not* the brain's stimulus set (as LAION is not NSD).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ZooSpec", "DATA_SIZES", "EPOCHS", "SEEDS", "BATCH_SIZES", "SAMPLERS", "ALIASES",
           "names", "spec"]

#: Training-set sizes of the CLIP data ladder (images, each with five captions).
DATA_SIZES = {"1k": 1000, "2k": 2000, "4k": 4000, "8k": 8000}
#: Epochs over its own training set that every trained model gets.
EPOCHS = 30
#: Seeds per architecture: CLIP at each data size, vision-only, random inits.
SEEDS = (0, 1, 2)
#: Seeds of the fused (CoCa-style) model, the most expensive to train.
COCA_SEEDS = (0, 1)
#: Seed of the corpus the training sets are drawn from (the brain world uses its own).
CORPUS_SEED = 2026
FULL = "8k"

ARCHITECTURES = ("clip", "vision", "coca")
#: Images per training batch. The contrastive models take batches of 64 (more updates per
#: epoch: +0.03 zero-shot shape in a trial; batches of 256 or 512 hurt).
BATCH_SIZES = {"clip": 64, "vision": 128, "coca": 64}
#: How a training batch is drawn. ``"uniform"``: any images of the training set.
#: ``"colour-pair"``: half the batch from each of two colours of the main object, so that
#: colour alone cannot tell most image-caption pairs of the batch apart (hard negatives);
#: with uniform batches the demo CLIPs learned colour words first and shape late.
SAMPLERS = {"clip": "colour-pair", "vision": "uniform", "coca": "colour-pair"}


@dataclass(frozen=True)
class ZooSpec:
    """One model of the zoo.

    Attributes
    ----------
    name : str
    architecture : {"clip", "vision", "coca"}
    trained : bool
        False for a random initialisation (built from ``seed`` at load time; no weights).
    seed : int
        Seeds the initialisation and, when trained, the order of the training batches.
    n_train_images : int
        Size of the training set (0 for random inits).
    """

    name: str
    architecture: str
    trained: bool
    seed: int
    n_train_images: int

    @property
    def has_language(self):
        return self.trained and self.architecture in ("clip", "coca")

    @property
    def modalities(self):
        return {"clip": ("image", "text"), "vision": ("image",),
                "coca": ("image", "text", "multimodal")}[self.architecture]

    @property
    def batch_size(self):
        """Images per training batch (see :data:`BATCH_SIZES`)."""
        return BATCH_SIZES[self.architecture]

    @property
    def sampler(self):
        """How training batches are drawn (see :data:`SAMPLERS`)."""
        return SAMPLERS[self.architecture]

    @property
    def steps(self):
        """Training steps: :data:`EPOCHS` passes over the training set, the last batch full
        (as :func:`~scaleinv_utils.models.training.train_one` counts them)."""
        return -(-EPOCHS * self.n_train_images // self.batch_size) if self.trained else 0


def _build():
    table = {}
    for label, n in DATA_SIZES.items():
        for seed in SEEDS:
            table[f"demo-clip-{label}-s{seed}"] = ZooSpec(f"demo-clip-{label}-s{seed}", "clip",
                                                         True, seed, n)
    for seed in SEEDS:
        table[f"demo-vision-s{seed}"] = ZooSpec(f"demo-vision-s{seed}", "vision", True, seed,
                                                DATA_SIZES[FULL])
    for seed in COCA_SEEDS:
        table[f"demo-coca-s{seed}"] = ZooSpec(f"demo-coca-s{seed}", "coca", True, seed,
                                              DATA_SIZES[FULL])
    for arch in ARCHITECTURES:
        for seed in SEEDS:
            name = f"demo-random-{arch}-s{seed}"
            table[name] = ZooSpec(name, arch, False, seed, 0)
    return table


_ZOO = _build()

#: Short names the chapters use for the zoo's reference members.
ALIASES = {
    "demo-clip-full-data": f"demo-clip-{FULL}-s0",
    "demo-clip-medium-data": "demo-clip-2k-s0",
    "demo-clip-small-data": "demo-clip-1k-s0",
    "demo-vision-only": "demo-vision-s0",
    "demo-coca": "demo-coca-s0",
    "demo-random": "demo-random-clip-s0",
}


def names(architecture=None, trained=None):
    """Names of the zoo's models, optionally filtered.

    Parameters
    ----------
    architecture : {"clip", "vision", "coca"} or None
    trained : bool or None
        True: trained models only; False: random initialisations only.

    Returns
    -------
    names : list of str
    """
    if architecture is not None and architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES} or None, "
                         f"got {architecture!r}.")
    return [n for n, s in _ZOO.items()
            if (architecture is None or s.architecture == architecture)
            and (trained is None or s.trained == trained)]


def spec(name):
    """The :class:`ZooSpec` of a zoo model (aliases accepted).

    Raises
    ------
    KeyError
        If ``name`` is not in the zoo.
    """
    name = ALIASES.get(name, name)
    if name not in _ZOO:
        raise KeyError(f"{name!r} is not in the demo zoo; valid names: {list(_ZOO)}.")
    return _ZOO[name]
