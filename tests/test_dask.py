"""fastrnn.dask on a real dask.distributed cluster of two worker processes: batch
predictions equal the local ones, each worker builds a model once however many
chunks it scores, and a scikit-learn sweep through joblib's Dask backend finds what
the local one finds.

A missing dask skips locally and fails in CI (CI=true), which installs it.
"""

import importlib.util
import os

import numpy as np
import pytest

if importlib.util.find_spec("distributed") is None:
    if os.environ.get("CI"):  # CI installs the dask extra: its absence is a failure there
        raise RuntimeError("tests/test_dask.py needs dask.distributed "
                           "(pip install 'dask[distributed]')")
    pytest.skip("needs dask.distributed (pip install 'dask[distributed]')",
                allow_module_level=True)

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import joblib  # noqa: E402
import psutil  # noqa: E402
from dask.distributed import Client, LocalCluster  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

import fastrnn  # noqa: E402
import fastrnn.dask  # noqa: E402
from fastrnn.sklearn import SequenceRegressor  # noqa: E402

T, FEATURES = 7, 3


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes, each running fastrnn's kernels on one
    thread (this 2-core machine's share); closed at the end, leaving no process."""
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                      dashboard_address=None, env={"FASTRNN_NUM_THREADS": "1"}) as cluster, \
            Client(cluster) as client:
        assert set(client.run(fastrnn.get_num_threads).values()) == {1}
        yield client
    # multiprocessing's resource tracker, started with the first spawned worker, stays
    # for the life of this interpreter by design: it is no worker.
    left = [child.cmdline() for child in psutil.Process().children(recursive=True)
            if child.pid not in before
            and "multiprocessing.resource_tracker" not in " ".join(child.cmdline())]
    assert left == []


def make_model(seed, output="sequence", **options):
    loss = "cross_entropy" if output == "sequence" else "mse"
    return fastrnn.SequenceModel(cell="lstm", input_size=FEATURES, hidden_size=5, output_size=4,
                                 output=output, loss=loss, dtype=np.float64, seed=seed,
                                 **options)


def sequences(batch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((T, batch, FEATURES)), rng.integers(1, T + 1, batch)


def builds_per_worker(client):
    """{worker: models it has built so far}."""
    return {worker: sum(loads.values())
            for worker, loads in client.run(fastrnn.dask.model_loads).items()}


def test_predictions_equal_local_ones_and_each_worker_builds_the_model_once(client):
    model = make_model(seed=1)
    x, lengths = sequences(24)
    before = builds_per_worker(client)
    predicted = fastrnn.dask.predict(model, da.from_array(x, chunks=(T, 3, FEATURES)), lengths)
    assert predicted.chunks == ((T,), (3,) * 8, (4,))  # 8 chunks on 2 workers
    np.testing.assert_allclose(predicted.compute(), model.predict(x, lengths),
                               rtol=1e-12, atol=1e-14)
    # A second computation, other chunks: the workers still hold the model.
    again = fastrnn.dask.predict(model, da.from_array(x, chunks=(T, 5, FEATURES)))
    np.testing.assert_allclose(again.compute(), model.predict(x), rtol=1e-12, atol=1e-14)
    built = {worker: count - before[worker]
             for worker, count in builds_per_worker(client).items()}
    assert sorted(built.values()) in ([0, 1], [1, 1]), built  # 13 chunks, one build each


def test_last_output_token_ids_dask_lengths_and_a_checkpoint_path(client, tmp_path):
    last = make_model(seed=2, output="last")
    x, lengths = sequences(10, seed=3)
    predicted = fastrnn.dask.predict(last, da.from_array(x, chunks=(T, 4, FEATURES)),
                                     da.from_array(lengths, chunks=3))
    assert predicted.chunks == ((4, 4, 2), (4,))
    np.testing.assert_allclose(predicted.compute(), last.predict(x, lengths), rtol=1e-12)

    text = fastrnn.SequenceModel.from_text("abcabd", hidden_size=4, dtype=np.float64, seed=0)
    text.save(tmp_path / "text.fastrnn")
    ids = np.random.default_rng(4).integers(0, 5, (T, 9))
    predicted = fastrnn.dask.predict(tmp_path / "text.fastrnn", da.from_array(ids, chunks=(3, 2)))
    assert predicted.chunks == ((T,), (2, 2, 2, 2, 1), (5,))
    np.testing.assert_allclose(predicted.compute(), text.predict(ids), rtol=1e-12)


# Older dask (2025.1, for one) warns when a local scheduler runs while a client (this module's
# cluster, when another test made it first) is active: this test means to.
@pytest.mark.filterwarnings("ignore:Running on a single-machine scheduler when a distributed "
                            "client is active:UserWarning")
def test_dask_s_local_threads_give_the_same_predictions():
    model = make_model(seed=5)
    x, lengths = sequences(12, seed=6)
    with dask.config.set(scheduler="threads", num_workers=2):  # not the module's cluster
        predicted = fastrnn.dask.predict(model, da.from_array(x, chunks=(T, 2, FEATURES)),
                                         lengths)
        np.testing.assert_allclose(predicted.compute(), model.predict(x, lengths),
                                   rtol=1e-12, atol=1e-14)


def test_a_model_of_many_megabytes_is_scattered_not_put_in_the_graph(client):
    # 2.1 million float64 weights, 17 MB: in the graph, dask would warn (an error here)
    big = fastrnn.SequenceModel(cell="lstm", input_size=64, hidden_size=700, output_size=2,
                                dtype=np.float64, seed=0)
    x = np.random.default_rng(8).standard_normal((3, 4, 64))
    predicted = fastrnn.dask.predict(big, da.from_array(x, chunks=(3, 2, 64)))
    np.testing.assert_allclose(predicted.compute(), big.predict(x), rtol=1e-12, atol=1e-14)


def test_one_checkpoint_predicted_again_and_again(client, tmp_path):
    # The same bytes each time: their scattered copy must not be lost to the release
    # of the previous call's (it was, with content-keyed scattering).
    make_model(seed=9).save(tmp_path / "model.fastrnn")
    x, _ = sequences(8, seed=10)
    chunked = da.from_array(x, chunks=(T, 2, FEATURES))
    first = fastrnn.dask.predict(tmp_path / "model.fastrnn", chunked).compute()
    for _ in range(8):
        again = fastrnn.dask.predict(tmp_path / "model.fastrnn", chunked).compute()
        np.testing.assert_array_equal(again, first)


def test_bad_input_is_refused_before_anything_runs():
    model = make_model(seed=0)
    x, lengths = sequences(6)
    chunked = da.from_array(x, chunks=(T, 2, FEATURES))
    with pytest.raises(TypeError, match="x must be a dask array chunked along the batch axis"):
        fastrnn.dask.predict(model, x)
    with pytest.raises(TypeError, match="model must be a fastrnn.SequenceModel or a checkpoint"):
        fastrnn.dask.predict(object(), chunked)
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 3\), got \(7, 6, 2\)"):
        fastrnn.dask.predict(model, chunked[:, :, :2])
    with pytest.raises(ValueError, match=r"lengths must have shape \(6,\)"):
        fastrnn.dask.predict(model, chunked, lengths[:5])
    with pytest.raises(ValueError, match=r"lengths must have shape \(6,\)"):
        fastrnn.dask.predict(model, chunked, da.from_array(lengths[:5]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 7\]"):
        fastrnn.dask.predict(model, chunked, lengths + 7)
    text = fastrnn.SequenceModel.from_text("abc", hidden_size=4)
    with pytest.raises(ValueError, match=r"x must be token ids of shape \(T, B\)"):
        fastrnn.dask.predict(text, chunked)


def test_a_grid_search_on_the_cluster_finds_what_the_local_one_finds(client):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((24, 5, 2))
    y = X.sum(axis=(1, 2))
    grid = {"hidden_size": [3, 6], "lr": [0.01, 0.1]}

    def search(n_jobs):
        estimator = SequenceRegressor(epochs=3, batch_size=8, dtype=np.float64, random_state=0)
        return GridSearchCV(estimator, grid, cv=2, n_jobs=n_jobs)

    local = search(n_jobs=1).fit(X, y)  # in this process (n_jobs=-1 would start loky's)
    with joblib.parallel_config(backend="dask"):
        remote = search(n_jobs=-1).fit(X, y)
    assert remote.best_params_ == local.best_params_
    np.testing.assert_allclose(remote.cv_results_["mean_test_score"],
                               local.cv_results_["mean_test_score"], rtol=1e-9)
    np.testing.assert_allclose(remote.predict(X), local.predict(X), rtol=1e-9)
