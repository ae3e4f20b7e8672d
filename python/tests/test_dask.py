"""Scale-out on Dask: a LocalCluster with 2 worker processes gives the same results as
the single-process calls for the same seeds (models and imputers travel by pickle)."""

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pd = pytest.importorskip("pandas")
pytest.importorskip("sklearn")

import scoregen as sg  # noqa: E402


def posterior_job(seed):
    law = sg.GaussianMixture.gaussian([0, 0], [[1, 1.5], [1.5, 5]])
    r = sg.posterior(law, [0.5], mask=[0], method="smc-impute", n=200, particles=100, steps=50, seed=seed, progress=False)
    return r.samples, r.log_evidence


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def imputer():
    header, cols = sg.builtin_table("penguins")
    df = pd.DataFrame({h: c for h, c in zip(header, cols)})
    est = sg.ScoreImputer(train_steps=200, em_rounds=0, particles=16, steps=20, random_state=0).fit(df)
    return est, df


def test_a_seed_sweep_as_dask_tasks(client):
    got = client.gather(client.map(posterior_job, range(4)))
    assert len({id(r) for r in got}) == 4
    for seed, (samples, z) in enumerate(got):
        want, wz = posterior_job(seed)
        assert np.array_equal(samples, want) and z == wz


def test_a_model_samples_on_a_worker_as_here(client):
    x, _, _ = sg.builtin_data("moons", 500, 0)
    model = sg.train(x, steps=50, hidden=16, depth=1, batch=64, progress=False)
    fut = client.submit(lambda m, s: m.sample(100, steps=20, seed=s, progress=False), model, 3)
    assert np.array_equal(fut.result(), model.sample(100, steps=20, seed=3, progress=False))


def test_dataframe_partitions_imputed_on_workers(client, imputer):
    dd = pytest.importorskip("dask.dataframe")
    est, df = imputer
    ddf = dd.from_pandas(df, npartitions=3)
    got = ddf.map_partitions(est.transform, meta=df.iloc[:0]).compute()
    want = pd.concat([est.transform(ddf.get_partition(i).compute()) for i in range(ddf.npartitions)])
    pd.testing.assert_frame_equal(got, want)
    assert not got.isna().any().any()


def test_array_blocks_imputed_on_workers(client):
    da = pytest.importorskip("dask.array")
    header, cols = sg.builtin_table("iris")
    X = np.column_stack(cols)
    rng = np.random.default_rng(0)
    Xm = X.copy()
    Xm[rng.random(X.shape) < 0.2] = np.nan
    est = sg.ScoreImputer(train_steps=200, em_rounds=0, particles=16, steps=20, random_state=0).fit(Xm)
    arr = da.from_array(Xm, chunks=(50, X.shape[1]))
    got = arr.map_blocks(est.transform, dtype=np.float64).compute()
    want = np.vstack([est.transform(Xm[i : i + 50]) for i in range(0, len(Xm), 50)])
    assert np.array_equal(got, want)
