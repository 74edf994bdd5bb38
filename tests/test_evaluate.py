"""Parallel, distributed and cached evaluation of FD sweeps against real servers."""

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from helpers import Server, Spy, assert_trees_close, example_api, example_inputs

import tess_ad
from tess_ad._cache import CacheCorruptionWarning

SLEEPY = {"x": np.linspace(0.1, 0.8, 8), "scale": np.float64(2.0), "delay": 0.0}
PATHS, OUTS = ["x", "scale"], ["y", "total"]


def _worker_targets():
    """Run on a dask worker: the Tesseract clients that worker holds."""
    from tess_ad import _client

    return sorted(_client._WORKER_CLIENTS)


def serial_jacobian(local_tesseract):
    return tess_ad.with_finite_differences(local_tesseract("sleepy")).jacobian(
        SLEEPY, PATHS, OUTS
    )


@pytest.mark.served
def test_thread_pool_on_multi_worker_server_is_identical_to_serial(
    local_tesseract, served_tesseract
):
    t = served_tesseract("sleepy", num_workers=2)
    with ThreadPoolExecutor(4) as pool:
        for method in ("central", "stochastic"):
            kw = {"method": method, "num_samples": 3, "seed": 1}
            par = tess_ad.with_finite_differences(t, executor=pool, **kw).jacobian(
                SLEEPY, PATHS, OUTS
            )
            ser = tess_ad.with_finite_differences(
                local_tesseract("sleepy"), **kw
            ).jacobian(SLEEPY, PATHS, OUTS)
            assert_trees_close(
                par, ser, rtol=0, atol=0
            )  # bit for bit, in any finishing order


@pytest.mark.slow
def test_dask_local_cluster_is_identical_to_serial(local_tesseract):
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dask's own start-up chatter
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = distributed.Client(cluster)
    try:
        t = local_tesseract("sleepy")  # the api path travels; each worker loads it once
        with Spy(t) as spy:
            got = tess_ad.with_finite_differences(t, executor=client).jacobian(
                SLEEPY, PATHS, OUTS
            )
        assert spy.calls["apply"] == 0  # every evaluation ran on the cluster
        assert_trees_close(got, serial_jacobian(local_tesseract), rtol=0, atol=0)
        vjp = tess_ad.with_finite_differences(
            t, executor=client
        ).vector_jacobian_product(SLEEPY, PATHS, ["total"], {"total": np.float64(1.0)})
        assert_trees_close(
            vjp,
            {"x": 2 * np.cos(SLEEPY["x"]), "scale": np.sum(np.sin(SLEEPY["x"]))},
            rtol=1e-8,
        )

        # a served Tesseract, behind with_retries: its URL travels instead
        from tesseract_core import Tesseract

        server = Server(example_api("sleepy"), num_workers=2).start()
        try:
            served = Tesseract.from_url(server.url)
            with Spy(served) as spy:
                got = tess_ad.with_finite_differences(
                    tess_ad.with_retries(served), executor=client
                ).jacobian(SLEEPY, PATHS, OUTS)
            assert spy.calls["apply"] == 0
            assert_trees_close(got, serial_jacobian(local_tesseract), rtol=0, atol=0)
        finally:
            server.stop()
        # each worker made one client per target and reused it for every evaluation
        held = client.run(_worker_targets)
        targets = {t for per_worker in held.values() for t in map(tuple, per_worker)}
        assert targets == {("api", str(example_api("sleepy"))), ("url", server.url)}
        assert all(len(per_worker) <= 2 for per_worker in held.values())
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client.close()
            cluster.close()


@pytest.mark.served
def test_killed_server_then_resume_from_cache(tmp_path, local_tesseract):
    """A sweep that dies midway keeps what it finished; the rerun makes only the missing calls."""
    from tesseract_core import Tesseract

    server = Server(example_api("sleepy")).start()
    try:
        t = Tesseract.from_url(server.url)
        fd = tess_ad.with_finite_differences(t, cache=tmp_path / "cache")
        n_total = 2 * 9  # central: 2 per element, 9 elements
        kill_after = 7
        spy = Spy(t)
        real_apply = spy._orig["apply"]

        def apply_then_die(inputs, *a, **k):
            if spy.calls["apply"] > kill_after:
                server.stop()  # the simulator dies in the middle of the sweep
            return real_apply(inputs, *a, **k)

        t.apply = lambda inputs, *a, **k: (
            spy.calls.update(["apply"]),
            apply_then_die(inputs, *a, **k),
        )[1]
        with pytest.raises(
            tess_ad.TesseractConnectionError,
            match=rf"apply at {server.url}: connection lost",
        ) as info:
            fd.jacobian(SLEEPY, PATHS, OUTS)
        assert "in the cache at" in str(info.value)
        assert isinstance(info.value.__cause__, requests.ConnectionError)
        assert f"evaluation {kill_after + 1} of {n_total}" in "".join(
            getattr(info.value, "__notes__", [])
        )
        assert len(fd.cache) == kill_after  # every finished evaluation is on disk

        server.start()  # restarted on the same port
        t2 = Tesseract.from_url(server.url)
        with Spy(t2) as spy2:
            fd2 = tess_ad.with_finite_differences(t2, cache=tmp_path / "cache")
            got = fd2.jacobian(SLEEPY, PATHS, OUTS)
        assert spy2.calls["apply"] == n_total - kill_after
        assert_trees_close(got, serial_jacobian(local_tesseract), rtol=0, atol=0)
        with Spy(t2) as spy3:
            fd2.jacobian(SLEEPY, PATHS, OUTS)
        assert spy3.calls["apply"] == 0  # all cached now
    finally:
        server.stop()


@pytest.mark.served
def test_server_killed_during_a_call_keeps_every_finished_evaluation(tmp_path):
    """The kill lands while an apply is in flight: that one is lost, none before it."""
    from tesseract_core import Tesseract

    inputs = {**SLEEPY, "delay": 0.4}
    server = Server(example_api("sleepy")).start()
    try:
        t = Tesseract.from_url(server.url)
        fd = tess_ad.with_finite_differences(t, cache=tmp_path / "cache")
        kill_during = 5  # the 5th apply is in flight when the server dies
        spy = Spy(t)
        real_apply = spy._orig["apply"]
        timers = []

        def apply(inputs, *a, **k):
            spy.calls["apply"] += 1
            if spy.calls["apply"] == kill_during:
                timers.append(threading.Timer(0.15, server.stop))
                timers[-1].start()
            return real_apply(inputs, *a, **k)

        t.apply = apply
        with pytest.raises(
            tess_ad.TesseractConnectionError,
            match=rf"apply at {server.url}: connection lost",
        ):
            fd.jacobian(inputs, PATHS, OUTS)
        for timer in timers:
            timer.join(timeout=60)
        assert spy.calls["apply"] == kill_during  # the sweep stopped at the failure
        assert len(fd.cache) == kill_during - 1  # all that finished, and only that

        server.start()
        t2 = Tesseract.from_url(server.url)
        with Spy(t2) as spy2:
            tess_ad.with_finite_differences(t2, cache=tmp_path / "cache").jacobian(
                inputs, PATHS, OUTS
            )
        assert spy2.calls["apply"] == 2 * 9 - (kill_during - 1)
    finally:
        server.stop()


def test_corrupted_cache_file_is_recomputed(tmp_path, local_tesseract):
    t = local_tesseract("rosenbrock")
    inputs = example_inputs("rosenbrock")
    fd = tess_ad.with_finite_differences(t, cache=tmp_path)
    first = fd.jacobian(inputs, ["x"], ["loss"])
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 8
    files[0].write_bytes(files[0].read_bytes()[:50])  # truncated
    data = bytearray(files[1].read_bytes())
    data[-200] ^= 0xFF  # one flipped byte
    files[1].write_bytes(bytes(data))
    with Spy(t) as spy, pytest.warns(CacheCorruptionWarning, match="corrupted"):
        again = fd.jacobian(inputs, ["x"], ["loss"])
    assert spy.calls["apply"] == 2  # exactly the two damaged evaluations
    assert_trees_close(again, first, rtol=0, atol=0)


def test_exception_in_one_evaluation_stops_the_sweep_and_keeps_the_rest(
    tmp_path, local_tesseract
):
    t = local_tesseract("rosenbrock")
    inputs = example_inputs("rosenbrock")
    spy = Spy(t)
    real = spy._orig["apply"]

    succeeded = []
    lock = threading.Lock()

    def flaky(inputs, *a, **k):
        with lock:
            spy.calls["apply"] += 1
            n = spy.calls["apply"]
        if n == 4:
            raise ValueError("simulator diverged")
        out = real(inputs, *a, **k)
        with lock:
            succeeded.append(n)
        return out

    t.apply = flaky
    try:
        with ThreadPoolExecutor(2) as pool:
            fd = tess_ad.with_finite_differences(t, cache=tmp_path, executor=pool)
            with pytest.raises(ValueError, match="simulator diverged"):
                fd.jacobian(inputs, ["x"], ["loss"])
        finished = len(fd.cache)
        assert finished == len(succeeded) >= 3  # everything that finished is kept
        spy.restore()
        with Spy(t) as spy2:
            tess_ad.with_finite_differences(t, cache=tmp_path).jacobian(
                inputs, ["x"], ["loss"]
            )
        assert spy2.calls["apply"] == 8 - finished
    finally:
        spy.restore()


def test_executor_that_refuses_work_is_reported_with_the_evaluation(local_tesseract):
    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    fd = tess_ad.with_finite_differences(local_tesseract("rosenbrock"), executor=pool)
    with pytest.raises(RuntimeError, match="cannot schedule new futures") as info:
        fd.jacobian(example_inputs("rosenbrock"), ["x"], ["loss"])
    notes = "".join(getattr(info.value, "__notes__", []))
    assert "evaluation 1 of 8 could not be submitted to the executor" in notes
    assert "input 'x' element [0] is perturbed" in notes


def test_cache_key_is_the_key_of_the_whole_tree(tmp_path, local_tesseract):
    """A point's key (base digests reused) equals the key of the full perturbed tree."""
    from tess_ad._cache import EvaluationCache

    schema = tess_ad.tesseract_schema(local_tesseract("nested"))
    flat = schema.inputs.flatten(example_inputs("nested"))
    cache = EvaluationCache(tmp_path, "ns")
    point = {"layers.[0].w": np.full((2, 3), 0.5)}
    full = schema.inputs.flatten(flat.unflatten(point))
    assert cache.key(flat, point) == cache.key(full)
    assert cache.key(flat, point) != cache.key(flat)
    assert cache.key(flat) == cache.key(schema.inputs.flatten(example_inputs("nested")))
    # a list and the equal float64 array give the same key (digests use the schema dtype)
    as_arrays = {"layers.[0].w": np.asarray(example_inputs("nested")["layers"][0]["w"])}
    assert cache.key(flat, as_arrays) == cache.key(flat)


# -- batched evaluation points ------------------------------------------------

BATCH_INPUTS = {
    "x": np.linspace(-1.0, 1.0, 5),
    "y": np.linspace(0.3, 0.9, 5),
    "shift": np.zeros(5),
}


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
@pytest.mark.parametrize("method", ["central", "forward", "richardson"])
def test_batched_points_are_identical_in_ceil_points_over_batch_calls(
    tesseract_factory, method, batch_size
):
    """``batched_rosenbrock`` treats each batch element alone: bit-identical numbers."""
    client = tesseract_factory("batched_rosenbrock")
    n = 10  # x and y, 5 elements each
    points = {"central": 2 * n, "forward": n + 1, "richardson": 4 * n}[method]
    plain = tess_ad.with_finite_differences(client, method=method)
    batched = tess_ad.with_finite_differences(
        client, method=method, batch_size=batch_size
    )
    ct = {"result": np.arange(5.0)}
    t = {"x": np.ones(5), "y": -np.ones(5)}
    for call, args in (
        ("jacobian", (["x", "y"], ["result"])),
        ("vector_jacobian_product", (["x", "y"], ["result"], ct)),
        ("jacobian_vector_product", (["x", "y"], ["result"], t)),
    ):
        expected = getattr(plain, call)(BATCH_INPUTS, *args)
        with Spy(client) as spy:
            got = getattr(batched, call)(BATCH_INPUTS, *args)
        assert_trees_close(got, expected, rtol=0)
        total = (
            points
            if call != "jacobian_vector_product"
            else {"central": 2, "forward": 2, "richardson": 4}[method]
        )
        assert spy.calls["apply"] == -(-total // batch_size), call


def test_batched_points_with_threads_and_a_cache(tmp_path, local_tesseract):
    client = local_tesseract("batched_rosenbrock")
    expected = tess_ad.with_finite_differences(client).jacobian(
        BATCH_INPUTS, ["x"], ["result"]
    )
    with ThreadPoolExecutor(2) as pool:
        fd = tess_ad.with_finite_differences(
            client, batch_size=4, executor=pool, cache=tmp_path / "cache"
        )
        with Spy(client) as spy:
            first = fd.jacobian(BATCH_INPUTS, ["x"], ["result"])
        assert spy.calls["apply"] == 3  # ceil(10 / 4)
        with Spy(client) as spy:
            again = fd.jacobian(BATCH_INPUTS, ["x"], ["result"])
        assert spy.calls["apply"] == 0  # every batch from the cache
    assert_trees_close(first, expected, rtol=0)
    assert_trees_close(again, expected, rtol=0)


def test_batch_size_is_refused_for_a_fixed_rank_leaf(local_tesseract):
    with pytest.raises(
        ValueError,
        match=r"inputs path 'x' is Differentiable\[Array\[\(None,\), float64\]\]",
    ):
        tess_ad.with_finite_differences(local_tesseract("rosenbrock"), batch_size=4)
    with pytest.raises(ValueError, match=r"inputs path 'params.\{\}'"):
        tess_ad.with_finite_differences(local_tesseract("nested"), batch_size=4)


@pytest.mark.parametrize("batch_size", [0, -2, 1.5, True, "8"])
def test_batch_size_must_be_a_positive_int(local_tesseract, batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        tess_ad.with_finite_differences(
            local_tesseract("batched_rosenbrock"), batch_size=batch_size
        )
