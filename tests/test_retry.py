"""``with_retries`` against a real server that dies and comes back."""

import logging
import threading
import time

import numpy as np
import pytest
import requests
from helpers import Server, Spy, example_api, example_inputs

import tess_ad
from tess_ad import TesseractConnectionError, with_retries


@pytest.fixture
def server():
    s = Server(example_api("rosenbrock")).start()
    yield s
    s.stop()


@pytest.mark.served
def test_apply_survives_a_restart(server, caplog):
    from tesseract_core import Tesseract

    t = with_retries(
        Tesseract.from_url(server.url), attempts=30, backoff=0.1, max_delay=0.5
    )
    inputs = example_inputs("rosenbrock")
    first = t.apply(inputs)
    server.stop()
    restarter = threading.Timer(1.0, server.start)
    restarter.start()
    try:
        with caplog.at_level(logging.WARNING, logger="tess_ad"):
            again = t.apply(inputs)  # refused while down, then answered
    finally:
        restarter.join(timeout=90)
    assert float(again["loss"]) == float(first["loss"])
    assert t.retries >= 1
    assert "retry 1 of 29" in caplog.text and server.url in caplog.text


@pytest.mark.served
def test_apply_survives_a_server_killed_during_the_call():
    """The connection is reset under an in-flight apply; the retry waits for the restart."""
    from tesseract_core import Tesseract

    s = Server(example_api("sleepy")).start()
    try:
        t = with_retries(
            Tesseract.from_url(s.url), attempts=40, backoff=0.1, max_delay=0.5
        )
        inputs = {"x": [0.1, 0.2], "delay": 1.0}

        def kill_then_restart():
            s.stop()  # SIGKILL while apply sleeps on the server
            s.start()

        chaos = threading.Timer(0.3, kill_then_restart)
        chaos.start()
        try:
            out = t.apply(inputs)
        finally:
            chaos.join(timeout=90)
        np.testing.assert_allclose(out["y"], np.sin([0.1, 0.2]))
        assert t.retries >= 1  # the reset call was retried, not silently answered
    finally:
        s.stop()


@pytest.mark.served
def test_final_error_names_endpoint_url_and_attempts(server):
    from tesseract_core import Tesseract

    t = with_retries(Tesseract.from_url(server.url), attempts=3, backoff=0.01)
    server.stop()
    with pytest.raises(
        TesseractConnectionError,
        match=r"apply at http://127\.0\.0\.1:\d+: connection failed after 3 attempt",
    ) as info:
        t.apply(example_inputs("rosenbrock"))
    assert info.value.attempts == 3 and info.value.endpoint == "apply"
    assert isinstance(info.value.__cause__, requests.ConnectionError)
    assert t.retries == 2


def test_tesseract_errors_are_not_retried(local_tesseract):
    t = with_retries(local_tesseract("rosenbrock"), attempts=5, backoff=0.01)
    with Spy(t.wrapped) as spy, pytest.raises(Exception, match="x"):
        t.apply({"x": "not an array"})  # refused by the Tesseract's own validation
    assert spy.calls["apply"] == 1
    assert t.retries == 0


@pytest.mark.served
def test_timeout_per_call():
    from tesseract_core import Tesseract

    s = Server(example_api("sleepy"), num_workers=2).start()  # one worker stays free
    try:
        t = with_retries(Tesseract.from_url(s.url), timeout=0.3, attempts=3)
        inputs = {"x": [0.1, 0.2], "delay": 2.0}
        start = time.monotonic()
        with pytest.raises(requests.Timeout):
            t.apply(inputs)
        assert time.monotonic() - start < 1.9  # a read timeout is final, not retried
        assert t.retries == 0
        fast = t.apply({"x": [0.1, 0.2], "delay": 0.0})
        np.testing.assert_allclose(fast["y"], np.sin([0.1, 0.2]))

        # per endpoint: a bound on another endpoint leaves apply unbounded
        slow = {"x": [0.1, 0.2], "delay": 1.5}
        other = with_retries(Tesseract.from_url(s.url), timeout={"abstract_eval": 0.3})
        np.testing.assert_allclose(other.apply(slow)["y"], np.sin([0.1, 0.2]))
        bounded = with_retries(
            Tesseract.from_url(s.url), timeout={"apply": 0.3, "abstract_eval": 9.0}
        )
        start = time.monotonic()
        with pytest.raises(requests.Timeout):
            bounded.apply(slow)
        assert time.monotonic() - start < 1.4  # cut off by the timeout, not answered
    finally:
        s.stop()


def test_composes_with_finite_differences(local_tesseract):
    t = with_retries(local_tesseract("nested"))
    fd = tess_ad.with_finite_differences(t)
    vjp = fd.vector_jacobian_product(
        example_inputs("nested"),
        ["layers.[0].b"],
        ["summary.{mean}"],
        {"summary.{mean}": 1.0},
    )
    assert vjp["layers.[0].b"].shape == ()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"backoff": -1}, ValueError, "backoff"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": 5.0}, TypeError, "in-process"),
        ({"timeout": {"apply": -1.0}}, ValueError, "timeout\\['apply'\\]"),
        ({"timeout": {"aply": 5.0}}, ValueError, "unknown endpoint\\(s\\) 'aply'"),
    ],
)
def test_bad_arguments(local_tesseract, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        with_retries(local_tesseract("rosenbrock"), **kwargs)
