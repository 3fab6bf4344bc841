"""The exercise machinery, and the checks of chapters 0 and 6 with right and wrong answers.
(Each other chapter's checks are tested in that topic's test file.)"""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import scaleinv_utils as su
from scaleinv_utils.exercises import check, list_exercises

ROOT = Path(__file__).resolve().parents[1]


def test_every_exercise_a_chapter_uses_is_registered():
    used = set()
    for text in (ROOT / "notebooks" / "text").glob("*.md"):
        used |= set(re.findall(r'check\("([a-z]+\.ex[0-9]+)"', text.read_text()))
    assert used and used <= set(list_exercises())


def test_unanswered_and_unknown():
    assert not check("start.ex1", ..., verbose=False)
    assert "no answer yet" in check("start.ex1", None, verbose=False).message
    with pytest.raises(KeyError, match="Unknown exercise 'start.ex9'"):
        check("start.ex9", 1)
    with pytest.raises(KeyError, match="Unknown exercise topic"):
        check("nope.ex1", 1)


@pytest.fixture(scope="module")
def world(small_world):
    subset = su.load_subset(small_world[0])
    return subset, subset.subject(1)


def test_start_checks(world):
    subset, subj = world
    medians = pd.Series(subj.noise_ceiling()).groupby(subj.voxels.network).median()
    assert check("start.ex1", medians.idxmax(), subject=subj, verbose=False)
    wrong = check("start.ex1", medians.idxmin(), subject=subj, verbose=False)
    assert not wrong and "another network is higher" in wrong.message
    assert "not a network" in check("start.ex1", "V9", subject=subj, verbose=False).message
    assert not check("start.ex1", 3, subject=subj, verbose=False)

    test = subj.test
    n_obj = subset.stimuli.attributes["n_objects"][subj.image_index[test]]
    dmn = subj.betas[test][:, subj.voxels.network == "default-mode"].mean(axis=1)
    r = np.corrcoef(n_obj, dmn)[0, 1]
    assert check("start.ex2", r, subset=subset, subject=subj, verbose=False)
    flipped = check("start.ex2", -r, subset=subset, subject=subj, verbose=False)
    assert not flipped and "sign is wrong" in flipped.message
    # All images instead of the test images gives a different number.
    all_r = np.corrcoef(subset.stimuli.attributes["n_objects"][subj.image_index],
                        subj.betas[:, subj.voxels.network == "default-mode"].mean(axis=1))[0, 1]
    if abs(all_r - r) > 0.02:
        assert not check("start.ex2", all_r, subset=subset, subject=subj, verbose=False)


def test_alignment_checks():
    table = pd.DataFrame({"id_cv": [0.1, 0.3, 0.2, 0.5], "cross_scale_similarity": [0.7, 0.5, 0.6, 0.4],
                          "encoding[early visual]": [0.3, 0.1, 0.25, 0.05]}, index=list("abcd"))
    new = pd.concat([table, pd.DataFrame({"id_cv": [0.2], "cross_scale_similarity": [0.6],
                                          "encoding[early visual]": [0.2]}, index=["e"])])
    assert check("alignment.ex1", new, table=table, name="e", verbose=False)
    assert not check("alignment.ex1", table, table=table, name="e", verbose=False)
    assert not check("alignment.ex1", new, table=table, name="f", verbose=False)
    nan_row = new.copy()
    nan_row.loc["e", "id_cv"] = np.nan
    assert "no finite" in check("alignment.ex1", nan_row, table=table, name="e", verbose=False).message

    from scaleinv_utils.alignment import relate_columns
    x, y = "cross_scale_similarity", "encoding[early visual]"
    pearson = relate_columns(table, x, y, method="pearson", random_state=0)
    spearman = relate_columns(table, x, y, random_state=0)
    assert check("alignment.ex2", pearson, table=table, x=x, y=y, verbose=False)
    assert check("alignment.ex2", pearson.statistic, table=table, x=x, y=y, verbose=False)
    if abs(spearman.statistic - pearson.statistic) > 1e-6:
        assert not check("alignment.ex2", spearman, table=table, x=x, y=y, verbose=False)


def test_malformed_answers_get_a_verdict_not_a_crash(world):
    subset, subj = world
    assert not check("start.ex2", np.array([0.1, 0.2]), subset=subset, subject=subj, verbose=False)
    assert not check("start.ex2", "abc", subset=subset, subject=subj, verbose=False)
    with pytest.raises(TypeError, match="needs other inputs"):
        check("start.ex1", "language")
