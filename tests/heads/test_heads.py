import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone

from pipeline.heads.linear_svm import LinearSVMHead
from pipeline.heads.mlp import MLPHead

D = 32
N_PER_CLASS = 250


def blobs(*, separation: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three object classes and a "background" class (label 3), unit Gaussian blobs in 32-d.

    Centres ~ N(0, separation^2) per axis: 3.0 is well separated, 0.4 overlaps (~80% accuracy).
    Axes are then stretched from 0.01 to 100 and offset, so a head that skips scaling fails.
    """
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(0.0, separation, size=(4, D))
    y = np.repeat(np.arange(4), N_PER_CLASS)
    X = centres[y] + rng.normal(size=(len(y), D))
    X = X * np.logspace(-2, 2, D) + 50.0  # feature scales apart, as in CNN features
    order = rng.permutation(len(y))
    return X[order].astype(np.float32), y[order]


def chunked(X: np.ndarray, y: np.ndarray, n: int):
    """A chunks(epoch) callable over n pieces, the piece order shuffled per epoch."""
    pieces = list(zip(np.array_split(X, n), np.array_split(y, n), strict=True))

    def chunks(epoch: int):
        order = np.random.default_rng(epoch).permutation(n)
        return [pieces[i] for i in order]

    return chunks


def small_mlp(**kw) -> MLPHead:
    return MLPHead(**{"hidden": 32, "epochs": 8, "batch_size": 64, **kw})


HEADS = {"mlp": small_mlp, "svm": lambda **kw: LinearSVMHead(**{"epochs": 5, **kw})}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny networks gain nothing from threads, and idle-spinning threads crawl on a busy host."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    X, y = blobs()
    Xt, yt = blobs(seed=1)
    return X, y, Xt, yt


@pytest.mark.parametrize("name", HEADS)
def test_high_accuracy_on_separated_blobs(name, data):
    X, y, Xt, yt = data
    head = HEADS[name]().fit(X, y)
    assert head.score(Xt, yt) > 0.95
    np.testing.assert_array_equal(head.classes_, [0, 1, 2, 3])
    assert head.n_features_in_ == D
    assert head.predict_proba(Xt).dtype == np.float64
    assert head.decision_function(Xt).shape == (len(Xt), 4)


@pytest.mark.parametrize("name", HEADS)
def test_streaming_in_five_chunks_reaches_same_accuracy(name, data):
    X, y, Xt, yt = data
    head = HEADS[name]().fit_stream(chunked(X, y, 5))
    assert head.score(Xt, yt) > 0.95


@pytest.mark.parametrize("name", HEADS)
def test_fit_is_fit_stream_over_one_chunk(name, data):
    X, y, Xt, _ = data
    a = HEADS[name]().fit(X, y)
    b = HEADS[name]().fit_stream(lambda epoch: [(X, y)])
    np.testing.assert_array_equal(a.decision_function(Xt), b.decision_function(Xt))


def test_chunked_statistics_match_the_whole_array(data):
    X, y, _, _ = data
    empty = (X[:0], y[:0])  # an empty shard is skipped, not an error
    head = LinearSVMHead(epochs=1).fit_stream(lambda e: [empty, *chunked(X, y, 7)(e), empty])
    np.testing.assert_allclose(head.mean_, X.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(head.scale_, X.astype(np.float64).std(0), rtol=1e-4)
    np.testing.assert_array_equal(head.class_counts_, np.bincount(y))
    assert head.n_samples_seen_ == len(y)


def test_mlp_probabilities_are_a_distribution(data):
    X, y, Xt, _ = data
    proba = small_mlp().fit(X, y).predict_proba(Xt)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert (proba >= 0).all()


def test_svm_probabilities_are_sigmoid_of_margins():
    X, y = blobs(separation=0.4)  # overlapping classes and a small C keep margins moderate
    Xt, _ = blobs(separation=0.4, seed=1)
    head = LinearSVMHead(C=0.01, epochs=3).fit(X, y)
    margins, proba = head.decision_function(Xt), head.predict_proba(Xt)
    assert np.abs(margins).max() < 15  # beyond ~17 a float32 sigmoid rounds to 1
    assert ((proba > 0) & (proba < 1)).all()
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-margins.astype(np.float64))), rtol=1e-5)
    for k in range(4):  # monotone per class: the order of margins is the order of probas
        order = np.argsort(margins[:, k], kind="stable")
        assert (np.diff(proba[order, k]) >= 0).all()
    assert not np.allclose(proba.sum(1), 1.0)  # not normalised across classes, as documented


@pytest.mark.parametrize("name", HEADS)
def test_seed_determines_the_model(name, data):
    X, y, Xt, _ = data
    a = HEADS[name](seed=3).fit_stream(chunked(X, y, 3))
    b = HEADS[name](seed=3).fit_stream(chunked(X, y, 3))
    c = HEADS[name](seed=4).fit_stream(chunked(X, y, 3))
    np.testing.assert_array_equal(a.predict_proba(Xt), b.predict_proba(Xt))
    assert not np.allclose(a.decision_function(Xt), c.decision_function(Xt))


def test_seed_changes_the_weights():
    X, y = blobs()
    a, b = small_mlp(seed=0).fit(X, y), small_mlp(seed=1).fit(X, y)
    assert not np.allclose(a.model_[0].weight.detach(), b.model_[0].weight.detach())
    a, b = LinearSVMHead(seed=0).fit(X, y), LinearSVMHead(seed=1).fit(X, y)
    assert not np.allclose(a.sgd_.coef_, b.sgd_.coef_)


def test_fit_leaves_the_global_torch_generator_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    small_mlp(epochs=1).fit(*blobs())
    np.testing.assert_array_equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", HEADS)
def test_clone_and_get_params(name, data):
    X, y, _, _ = data
    head = HEADS[name](seed=5, class_weight={1: 2.0})
    params = head.get_params()
    assert params["seed"] == 5 and params["class_weight"] == {1: 2.0}
    assert type(head)(**params).get_params() == params
    copy = clone(head.fit(X, y))
    assert copy.get_params() == params
    assert not hasattr(copy, "classes_")
    assert head.set_params(seed=6).seed == 6


@pytest.mark.parametrize("name", HEADS)
def test_joblib_round_trip(name, data, tmp_path):
    X, y, Xt, _ = data
    head = HEADS[name]().fit(X, y)
    joblib.dump(head, tmp_path / "head.joblib")
    loaded = joblib.load(tmp_path / "head.joblib")
    np.testing.assert_array_equal(loaded.predict_proba(Xt), head.predict_proba(Xt))
    assert loaded.loss_curve_ == head.loss_curve_


@pytest.mark.parametrize("name", HEADS)
def test_upweighting_a_class_raises_its_recall(name):
    X, y = blobs(separation=0.4)
    Xt, yt = blobs(separation=0.4, seed=1)

    def recall(head):
        return (head.fit(X, y).predict(Xt)[yt == 1] == 1).mean()

    plain = recall(HEADS[name]())
    weighted = recall(HEADS[name](class_weight={1: 4.0}))
    assert weighted > plain + 0.05


def test_balanced_class_weight_is_inverse_frequency():
    X, y = blobs(separation=0.4)
    keep = (y != 2) | (np.arange(len(y)) % 5 == 0)  # class 2 five times rarer
    X, y = X[keep], y[keep]
    counts = np.bincount(y)
    weights = {k: len(y) / (4 * counts[k]) for k in range(4)}
    a = small_mlp(class_weight="balanced").fit(X, y)
    b = small_mlp(class_weight=weights).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    plain = small_mlp().fit(X, y).predict(X)[y == 2]
    assert (a.predict(X)[y == 2] == 2).mean() > (plain == 2).mean()


def test_unknown_class_weight_label_is_an_error(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="label 9"):
        LinearSVMHead(class_weight={9: 2.0}).fit(X, y)


@pytest.mark.parametrize("name", HEADS)
def test_stats_pass_reads_every_row_once_then_one_pass_per_epoch(name, data):
    X, y, _, _ = data
    inner = chunked(X, y, 4)
    calls = []

    def chunks(epoch):
        calls.append([epoch, 0])
        for piece in inner(epoch):  # a generator: a second iteration would see nothing
            calls[-1][1] += len(piece[1])
            yield piece

    head = HEADS[name](epochs=3).fit_stream(chunks)
    assert calls == [[0, len(y)], [0, len(y)], [1, len(y)], [2, len(y)]]
    assert head.n_samples_seen_ == len(y)
    np.testing.assert_array_equal(head.class_counts_, np.bincount(y))


@pytest.mark.parametrize("name", HEADS)
def test_loss_curve_decreases_and_is_reported(name):
    X, y = blobs(separation=0.4)
    seen = []
    head = HEADS[name](epochs=6).fit_stream(
        chunked(X, y, 3), progress=lambda e, loss: seen.append((e, loss))
    )
    assert seen == list(enumerate(head.loss_curve_))
    assert len(head.loss_curve_) == 6
    assert head.loss_curve_[-1] < 0.8 * head.loss_curve_[0]


@pytest.mark.parametrize("name", HEADS)
def test_prediction_is_batched_without_changing_results(name, data, monkeypatch):
    X, y, Xt, _ = data
    head = HEADS[name]().fit(X.astype(np.float16), y)  # float16 as in the feature cache
    whole = head.predict_proba(Xt)
    monkeypatch.setattr(type(head), "_predict_rows", 7)
    np.testing.assert_allclose(head.predict_proba(Xt), whole, rtol=1e-5, atol=1e-6)


def test_wrong_feature_count_is_an_error(data):
    X, y, Xt, _ = data
    head = LinearSVMHead(epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="32 features"):
        head.predict(Xt[:, :10])


def test_one_class_stream_is_an_error(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="at least two classes"):
        small_mlp().fit(X[y == 0], y[y == 0])


def test_svm_probabilities_keep_the_ranking_of_large_margins():
    """p^5 pooling (done on logs) keeps distinct values far past the sigmoid's float range."""
    X, y = blobs()
    head = LinearSVMHead(C=100.0, epochs=2).fit(X, y)
    margins = head.decision_function(X)
    assert np.abs(margins).max() > 20  # the case float32 would flatten to 0 or 1
    log_proba = head.predict_log_proba(X)
    assert np.isfinite(log_proba).all()
    for k in range(margins.shape[1]):
        # Every negative margin (most patches of most images) keeps its own value; past a
        # margin of about +700 log p is -0.0, p is 1 in any float, and ties are genuine.
        below = margins[:, k] < 30
        assert len(np.unique(5 * log_proba[below, k])) == len(np.unique(margins[below, k]))
