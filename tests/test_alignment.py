import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scaleinv_utils.alignment import load_table, relate, save_table


def test_matches_scipy_spearman_and_pearson():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=12), rng.normal(size=12)
    assert relate(x, y, random_state=0).statistic == pytest.approx(stats.spearmanr(x, y)[0])
    assert relate(x, y, method="pearson", random_state=0).statistic == pytest.approx(stats.pearsonr(x, y)[0])


def test_recovers_planted_relation():
    rng = np.random.default_rng(1)
    invariance = rng.normal(size=30)
    alignment = 0.9 * invariance + 0.3 * rng.normal(size=30)
    rel = relate(invariance, alignment, n_permutations=1999, random_state=0)
    assert rel.statistic == pytest.approx(stats.spearmanr(invariance, alignment)[0])
    assert rel.statistic > 0.6 and rel.p_value < 0.01
    assert rel.ci_low > 0.3 and rel.ci_low <= rel.statistic <= rel.ci_high


def test_nominal_false_positive_rate_for_independent_scores():
    rng = np.random.default_rng(2)
    p = np.array([relate(rng.normal(size=10), rng.normal(size=10), n_permutations=499,
                         n_bootstrap=10, random_state=i).p_value for i in range(300)])
    rate = np.mean(p < 0.05)
    assert 0.02 <= rate <= 0.09, rate
    # Under the null, p-values are roughly uniform.
    assert 0.4 < np.mean(p < 0.5) < 0.6


def test_permutation_p_matches_exact_for_perfect_rank_order():
    # With 6 models in perfect order, the exact two-sided p is 2/720.
    rel = relate(np.arange(6), np.arange(6) ** 2, n_permutations=50000, random_state=0)
    assert rel.statistic == pytest.approx(1.0)
    assert rel.p_value == pytest.approx(2 / 720, abs=0.002)


def test_errors():
    with pytest.raises(ValueError, match="at least 4 samples"):
        relate([1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="same n_samples"):
        relate([1, 2, 3, 4], [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="constant"):
        relate([1, 1, 1, 1], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="NaN"):
        relate([1, 2, np.nan, 4], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="method"):
        relate([1, 2, 3, 4], [1, 2, 3, 4], method="kendall")


def test_table_roundtrip(tmp_path):
    table = pd.DataFrame({"stability": [0.1, 0.2], "alignment": [0.3, 0.4]}, index=["a", "b"])
    table.attrs.update(ks=[5, 10], profiles={"a": [1.0, 2.0]}, brain={"mean_id": 3.5})
    path = save_table(table, tmp_path / "results" / "models.csv")
    loaded = load_table(path)
    pd.testing.assert_frame_equal(loaded, table)
    assert loaded.attrs == table.attrs
    with pytest.raises(FileNotFoundError, match="compute it first"):
        load_table(tmp_path / "nothing.csv")


def test_pipeline_on_representations_with_planted_order(small_world):
    """Copies of the planted visual signal with more and more isotropic noise are, by
    construction, less aligned with the brain and higher in intrinsic dimension; the
    pipeline must find both orders. (Their dimensional stability is *not* planted: pure
    isotropic noise has a flat ID profile, a caveat the alignment chapter teaches.)"""
    import scaleinv_utils as su
    from scaleinv_utils.alignment import alignment_table, relate_columns

    path, truth = small_world
    subset = su.load_subset(path)
    subj = subset.subject(1)
    visual = np.isin(subj.voxels.network, ["early visual", "mid-level", "category"])
    signal = np.zeros((len(subset.stimuli), int(visual.sum())))
    signal[subj.image_index] = truth["subjects"]["subj01"]["signal"][:, visual]
    base = signal @ np.random.default_rng(0).normal(size=(signal.shape[1], 40)) / 30
    rng = np.random.default_rng(1)
    noise_levels = [0.0, 0.5, 1.0, 2.0, 4.0]
    reps = {f"noise{lvl}": base + lvl * base.std() * rng.normal(size=base.shape) for lvl in noise_levels}
    table = alignment_table(reps, subj, networks=["early visual"], progress=False, n_null=2,
                            n_permutations=50,
                            metadata={k: {"noise": v} for k, v in zip(reps, noise_levels)})
    assert list(table.index) == list(reps)
    # calibrated columns beside the raw ones
    np.testing.assert_allclose(table["cross_scale_similarity_calibrated"],
                               table["cross_scale_similarity"] - table["cross_scale_similarity_null"])
    np.testing.assert_allclose(table["id_cv_calibrated"], table["id_cv"] - table["id_cv_null"])
    assert (table["cka[early visual]"] < table["cka_raw[early visual]"]).all()
    assert table["cka[early visual]"].is_monotonic_decreasing
    assert table["cka_p[early visual]"].iloc[0] == pytest.approx(1 / 51)
    assert table["encoding[early visual]"].is_monotonic_decreasing
    rel = relate_columns(table, "noise", "encoding[early visual]", n_permutations=5000, random_state=0)
    assert rel.statistic == pytest.approx(-1.0) and rel.p_value < 0.02  # exact p = 2/120
    assert table["mean_id"].is_monotonic_increasing
    assert len(table.attrs["brain_profile"]) == len(table.attrs["ks"])
    # Tables with profiles in attrs must still concatenate (pandas compares attrs).
    assert len(pd.concat([table, table.iloc[:1]])) == len(table) + 1
    with pytest.raises(KeyError, match="not in the table"):
        relate_columns(table, "nope", "id_cv")


def test_calibrated_cka_null_matches_linear_cka_on_shuffles():
    from scaleinv_utils import similarity as sm
    from scaleinv_utils.alignment import _linear_cka_shuffle_null

    rng = np.random.default_rng(3)
    F, B = rng.normal(size=(40, 30)), rng.normal(size=(40, 25))
    raw, null = _linear_cka_shuffle_null(F, B, 20, np.random.default_rng(0))
    assert raw == pytest.approx(sm.linear_cka(F, B), abs=1e-12)
    perm_rng = np.random.default_rng(0)
    ref = [sm.linear_cka(F, B[perm_rng.permutation(40)]) for _ in range(20)]
    np.testing.assert_allclose(null, ref, atol=1e-12)
    # unrelated data of this size and dimension have a large raw CKA; the null removes it
    assert raw > 0.4 and abs(raw - null.mean()) < 4 * null.std()
