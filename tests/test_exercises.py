"""The exercise machinery, and the checks of chapters 0 and 6 with right and wrong answers.
(Each other chapter's checks are tested in that topic's test file.) Also the chapters' form:
each exercise's label, its stub's check and its solution's check name the same exercise,
and the solution's code is inside its one (gated) solution box."""
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


TEXTS = sorted((ROOT / "notebooks" / "text").glob("*.md"))


def exercise_blocks(text):
    """Each exercise of a chapter: from its directive to the next exercise or heading."""
    starts = [m.start() for m in re.finditer(r"^```\{exercise\}", text, flags=re.M)]
    ends = starts[1:] + [len(text)]
    blocks = []
    for start, end in zip(starts, ends):
        heading = re.search(r"^#{1,3} ", text[start:end], flags=re.M)
        blocks.append(text[start:start + heading.start()] if heading else text[start:end])
    return blocks


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.stem)
def test_exercises_are_labelled_checked_and_solved_consistently(path):
    text = path.read_text()
    assert "{solution}" not in text, f"{path.name}: use the gated {{solution-start}}/{{solution-end}}"
    assert not re.search(r"^#+ Exercise \d", text, flags=re.M), f"{path.name}: exercise as a heading"
    blocks = exercise_blocks(text)
    assert blocks, f"{path.name} has no exercises"
    topic = None
    for n, block in enumerate(blocks, 1):
        label = re.search(r"^:label: ([a-z]+)-ex(\d+)$", block, flags=re.M)
        assert label, f"{path.name}: exercise {n} has no label topic-exN"
        topic = topic or label.group(1)
        assert (label.group(1), int(label.group(2))) == (topic, n), \
            f"{path.name}: exercise {n} is labelled {label.group(0)}: number them in order"
        exercise_id = f"{topic}.ex{n}"
        checked = set(re.findall(r'check\("([a-z]+\.ex\d+)"', block))
        assert checked == {exercise_id}, f"{path.name}: {topic}-ex{n} checks {sorted(checked)}"
        solution = re.findall(r"^```\{solution-start\} ([\w-]+)\n:class: dropdown\n```\n"
                              r"(.*?)^```\{solution-end\}", block, flags=re.M | re.S)
        assert [s[0] for s in solution] == [f"{topic}-ex{n}"], \
            f"{path.name}: {topic}-ex{n} needs exactly one dropdown solution box with its label"
        code = solution[0][1]
        assert f'check("{exercise_id}"' in code and "hide-cell" not in code, \
            f"{path.name}: {topic}-ex{n}'s solution code (and its check) belongs inside its box"
        after = block[block.index("{solution-end}"):]
        assert "```{code-cell}" not in after, f"{path.name}: code after {topic}-ex{n}'s solution box"


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


def test_knn_overlap_check_accepts_float64_and_float32_rankings_of_near_ties():
    """Chapter 4's toy (four far-apart clusters): ranking in float64 (a hand computation) and
    in float32 (knn_overlap) may order near-tied neighbours differently; both are right."""
    from scaleinv_utils.neighbors import nearest_neighbors
    from scaleinv_utils.similarity import knn_overlap
    rng = np.random.default_rng(4)  # a seed whose rankings differ at k = 5 and k = 50
    n, ks = 400, [5, 50, 150]
    centres = 30 * rng.normal(size=(4, 8))
    labels = np.repeat(np.arange(4), n // 4)
    X = centres[labels] + rng.normal(size=(n, 8))
    Y = centres[labels] + rng.normal(size=(n, 8))
    gx, gy = nearest_neighbors(X, 150), nearest_neighbors(Y, 150)
    by_hand = np.array([np.mean([len(set(gx.indices[i, :k]) & set(gy.indices[i, :k])) / k
                                 for i in range(n)]) for k in ks])
    assert not np.allclose(by_hand, knn_overlap(X, Y, ks), rtol=0, atol=1e-9)
    assert check("similarity.ex1", by_hand, X=X, Y=Y, ks=ks, verbose=False)
    assert check("similarity.ex1", knn_overlap(X, Y, ks), X=X, Y=Y, ks=ks, verbose=False)
    # Each stimulus counted among its own neighbours: a real mistake, still caught.
    with_self = np.array([np.mean([len({i, *gx.indices[i, :k - 1]} & {i, *gy.indices[i, :k - 1]}) / k
                                   for i in range(n)]) for k in ks])
    res = check("similarity.ex1", with_self, X=X, Y=Y, ks=ks, verbose=False)
    assert not res and "own neighbours" in res.message
    off_by_one_tie = by_hand + 1.0 / (np.array(ks) * n)  # one near-tie swapped: still right
    assert check("similarity.ex1", off_by_one_tie, X=X, Y=Y, ks=ks, verbose=False)
