"""Row masks (dsketch.store.folds): the folds a function of the global row, a masked fit
equal to the fit of the subset written as its own store, for every curvature."""

import itertools

import numpy as np
import pytest
from model_helpers import poisson_offset_data
from scipy.special import expit

import dsketch
from dsketch.errors import DSketchError, InvalidParameterError
from dsketch.store.folds import RowMask

TIGHT = dsketch.Solver(tol=1e-12, max_iter=300)


def test_folds_are_a_function_of_the_global_row():
    """RowMask.keep on any split of the rows is fold_ids' slice; the folds partition the
    rows, about n / k each; the training and held-out masks are complements."""
    n, k = 10_007, 4
    f = dsketch.fold_ids(n, k, seed=3)
    assert set(np.unique(f)) == set(range(k))
    assert np.all(np.abs(np.bincount(f) - n / k) < 5 * np.sqrt(n / k))
    assert not np.array_equal(f, dsketch.fold_ids(n, k, seed=4))
    for fold in range(k):
        train, test = RowMask(k, fold, seed=3), RowMask(k, fold, seed=3, held_out=True)
        cuts = [0, 1, 999, 5000, 5001, n]
        kept = np.concatenate([train.keep(a, b) for a, b in itertools.pairwise(cuts)])
        np.testing.assert_array_equal(kept, (f != fold).astype(float))
        np.testing.assert_array_equal(test.keep(0, n), (f == fold).astype(float))


@pytest.mark.parametrize("curvature", ["exact", dsketch.Curvature("leverage", size=300),
                                       dsketch.Curvature("uniform", size=400), dsketch.Curvature("rownorm", size=400),
                                       dsketch.Curvature("countsketch", size=400),
                                       dsketch.Curvature("gaussian", size=300)])
def test_masked_store_fit_equals_the_fit_of_the_subset_store(tmp_path, curvature):
    """A fold's training fit through the mask (weights, offsets, intercept, L1; blocks that
    cut across the store's chunks) is the fit of those rows written as a store of their own,
    to 1e-8, whatever the curvature: the objective is normalised by the training weights."""
    rng = np.random.default_rng(0)
    A, y, offset = poisson_offset_data(rng)
    sw = rng.uniform(0.5, 2.0, y.size)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, sample_weight=sw, offset=offset, chunk_rows=300)
    tr = dsketch.fold_ids(y.size, 5, seed=1) != 2
    sub = dsketch.write_problem(tmp_path / "s.zarr", A[tr], y[tr], sample_weight=sw[tr], offset=offset[tr])
    kw = {"model_params": {"l2": 0.002, "l1": 0.004}, "fit_intercept": True, "solver": TIGHT}
    masked = dsketch.fit(spec.with_row_mask(RowMask(5, 2, seed=1)), "poisson", curvature=curvature,
                         cluster=dsketch.Cluster(block_rows=256), **kw)
    ref = dsketch.fit(sub, "poisson", curvature="exact", **kw)
    assert masked.success and ref.success
    assert masked.info["row_mask"] == {"n_folds": 5, "fold": 2, "seed": 1, "held_out": False}
    np.testing.assert_allclose(masked.x, ref.x, atol=1e-8)
    assert masked.fun == pytest.approx(ref.fun, rel=1e-10)
    assert 0 < np.count_nonzero(ref.x[:-1]) < A.shape[1]


@pytest.mark.parametrize("method", ["auto", "lbfgs", "newton", "newton-cg"])
def test_mask_without_stored_weights_on_an_in_memory_problem(method):
    """Without sample weights the mask is the weights; the in-memory route reads it too, and
    every smooth method reaches the subset's optimum."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((800, 6))
    y = (rng.random(800) < expit(A[:, 0] - A[:, 1] + 0.3)).astype(float)
    keep = dsketch.fold_ids(y.size, 3, seed=0) == 1
    solver = dsketch.Solver(method, tol=1e-12, max_iter=300)
    masked = dsketch.fit(dsketch.in_memory(A, y).with_row_mask(RowMask(3, 1, held_out=True)), "logistic",
                         model_params={"l2": 1e-3}, fit_intercept=True, solver=solver)
    ref = dsketch.fit((A[keep], y[keep]), "logistic", model_params={"l2": 1e-3}, fit_intercept=True,
                      curvature="exact", solver=TIGHT)
    assert masked.success
    np.testing.assert_allclose(masked.x, ref.x, atol=1e-9)


def test_a_masked_problem_is_refused_where_weights_mean_nothing():
    """softmax does not take sample weights: a mask is an error, not ignored; a second mask
    and a bad mask are refused."""
    rng = np.random.default_rng(6)
    A = rng.standard_normal((50, 3))
    b = np.full(50, 1 / 50)
    prob = dsketch.in_memory(A, b, np.ones(50))
    with pytest.raises(DSketchError, match="sample_weight"):
        dsketch.fit(prob.with_row_mask(RowMask(2, 0)), "softmax")
    with pytest.raises(InvalidParameterError, match="already"):
        prob.with_row_mask(RowMask(2, 0)).with_row_mask(RowMask(2, 1))
    with pytest.raises(InvalidParameterError, match="fold"):
        RowMask(3, 3)


def test_samplers_spend_their_size_on_the_kept_rows():
    """A masked row has curvature 0, so no sampler draws it: leverage, row-norm and uniform
    sketches all spend their whole size on the kept rows (uniform sampling's rate is size
    over the kept rows, not over all rows)."""
    rng = np.random.default_rng(7)
    A = rng.standard_normal((4000, 5))
    y = rng.poisson(1.0, 4000).astype(float)
    masked = dsketch.in_memory(A, y).with_row_mask(RowMask(2, 0))
    for kind in ("leverage", "rownorm", "uniform"):
        res = dsketch.fit(masked, "poisson", curvature=dsketch.Curvature(kind, size=1000), solver="newton")
        assert res.success
        assert abs(res.history["sketch_rows"].mean() / 1000 - 1) < 0.1, kind


@pytest.mark.parametrize("mask", [RowMask(5, 2, seed=3), RowMask(5, 2, seed=3, held_out=True), "subset"])
def test_uniform_sample_of_a_masked_problem_has_the_size_asked_for(mask):
    """Uniform sampling of a masked problem: sum p_i is exactly s over the kept rows, no
    held-out row is drawn, and the count drawn, over fresh iterations of one fixed seed, is
    within 4 binomial standard deviations of s per draw (Binomial(n_kept, s / n_kept)); the
    old rate s / n would fall short by (1 - kept share) s, over 10 deviations away here."""
    from dsketch.sketch import SketchContext, UniformSampler

    n, s, draws = 20_000, 1_500, 8
    if mask == "subset":
        mask = dsketch.RowSubset.of(np.random.default_rng(1).choice(n, 6_000, replace=False), n)
    prob = dsketch.in_memory(np.ones((n, 1)), np.ones(n)).with_row_mask(mask)
    kept = mask.keep(0, n)
    assert prob.n_kept_rows == int(kept.sum())  # counted without a pass: the hash, or the subset
    if isinstance(mask, RowMask):
        inside = dsketch.fold_ids(n, 5, seed=3) == 2
        assert prob.n_kept_rows == int(np.count_nonzero(inside if mask.held_out else ~inside))
    counts = []
    for it in range(draws):
        ctx = SketchContext(seed=11, iteration=it, n_samples=n, n_features=1, sketch_size=s,
                            n_kept=prob.n_kept_rows)
        got = UniformSampler().sample(np.ones((n, 1)), kept, 0, ctx)
        assert got.expected == pytest.approx(s, rel=1e-12)
        assert kept[got.rows].all()
        counts.append(got.rows.size)
    p = s / kept.sum()
    sd = np.sqrt(draws * kept.sum() * p * (1 - p))
    assert abs(sum(counts) - draws * s) < 4 * sd
    assert draws * s * (1 - kept.mean()) > 10 * sd  # the test tells the two rates apart


def test_masked_fit_with_a_uniform_sketch_draws_its_size_from_the_training_rows(tmp_path):
    """Through a fit on a store, the curvature of each iteration samples about s training
    rows (the fit's recorded sketch rows, binomial tolerance as above)."""
    rng = np.random.default_rng(5)
    n, s = 6_000, 800
    A = rng.standard_normal((n, 4))
    y = (rng.random(n) < expit(A[:, 0])).astype(float)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, chunk_rows=1000).with_row_mask(RowMask(4, 1, seed=2))
    res = dsketch.fit(spec, "logistic", curvature=dsketch.Curvature("uniform", size=s), solver="newton", seed=4)
    rows = res.history["sketch_rows"][res.history["sketch_rows"] > 0]
    n_kept = int(np.count_nonzero(dsketch.fold_ids(n, 4, seed=2) != 1))
    p = s / n_kept
    assert res.success and rows.size >= 3
    assert abs(rows.sum() - rows.size * s) < 4 * np.sqrt(rows.size * n_kept * p * (1 - p))


def test_a_given_row_subset_on_a_store_equals_the_subset_store(tmp_path):
    """RowSubset (any rows, here a random 60%, not a fold) on a store with weights: the fit
    of those rows written as a store of their own; a subset of the wrong length is refused."""
    rng = np.random.default_rng(8)
    A, y, offset = poisson_offset_data(rng, n=700, d=6, k=2)
    sw = rng.uniform(0.5, 2.0, y.size)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, sample_weight=sw, offset=offset, chunk_rows=128)
    rows = np.sort(rng.choice(y.size, 420, replace=False))
    sub = dsketch.write_problem(tmp_path / "s.zarr", A[rows], y[rows], sample_weight=sw[rows], offset=offset[rows])
    kw = {"model_params": {"l2": 1e-3, "l1": 2e-3}, "fit_intercept": True, "solver": TIGHT}
    masked = dsketch.fit(spec.with_row_mask(dsketch.RowSubset.of(rows, y.size)), "poisson", **kw)
    np.testing.assert_allclose(masked.x, dsketch.fit(sub, "poisson", **kw).x, atol=1e-9)
    assert masked.info["row_mask"]["rows"] == 420
    with pytest.raises(InvalidParameterError, match="rows"):
        spec.with_row_mask(dsketch.RowSubset.of(rows, y.size + 1))


class _Stop(Exception):
    pass


def _interrupted(spec, ckpt, **kw):
    """Fit ``spec`` with a checkpoint and stop it after its third iteration."""
    def stop(state):
        if state.iteration == 3:
            raise _Stop

    with pytest.raises(_Stop):
        dsketch.fit(spec, "logistic", checkpoint=ckpt, callback=stop, **kw)


def _checkpoint_problem(tmp_path):
    rng = np.random.default_rng(21)
    A = rng.standard_normal((3000, 6))
    A[:, 0] *= 20.0  # slow enough with a small uniform sketch to leave a checkpoint
    y = (rng.random(3000) < expit(A @ rng.normal(scale=0.3, size=6))).astype(float)
    return dsketch.write_problem(tmp_path / "p.zarr", A, y, chunk_rows=1000)


CKPT_KW = {"curvature": dsketch.Curvature("uniform", size=300), "solver": dsketch.Solver(tol=1e-10, max_iter=100),
           "seed": 3}


@pytest.mark.parametrize("written,resumed", [
    (RowMask(3, 0, seed=1), None),
    (None, RowMask(3, 0, seed=1)),
    (RowMask(3, 0, seed=1), RowMask(3, 1, seed=1)),
    (RowMask(3, 0, seed=1), RowMask(3, 0, seed=2)),
    (RowMask(3, 0, seed=1), RowMask(3, 0, seed=1, held_out=True)),
    (RowMask(3, 0, seed=1), "subset"),
])
def test_a_checkpoint_resumes_only_the_fit_of_the_same_rows(tmp_path, written, resumed):
    """A checkpoint of a masked fit is refused by an unmasked fit and by a fit with another
    mask (another fold, seed, side or a given subset, even of the same rows), and a
    checkpoint of an unmasked fit by a masked one, with a CheckpointMismatchError that
    names both sets of rows; the checkpoint is left as it was."""
    from dsketch.errors import CheckpointMismatchError

    spec = _checkpoint_problem(tmp_path)
    if resumed == "subset":  # the same rows as `written`, but given as indices
        resumed = dsketch.RowSubset.of(np.flatnonzero(dsketch.fold_ids(3000, 3, seed=1) != 0), 3000)
    ckpt = str(tmp_path / "fit.checkpoint")
    _interrupted(spec if written is None else spec.with_row_mask(written), ckpt, **CKPT_KW)
    before = sorted(p.name for p in (tmp_path / "fit.checkpoint").iterdir())
    other = spec if resumed is None else spec.with_row_mask(resumed)
    with pytest.raises(CheckpointMismatchError, match="same rows") as err:
        dsketch.fit(other, "logistic", checkpoint=ckpt, resume=True, **CKPT_KW)
    assert isinstance(err.value, DSketchError)
    assert ("all rows (no row mask)" in str(err.value)) == (written is None or resumed is None)
    assert sorted(p.name for p in (tmp_path / "fit.checkpoint").iterdir()) == before


def test_a_masked_checkpoint_resumes_the_masked_fit(tmp_path):
    """The same mask resumes, and ends where the uninterrupted masked fit ends."""
    spec = _checkpoint_problem(tmp_path)
    mask = RowMask(3, 2, seed=1)
    whole = dsketch.fit(spec.with_row_mask(mask), "logistic", **CKPT_KW)
    ckpt = str(tmp_path / "fit.checkpoint")
    _interrupted(spec.with_row_mask(mask), ckpt, **CKPT_KW)
    resumed = dsketch.fit(spec.with_row_mask(mask), "logistic", checkpoint=ckpt, resume=True, **CKPT_KW)
    assert whole.nit > 4 and resumed.success and resumed.nit == whole.nit
    np.testing.assert_allclose(resumed.x, whole.x, rtol=1e-10)
