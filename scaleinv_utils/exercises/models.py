"""Checks for the chapter "Vision-language models and their representations"."""
import numpy as np

from . import CheckResult, close_to, register


def _normalise(z):
    z = np.asarray(z, dtype=float)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def _log_softmax(a, axis):
    a = a - a.max(axis=axis, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=axis, keepdims=True))


def info_nce(image_features, text_features, temperature):
    """Reference symmetric InfoNCE loss (mean over pairs and both directions)."""
    zi, zt = _normalise(image_features), _normalise(text_features)
    logits = zi @ zt.T / temperature
    i2t = -np.mean(np.diag(_log_softmax(logits, axis=1)))
    t2i = -np.mean(np.diag(_log_softmax(logits, axis=0)))
    return 0.5 * (i2t + t2i)


@register("models.ex1")
def _info_nce(answer, image_features, text_features, temperature):
    expected = info_nce(image_features, text_features, temperature)
    result = close_to(answer, expected, rtol=1e-3, what="InfoNCE loss")
    if result.correct:
        return result
    try:
        a = float(answer)
    except (TypeError, ValueError):
        return result
    zi, zt = np.asarray(image_features, float), np.asarray(text_features, float)
    raw = zi @ zt.T / temperature
    one_way = -np.mean(np.diag(_log_softmax(_normalise(zi) @ _normalise(zt).T / temperature, 1)))
    unnormalised = 0.5 * (-np.mean(np.diag(_log_softmax(raw, 1)))
                          - np.mean(np.diag(_log_softmax(raw, 0))))
    if np.isclose(a, one_way, rtol=1e-3):
        result.message += " That is the image-to-text half only: average it with text-to-image."
    elif np.isclose(a, unnormalised, rtol=1e-3):
        result.message += " Normalise each embedding to unit length first (cosine similarity)."
    elif np.isclose(a, info_nce(zi, zt, 1.0), rtol=1e-3):
        result.message += " Divide the similarities by the temperature."
    return result


@register("models.ex2")
def _zero_shot(answer, image_features, prompt_features, labels):
    logits = _normalise(image_features) @ _normalise(prompt_features).T
    expected = float(np.mean(logits.argmax(axis=1) == np.asarray(labels)))
    chance = 1.0 / np.shape(prompt_features)[0]
    return close_to(answer, expected, rtol=0, atol=0.005, what="zero-shot accuracy",
                    hint=f"Predict the class whose prompt is most similar to each image and "
                         f"compare with the labels (chance is {chance:.3f}).")


def participation_ratio(X):
    """(sum of eigenvalues)^2 / sum of squared eigenvalues of the covariance of X."""
    X = np.asarray(X, dtype=float)
    X = X - X.mean(axis=0)
    lam = np.linalg.svd(X, compute_uv=False) ** 2
    return float(lam.sum() ** 2 / (lam ** 2).sum())


@register("models.ex3")
def _layer_pr(answer, features):
    names = [k for k in features]
    expected = np.array([participation_ratio(features[k]) for k in names])
    try:
        a = np.asarray(answer, dtype=float)
    except (TypeError, ValueError):
        return CheckResult(False, f"expected one number per layer ({len(names)}), "
                                  f"got {type(answer).__name__}.")
    if a.shape != expected.shape:
        return CheckResult(False, f"expected one participation ratio per layer, in the order "
                                  f"{names}: shape {expected.shape}, got {a.shape}.")
    uncentred = []
    for k in names:
        lam = np.linalg.svd(np.asarray(features[k], float), compute_uv=False) ** 2
        uncentred.append(lam.sum() ** 2 / (lam ** 2).sum())
    result = close_to(a, expected, rtol=0.01, what="participation ratio of each layer")
    if not result.correct and np.allclose(a, uncentred, rtol=0.01):
        result.message += " Centre each feature (subtract its mean over stimuli) first."
    return result
