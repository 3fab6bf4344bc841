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


def test_brain_alignment_fits_only_the_networks_and_accepts_features_of_some_stimuli(small_world):
    """Each voxel's ridge is independent of the others, so fitting only the requested
    networks' voxels gives the scores of a fit to every voxel; features computed on the
    subject's images only (stimulus_index) give the same scores as full-size features."""
    import scaleinv_utils as su
    from scaleinv_utils.alignment import alignment_table, brain_alignment
    from scaleinv_utils.encoding import encoding_scores

    path, _ = small_world
    subset = su.load_subset(path)
    subj = subset.subject(1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(subset.stimuli), 6))
    X[subj.image_index, :3] += subj.betas[:, :3]  # something to predict
    nets = ["early visual", "category"]
    full = encoding_scores(X, subj, random_state=0).r_nc
    out = brain_alignment(X, subj, networks=nets, n_permutations=20, random_state=0)
    for net in nets:
        assert out[f"encoding[{net}]"] == pytest.approx(np.nanmedian(full[subj.voxels.network == net]),
                                                        abs=1e-9)
    idx = subj.image_index[::-1]  # any order
    part = brain_alignment(X[idx], subj, networks=nets, n_permutations=20, random_state=0,
                           stimulus_index=idx)
    assert part == pytest.approx(out, abs=1e-9)
    test_only = subj.image_index[subj.test]
    cka = brain_alignment(X[test_only], subj, networks=nets, n_permutations=20, random_state=0,
                          encoding=False, stimulus_index=test_only)
    assert not any(k.startswith("encoding") for k in cka)
    assert cka["cka[category]"] == pytest.approx(out["cka[category]"], abs=1e-12)
    with pytest.raises(ValueError, match="lacks .* stimuli the subject uses"):
        brain_alignment(X[test_only], subj, networks=nets, stimulus_index=test_only)
    with pytest.raises(ValueError, match="not both"):
        brain_alignment(X[subj.image_index], subj, aligned=True, stimulus_index=subj.image_index)
    t_full = alignment_table({"m": X}, subj, networks=nets, n_null=1, n_permutations=20,
                             n_anchors=100, encoding=False, progress=False)
    t_part = alignment_table({"m": X[idx]}, subj, networks=nets, n_null=1, n_permutations=20,
                             n_anchors=100, encoding=False, stimulus_index=idx, progress=False)
    pd.testing.assert_frame_equal(t_full, t_part)
    assert "encoding[category]" not in t_full.columns
    with pytest.raises(ValueError, match="rows for the 5 entries of stimulus_index"):
        alignment_table({"m": X}, subj, stimulus_index=idx[:5], progress=False)


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


# --------------------------------------------------------------------------- across models, honestly
from scaleinv_utils import stats as st  # noqa: E402
from scaleinv_utils.alignment import (across_models, across_models_table, choose_real_models,  # noqa: E402
                                      data_ladder_control, dial_family, known_answer_control,
                                      local_global_dimension, summarise_layers)


def _scores(n=10, subjects=("subj01", "subj02"), seed=0, effect=0.0):
    rng = np.random.default_rng(seed)
    mean_id = rng.normal(size=n)
    inv = mean_id + rng.normal(size=n)
    rows = []
    for s in subjects:
        align = effect * inv + mean_id + rng.normal(size=n)
        rows += [dict(model=f"m{i}", subject=s, inv=inv[i], align=align[i], mean_id=mean_id[i])
                 for i in range(n)]
    return pd.DataFrame(rows)


def test_across_models_matches_stats_partial_and_spearman_per_subject():
    t = _scores(12, seed=3)
    res = across_models(t, "inv", "align", covariates=("mean_id",), n_permutations=99,
                        n_bootstrap=50, random_state=0)
    for s, value in res.per_subject.items():
        sub = t[t.subject == s]
        assert value == pytest.approx(st.partial_correlation(sub["inv"], sub["align"], sub["mean_id"],
                                                             method="spearman"), abs=1e-12)
    assert res.estimate == pytest.approx(np.mean(list(res.per_subject.values())))
    plain = [st.spearman(t[t.subject == s]["inv"], t[t.subject == s]["align"]) for s in res.per_subject]
    assert res.raw == pytest.approx(np.mean(plain), abs=1e-12)
    pear = across_models(t, "inv", "align", covariates=(), method="pearson", n_permutations=99,
                         n_bootstrap=50, random_state=0)
    sub = t[t.subject == "subj01"]
    assert pear.per_subject["subj01"] == pytest.approx(st.pearson(sub["inv"], sub["align"]), abs=1e-12)


def test_identical_subjects_give_the_one_subject_answer():
    one = _scores(9, subjects=("a",), seed=4)
    two = pd.concat([one, one.assign(subject="b")])
    r1 = across_models(one, "inv", "align", n_permutations=199, n_bootstrap=200, random_state=5)
    r2 = across_models(two, "inv", "align", n_permutations=199, n_bootstrap=200, random_state=5)
    assert (r2.estimate, r2.low, r2.high, r2.p_value) == pytest.approx((r1.estimate, r1.low, r1.high,
                                                                         r1.p_value))
    assert r2.n_subjects == 2 and r1.n_subjects == 1


def test_perfect_order_reaches_the_exact_permutation_floor():
    t = pd.DataFrame(dict(model=list("abcdef"), inv=np.arange(6.0), align=np.arange(6.0) ** 2))
    res = across_models(t, "inv", "align", covariates=(), n_permutations=4999, n_bootstrap=100,
                        random_state=0)
    assert res.estimate == pytest.approx(1.0)
    # two orders (identity and reversed) of 6! give |rho| = 1: p -> 2/720
    assert res.p_value == pytest.approx(2 / 720, abs=0.0025)
    assert res.low <= res.estimate <= res.high and res.n_replicated == 1


def test_partial_correlation_removes_a_dimension_confound():
    # inv and align both follow mean_id and nothing else: the plain rho is large, the partial is not.
    t = _scores(40, subjects=("s1", "s2", "s3"), seed=6, effect=0.0)
    # Pearson: the confound is linear in the values, so a linear partial removes it exactly.
    res = across_models(t, "inv", "align", covariates=("mean_id",), method="pearson",
                        n_permutations=999, n_bootstrap=200, random_state=1)
    assert res.raw > 0.3
    assert abs(res.estimate) < 0.2 and res.p_value > 0.05
    assert res.low < 0 < res.high
    planted = across_models(_scores(40, subjects=("s1", "s2", "s3"), seed=6, effect=1.5), "inv",
                            "align", n_permutations=999, n_bootstrap=200, random_state=1)
    assert planted.estimate > 0.5 and planted.p_value < 0.01 and planted.low > 0
    assert planted.n_replicated == 3
    assert planted.verdict().verdict == "supports"
    assert planted.verdict(direction="less").verdict == "contradicts"


def test_across_models_errors():
    t = _scores(6)
    with pytest.raises(KeyError, match="column 'nope' is not in the table"):
        across_models(t, "nope", "align")
    with pytest.raises(ValueError, match="method must be"):
        across_models(t, "inv", "align", method="kendall")
    with pytest.raises(ValueError, match="summarise layers first"):
        across_models(pd.concat([t, t]), "inv", "align")
    with pytest.raises(ValueError, match="every subject needs every model"):
        across_models(t.iloc[1:], "inv", "align")
    bad = t.copy()
    bad.loc[0, "align"] = np.nan
    with pytest.raises(ValueError, match=r"columns \['align'\] have NaN"):
        across_models(bad, "inv", "align")
    with pytest.raises(ValueError, match="too few for a correlation given 1 covariates"):
        across_models(_scores(4), "inv", "align")


def test_across_models_table_corrects_with_bh_and_computes_verdicts():
    t = _scores(10, seed=7, effect=2.0)
    t["noise"] = np.random.default_rng(8).normal(size=len(t))
    out = across_models_table(t, ["inv", "noise"], ["align", "mean_id"], covariates=(),
                              directions={"noise": "less"}, n_permutations=499, n_bootstrap=100)
    assert list(out.index) == [("inv", "align"), ("inv", "mean_id"), ("noise", "align"),
                               ("noise", "mean_id")]
    assert out["q_value"].to_numpy() == pytest.approx(st.fdr_bh(out["p_value"].to_numpy()))
    assert out.loc[("inv", "align"), "verdict"] == "supports"
    for r in out.itertuples():
        assert r.verdict == st.verdict(r.estimate, r.low, r.high, r.q_value, direction=r.direction).verdict
    assert out.loc[("noise", "align"), "direction"] == "less"
    assert set(out.attrs["tests"]) == set(out.index)
    with pytest.raises(ValueError, match=r"directions\['inv'\] must be"):
        across_models_table(t, ["inv"], ["align"], directions={"inv": "up"})


def test_summarise_layers_mean_and_named_layer():
    t = pd.DataFrame(dict(model=["a", "a", "b", "b"], layer=["block1", "final"] * 2,
                          score=[1.0, 3.0, 5.0, 9.0], has_language=[True, True, False, False],
                          note=["x", "y", "z", "z"]))
    mean = summarise_layers(t, ["score"]).set_index("model")
    assert mean.loc["a", "score"] == 2.0 and mean.loc["b", "score"] == 7.0
    assert mean.loc["a", "n_layers"] == 2 and bool(mean.loc["b", "has_language"]) is False
    assert "note" not in mean.columns  # varies within a model: not a model property
    final = summarise_layers(t, ["score"], how="final").set_index("model")
    assert final.loc["b", "score"] == 9.0
    per_subject = summarise_layers(pd.concat([t.assign(subject="s1"), t.assign(subject="s2")]),
                                   ["score"])
    assert len(per_subject) == 4 and set(per_subject.subject) == {"s1", "s2"}
    with pytest.raises(ValueError, match="names a layer that models"):
        summarise_layers(t, ["score"], how="block9")
    with pytest.raises(KeyError, match="column 'missing'"):
        summarise_layers(t, ["missing"])


# --------------------------------------------------------------------------- known-answer controls
def test_positive_control_finds_the_planted_relation():
    for seed in range(3):
        scores, res = known_answer_control("positive", 12, n_samples=200, n_permutations=499,
                                           n_bootstrap=300, random_state=seed)
        # the dial works: more noise, less stable ID profile, lower alignment
        assert st.spearman(scores.noise, scores.id_cv) > 0.5
        assert st.spearman(scores.noise, scores.alignment) < -0.5
        assert res.verdict(direction="less").verdict == "supports", str(res)


def test_positive_control_of_the_local_dimension():
    """The noise dial adds dimensions at small scales: the local ID rises with it and the
    alignment falls, so the companion claim's pipeline must find rho(local ID, alignment) < 0."""
    scores, res = known_answer_control("positive", 12, n_samples=200, n_permutations=499,
                                       n_bootstrap=300, x="local_id", random_state=0)
    assert st.spearman(scores.noise, scores.local_id) > 0.5
    assert res.x == "local_id" and res.verdict(direction="less").verdict == "supports", str(res)
    with pytest.raises(ValueError, match="x must be one of"):
        known_answer_control("positive", 6, x="nope")


def test_negative_control_p_values_are_roughly_uniform_over_seeds():
    p = np.array([known_answer_control("negative", 10, n_samples=150, n_permutations=199,
                                       n_bootstrap=20, random_state=100 + s)[1].p_value
                  for s in range(20)])
    # Binomial(20, 0.05): P(>= 4 below 0.05) = 0.016; uniform p have mean 0.5 (sd of the mean 0.065)
    assert np.sum(p <= 0.05) <= 3
    assert 0.3 < p.mean() < 0.7


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_data_ladder_positive_control_finds_more_data_helps(seed):
    """Size sets the noise dial: A4's more-data test must find a falling ID CV and a rising
    alignment with the (log) training-set size."""
    scores, res = data_ladder_control("positive", n_samples=200, n_permutations=499, n_bootstrap=300,
                                      random_state=seed)
    assert len(scores) == 12 and set(scores.n_pairs) == {1000, 2000, 4000, 8000}
    assert st.spearman(scores.log_pairs, scores.noise) < -0.8   # the plant
    assert res["id_cv"].x == "log_pairs" and res["id_cv"].covariates == ()
    assert res["id_cv"].verdict(direction="less").verdict == "supports", str(res["id_cv"])
    assert res["alignment"].verdict(direction="greater").verdict == "supports", str(res["alignment"])


def test_data_ladder_negative_control_p_values_are_roughly_uniform_over_seeds():
    p = np.array([data_ladder_control("negative", n_samples=150, measures=("id_cv",),
                                      n_permutations=199, n_bootstrap=20,
                                      random_state=200 + s)[1]["id_cv"].p_value
                  for s in range(20)])
    assert np.sum(p <= 0.05) <= 3   # Binomial(20, 0.05): P(>= 4) = 0.016
    assert 0.3 < p.mean() < 0.7


def test_data_ladder_control_errors():
    with pytest.raises(ValueError, match="kind must be"):
        data_ladder_control("neutral")
    with pytest.raises(ValueError, match="sizes must be at least 2 distinct positive"):
        data_ladder_control("positive", sizes=(1000, 1000))
    with pytest.raises(ValueError, match="sizes must be at least 2 distinct positive"):
        data_ladder_control("positive", sizes=(0, 1000))
    with pytest.raises(ValueError, match="at least 5 models, got 2 x 2"):
        data_ladder_control("positive", sizes=(1000, 2000), n_seeds=2)
    with pytest.raises(ValueError, match=r"measures must be among .*\['nope'\]"):
        data_ladder_control("positive", measures=("id_cv", "nope"))


def test_dial_family_shapes_and_errors():
    reps, brain = dial_family([0.0, 0.3], [2, 3], n_samples=50, n_features=8, n_voxels=5,
                              random_state=0)
    assert [r.shape for r in reps] == [(50, 8), (50, 8)] and brain.shape == (50, 5)
    with pytest.raises(ValueError, match="same length"):
        dial_family([0.0, 0.3], [2], random_state=0)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        dial_family([-0.1], [2], random_state=0)
    with pytest.raises(ValueError, match="latent_dims must be >= n_brain_latents=2"):
        dial_family([0.1], [1], random_state=0)
    with pytest.raises(ValueError, match="kind must be"):
        known_answer_control("neutral")
    with pytest.raises(ValueError, match="n_models must be at least 5"):
        known_answer_control("positive", 4)


# --------------------------------------------------------------------------- local vs global dimension
def test_local_global_dimension_on_a_plane_and_a_gaussian():
    rng = np.random.default_rng(0)
    plane = np.zeros((400, 10))
    plane[:, :2] = rng.uniform(size=(400, 2))
    dims = local_global_dimension(plane, [5, 10, 20], n_local=2, random_state=0)
    assert dims["local_id"] == pytest.approx(2.0, abs=0.3)
    assert dims["participation_ratio"] == pytest.approx(2.0, abs=0.1)  # two equal variances
    iso = rng.normal(size=(2000, 6))
    assert local_global_dimension(iso, profile=[1.0, 2.0, 9.0], n_local=2)["local_id"] == 1.5
    assert local_global_dimension(iso, profile=[1.0], n_local=1)["participation_ratio"] == \
        pytest.approx(6.0, rel=0.05)
    with pytest.raises(ValueError, match="n_local must be between 1 and the 1 scales"):
        local_global_dimension(iso, profile=[1.0], n_local=2)


# --------------------------------------------------------------------------- real-data model choice
def test_choose_real_models_by_property():
    from scaleinv_utils.models import model_info
    g = choose_real_models()
    ladder = [model_info(n) for n in g["data_ladder"]]
    assert len(ladder) >= 4
    assert {i.architecture.replace("-quickgelu", "") for i in ladder} == {"ViT-B-32"}
    assert all(i.has_language and i.fusion == "dual" for i in ladder)
    pairs = [i.n_pretraining_pairs for i in ladder]
    assert pairs == sorted(pairs) and pairs[-1] / pairs[0] > 100
    assert g["no_language"] and all(not model_info(n).has_language for n in g["no_language"])
    assert "imagenet-vit-b-32" in g["no_language"]  # the ladder's architecture without language
    assert g["fused"] and all(model_info(n).fusion == "fused" for n in g["fused"])
    assert "minilm" in g["text_only"] and not set(g["text_only"]) & set(g["image"])
    assert len(g["image"]) == len(set(g["image"]))
    assert set(g["image"]) == set(g["data_ladder"] + g["other_clip"] + g["no_language"] + g["fused"])
    assert choose_real_models(["minilm", "imagenet-resnet50"])["image"] == ["imagenet-resnet50"]
