"""``with_finite_differences``: give any Tesseract gradient endpoints, client-side.

The proxy is a ``tesseract_core.Tesseract`` (a :class:`~tess_ad._client.TesseractWrapper`:
``isinstance(proxy, Tesseract)`` holds, without a connection of its own), with
its client interface (``apply``, ``jacobian``, ``jacobian_vector_product``,
``vector_jacobian_product``, ``abstract_eval`` when the wrapped client has it,
``openapi_schema``, ``available_endpoints``; ``health``, ``with_encoding``,
``with`` and the rest go to the wrapped Tesseract), so the JAX and PyTorch
adapters, tesseract-jax and tesseract-torch, and any other code written
against a Tesseract, take it unchanged. Its gradient endpoints are
finite differences of the wrapped client's ``apply``, planned by ``_fd`` and
evaluated by ``_evaluate`` (serially, on an executor or a dask cluster, with
an optional on-disk cache). Nothing runs on the server side, so this works for
Tesseracts that ship nothing but ``apply``.

Bad arguments (unknown method, non-positive step, a step for a path that is
not differentiated, ``num_samples < 1``, an unwritable cache) are refused when
the proxy is made, before any Tesseract call.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._cache import EvaluationCache
from ._client import (
    GRADIENT_ENDPOINTS,
    TesseractWrapper,
    remote_target,
    transient_errors,
)
from ._errors import TesseractConnectionError
from ._evaluate import FlatFunction, remote_apply
from ._fd import ACCURACY, EpsLike, _check_eps, _check_samples, validate_method
from ._fd_endpoints import FDSettings, fd_jacobian, fd_jvp, fd_vjp
from ._paths import get_at_path
from ._schema import FlatTree, SchemaError, TesseractSchema, as_numpy, tesseract_schema
from ._sparsity import validate_sparsity

__all__ = ["FiniteDifferenceTesseract", "with_finite_differences"]

_TRANSIENT = transient_errors()


class FiniteDifferenceTesseract(TesseractWrapper):
    """A Tesseract client whose gradient endpoints are finite differences of ``apply``.

    Made by :func:`with_finite_differences`; see there for the arguments.
    """

    def __init__(
        self,
        tesseract: Any,
        *,
        method: str = "central",
        eps: EpsLike = None,
        num_samples: int | None = None,
        seed: int | None = None,
        executor: Any = None,
        progress: bool = False,
        cache: str | os.PathLike | None = None,
        sparsity: Mapping[str, Mapping[str, Any]] | None = None,
        batch_size: int | None = None,
    ) -> None:
        if not callable(getattr(tesseract, "apply", None)):
            raise TypeError(
                f"with_finite_differences expects a Tesseract client with an apply "
                f"method, got {type(tesseract).__name__}. Create one with "
                "Tesseract.from_tesseract_api(...) or Tesseract.from_url(...)."
            )
        self.method = validate_method(method)
        if isinstance(eps, Mapping):
            for path, value in eps.items():
                _check_eps(value, f"eps[{path!r}]")
        elif eps is not None:
            _check_eps(eps, "eps")
        if num_samples is not None:
            _check_samples(num_samples, 1)
        if executor is not None and not callable(getattr(executor, "submit", None)):
            raise TypeError(
                f"executor must be a concurrent.futures.Executor or a dask.distributed.Client, "
                f"got {type(executor).__name__}"
            )
        if sparsity is not None:  # types now; shapes against each call's inputs
            validate_sparsity(sparsity, {})
        super().__init__(tesseract)
        self.sparsity = sparsity
        self.eps = eps
        self.num_samples = num_samples
        self.seed = seed
        self.executor = executor
        self.progress = bool(progress)
        # Derivatives are accurate to eps ** this (the method's row of ACCURACY);
        # Endpoints.vjp_jvp reads it to difference these VJPs over a suitably long step.
        self.tess_ad_derivative_accuracy = ACCURACY[self.method]

        base = tesseract_schema(tesseract)
        self.tess_ad_schema = base.with_endpoints(GRADIENT_ENDPOINTS)
        self._validate_eps_paths(base)
        self.batch_size = _checked_batch_size(batch_size, base)
        schema = copy.deepcopy(tesseract.openapi_schema)
        for name in GRADIENT_ENDPOINTS:
            schema.setdefault("paths", {}).setdefault(
                f"/{name}",
                {"post": {"summary": f"{name} by finite differences (tess_ad)"}},
            )
        self._openapi = schema
        namespace = json.dumps(tesseract.openapi_schema["components"], sort_keys=True)
        self.cache = EvaluationCache(cache, namespace) if cache is not None else None
        self._remote = remote_target(tesseract)
        self._options = {
            "method": method,
            "eps": eps,
            "num_samples": num_samples,
            "seed": seed,
            "executor": executor,
            "progress": progress,
            "cache": cache,
            "sparsity": sparsity,
            "batch_size": batch_size,
        }

    def _rewrap(self, client: Any) -> FiniteDifferenceTesseract:
        return FiniteDifferenceTesseract(client, **self._options)

    def _validate_eps_paths(self, schema: TesseractSchema) -> None:
        if not isinstance(self.eps, Mapping):
            return
        for path in self.eps:
            if schema.inputs.differentiable_pattern(path) is None:
                raise ValueError(
                    f"eps names {path!r}, which is not a differentiable input of this "
                    f"Tesseract; differentiable input patterns are "
                    f"{', '.join(map(repr, schema.inputs.differentiable_arrays)) or '(none)'}"
                )

    # -- client interface ------------------------------------------------------

    def __repr__(self) -> str:
        return f"with_finite_differences({self.wrapped!r}, method={self.method!r})"

    @property
    def openapi_schema(self) -> dict:
        """The wrapped Tesseract's OpenAPI schema, with the gradient endpoints added."""
        return self._openapi

    @property
    def available_endpoints(self) -> list[str]:
        """The wrapped Tesseract's endpoints plus the three gradient endpoints."""
        return [p.lstrip("/") for p in self._openapi["paths"]]

    def __getattr__(self, name: str) -> Any:
        if name == "abstract_eval":  # the property below refused it
            raise AttributeError(
                "the wrapped Tesseract has no abstract_eval endpoint, so neither has this proxy"
            )
        if name.startswith("tess_ad_"):
            raise AttributeError(name)
        return super().__getattr__(name)

    @property
    def abstract_eval(self) -> Any:
        """The wrapped Tesseract's ``abstract_eval``; no attribute when it has none."""
        if "abstract_eval" not in tesseract_schema(self.wrapped).endpoints:
            raise AttributeError("abstract_eval")
        return super().abstract_eval

    def jacobian(
        self,
        inputs: dict,
        jac_inputs: Sequence[str],
        jac_outputs: Sequence[str],
        run_id: str | None = None,
    ) -> dict[str, dict[str, np.ndarray]]:
        """Jacobian ``{out: {in: array(*out_shape, *in_shape)}}`` by finite differences.

        ``run_id`` is passed to every ``apply`` call of the sweep.
        """
        return self._jacobian(inputs, jac_inputs, jac_outputs, run_id, False)

    def vector_jacobian_product(
        self,
        inputs: dict,
        vjp_inputs: Sequence[str],
        vjp_outputs: Sequence[str],
        cotangent_vector: Mapping[str, Any],
        run_id: str | None = None,
    ) -> dict[str, np.ndarray]:
        """VJP ``{in: sum_out ct[out] . J[out, in]}`` by finite differences.

        ``run_id`` is passed to every ``apply`` call of the sweep.
        """
        return self._vjp(
            inputs, vjp_inputs, vjp_outputs, cotangent_vector, run_id, False
        )

    def jacobian_vector_product(
        self,
        inputs: dict,
        jvp_inputs: Sequence[str],
        jvp_outputs: Sequence[str],
        tangent_vector: Mapping[str, Any],
        run_id: str | None = None,
    ) -> dict[str, np.ndarray]:
        """JVP ``{out: sum_in J[out, in] . t[in]}`` by one directional difference.

        ``run_id`` is passed to every ``apply`` call of the sweep.
        """
        return self._jvp(inputs, jvp_inputs, jvp_outputs, tangent_vector, run_id, False)

    # -- with error estimates --------------------------------------------------------

    def jacobian_with_error(
        self,
        inputs: dict,
        jac_inputs: Sequence[str],
        jac_outputs: Sequence[str],
        run_id: str | None = None,
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
        """The Jacobian and an estimate of its error, entry by entry, in the same layout.

        Each input element is differenced at two steps, ``h`` and ``2h``: the
        error bounds the truncation part (from the two steps) plus the
        rounding part (from the outputs' magnitude and dtype). With
        ``method="central"`` the Jacobian is the one :meth:`jacobian` gives and
        the estimate costs ``2n`` more apply calls (``4n`` in all); with
        ``"richardson"`` it is the extrapolated Jacobian, at no extra cost;
        ``"forward"`` takes ``2n + 1``. ``"stochastic"`` (SPSA) takes no extra
        call: its error is the spread of its samples (a Student-t quantile of
        standard errors, about 99.7% coverage).

        Returns:
            ``(jacobian, error)``, both ``{out: {in: array(*out_shape, *in_shape)}}``.

        Example:
            >>> import numpy as np, tess_ad
            >>> from tesseract_core import Tesseract
            >>> t = Tesseract.from_tesseract_api("examples/rosenbrock/tesseract_api.py")
            >>> fd = tess_ad.with_finite_differences(t, method="richardson")
            >>> inputs = {"x": np.array([0.5, -1.0, 2.0]), "a": 1.0, "b": 100.0}
            >>> jac, err = fd.jacobian_with_error(inputs, ["x"], ["loss"])
            >>> np.round(jac["loss"]["x"], 6)
            array([249., 146., 200.])
            >>> bool(np.all(err["loss"]["x"] < 1e-8 * np.abs(jac["loss"]["x"]).max()))
            True
        """
        return self._jacobian(inputs, jac_inputs, jac_outputs, run_id, True)

    def vector_jacobian_product_with_error(
        self,
        inputs: dict,
        vjp_inputs: Sequence[str],
        vjp_outputs: Sequence[str],
        cotangent_vector: Mapping[str, Any],
        run_id: str | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The VJP and an estimate of its error per input element (see :meth:`jacobian_with_error`).

        Returns:
            ``(vjp, error)``, both ``{in: array}`` shaped like each input.
        """
        return self._vjp(
            inputs, vjp_inputs, vjp_outputs, cotangent_vector, run_id, True
        )

    def jacobian_vector_product_with_error(
        self,
        inputs: dict,
        jvp_inputs: Sequence[str],
        jvp_outputs: Sequence[str],
        tangent_vector: Mapping[str, Any],
        run_id: str | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The JVP and an estimate of its error per output entry: 4 apply calls (forward: 3).

        Returns:
            ``(jvp, error)``, both ``{out: array}`` shaped like each output.
        """
        return self._jvp(inputs, jvp_inputs, jvp_outputs, tangent_vector, run_id, True)

    # -- internals ---------------------------------------------------------------

    def _jacobian(
        self,
        inputs: dict,
        ins: Sequence[str],
        outs: Sequence[str],
        run_id: str | None,
        with_error: bool,
    ) -> Any:
        flat, x, dtypes = self._prepare(inputs, ins)
        self._check_outputs(outs)
        fn = self._function(flat, outs, run_id)
        settings = self._settings(x)
        return fd_jacobian(
            fn, x, dtypes, outs, settings, self._output_dtype, with_error=with_error
        )

    def _vjp(
        self,
        inputs: dict,
        ins: Sequence[str],
        outs: Sequence[str],
        cotangent_vector: Mapping[str, Any],
        run_id: str | None,
        with_error: bool,
    ) -> Any:
        flat, x, dtypes = self._prepare(inputs, ins)
        self._check_outputs(outs)
        fn = self._function(flat, outs, run_id, cotangent_vector)
        settings = self._settings(x)
        return fd_vjp(
            fn, x, dtypes, outs, cotangent_vector, settings, with_error=with_error
        )

    def _jvp(
        self,
        inputs: dict,
        ins: Sequence[str],
        outs: Sequence[str],
        tangent_vector: Mapping[str, Any],
        run_id: str | None,
        with_error: bool,
    ) -> Any:
        flat, x, dtypes = self._prepare(inputs, ins)
        self._check_outputs(outs)
        fn = self._function(flat, outs, run_id)
        settings = self._settings(x)
        return fd_jvp(
            fn,
            x,
            dtypes,
            outs,
            tangent_vector,
            settings,
            self._output_dtype,
            with_error=with_error,
        )

    def _settings(self, x: Mapping[str, np.ndarray]) -> FDSettings:
        eps = self.eps
        if isinstance(eps, Mapping):  # validated against the schema's patterns already
            eps = {p: v for p, v in eps.items() if p in x}
        return FDSettings(
            self.method,
            eps,
            self.num_samples,
            self.seed,
            {"executor": self.executor, "progress": self.progress, "cache": self.cache},
            self.sparsity,
            self.batch_size,
        )

    def _apply_once(self, inputs: Any, run_id: str | None = None) -> Any:
        """One evaluation of a sweep; a lost connection says where and what is kept."""
        try:
            if run_id is None:
                return self.wrapped.apply(inputs=inputs)
            return self.wrapped.apply(inputs=inputs, run_id=run_id)
        except _TRANSIENT as exc:
            # the server's URL, seen through tess_ad's own wrappers (a counting
            # or retrying client), for the message
            found = remote_target(self.wrapped)
            url = found[1] if found is not None and found[0] == "url" else None
            kept = (
                f"Every finished evaluation is in the cache at {str(self.cache.directory)!r}, "
                "so a rerun makes only the missing calls"
                if self.cache is not None
                else "Pass cache=DIR to keep finished evaluations across such failures"
            )
            raise TesseractConnectionError(
                f"apply at {url or 'the Tesseract'}: connection lost during a finite-difference "
                f"sweep ({type(exc).__name__}: {exc}). {kept}; wrap the Tesseract in "
                "tess_ad.with_retries(...) to ride out server restarts.",
                "apply",
                url,
                1,
            ) from exc

    def _prepare(
        self, inputs: dict, paths: Sequence[str]
    ) -> tuple[FlatTree, dict[str, np.ndarray], dict[str, np.dtype]]:
        if isinstance(paths, str):
            raise TypeError(
                f"input paths must be a list of paths, got the string {paths!r}"
            )
        flat = self.tess_ad_schema.inputs.flatten(inputs)
        flat.check_paths(list(paths), "differentiated input")
        x, dtypes = {}, {}
        for p in paths:
            leaf = flat[p]
            if not leaf.differentiable:
                raise SchemaError(
                    f"input {p!r} is not marked Differentiable in the Tesseract's schema; "
                    "only Differentiable inputs can be differentiated"
                )
            dtype = leaf.compute_dtype
            assert dtype is not None  # a Differentiable leaf is an array: it has one
            dtypes[p] = dtype
            x[p] = as_numpy(leaf.value, dtype)
        return flat, x, dtypes

    def _check_outputs(self, out_paths: Sequence[str]) -> None:
        if isinstance(out_paths, str):
            raise TypeError(
                f"output paths must be a list of paths, got the string {out_paths!r}"
            )
        outputs = self.tess_ad_schema.outputs
        for o in out_paths:
            if outputs.differentiable_pattern(o) is None:
                raise SchemaError(
                    f"output {o!r} is not a Differentiable output of this Tesseract; "
                    f"differentiable outputs match {', '.join(map(repr, outputs.differentiable_arrays)) or '(none)'}"
                )

    def _output_dtype(self, path: str) -> np.dtype:
        outputs = self.tess_ad_schema.outputs
        pattern = outputs.differentiable_pattern(path)
        assert pattern is not None  # checked by _check_outputs
        return np.dtype(outputs.differentiable_arrays[pattern].dtype or np.float64)

    def _function(
        self,
        flat: FlatTree,
        out_paths: Sequence[str],
        run_id: str | None,
        expect: Mapping[str, Any] | None = None,
    ) -> FlatFunction:
        batched = self.batch_size is not None

        def extract(outputs: Any) -> dict[str, np.ndarray]:
            got = {}
            for o in out_paths:
                try:
                    got[o] = np.asarray(get_at_path(outputs, o))
                except KeyError:
                    raise SchemaError(f"apply returned no output at {o!r}") from None
                shape = got[o].shape[1:] if batched else got[o].shape
                if expect is not None and o in expect and np.shape(expect[o]) != shape:
                    raise ValueError(
                        f"cotangent for output {o!r} has shape {np.shape(expect[o])}, "
                        f"but the output has shape {shape}"
                    )
            return got

        build: Callable[[Mapping[str, np.ndarray]], Any] = flat.unflatten
        if batched:
            arrays = [p for p, leaf in flat.items() if leaf.is_array]

            def build_batch(point: Mapping[str, np.ndarray]) -> Any:
                # the differentiated leaves carry the batch; every other array is
                # broadcast to it (a view), since the Tesseract takes one axis for all
                size = len(next(iter(point.values())))
                spread = {
                    p: np.broadcast_to(
                        np.asarray(flat[p].value), (size, *np.shape(flat[p].value))
                    )
                    for p in arrays
                    if p not in point
                }
                return flat.unflatten({**spread, **point})

            build = build_batch

        cache_key = None
        if self.cache is not None:
            cache = self.cache
            suffix = _suffix(out_paths)

            def cache_key(point: Mapping[str, np.ndarray]) -> str:
                return cache.key(flat, point) + suffix

        return FlatFunction(
            build,
            lambda inputs: self._apply_once(inputs, run_id),
            extract,
            cache_key=cache_key,
            remote=(remote_apply, self._remote) if self._remote is not None else None,
        )


def _checked_batch_size(batch_size: Any, schema: TesseractSchema) -> int | None:
    """``batch_size`` if it is a positive int and every array of the schema takes a batch axis."""
    if batch_size is None:
        return None
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise ValueError(
            f"batch_size must be a positive int (points per apply call) or None, "
            f"got {batch_size!r}"
        )
    for side in (schema.inputs, schema.outputs):
        fixed = side.fixed_rank_arrays()
        if fixed:
            path, spec = fixed[0]
            raise ValueError(
                f"batch_size={batch_size} sends several perturbed points in one apply "
                f"call, with a leading batch axis on every array, but {side.name} "
                f"path {path!r} is {spec.describe()}: its number of dimensions is "
                f"fixed, so the Tesseract would refuse the batch"
                + (f" ({len(fixed)} such arrays)" if len(fixed) > 1 else "")
                + ". Declare every array Array[..., dtype] and handle leading axes in "
                "apply, or use batch_size=None."
            )
    return int(batch_size)


def _suffix(out_paths: Sequence[str]) -> str:
    return "-" + hashlib.sha256("\0".join(sorted(out_paths)).encode()).hexdigest()[:8]


def with_finite_differences(
    tesseract: Any,
    *,
    method: str = "central",
    eps: EpsLike = None,
    num_samples: int | None = None,
    seed: int | None = None,
    executor: Any = None,
    progress: bool = False,
    cache: str | os.PathLike | None = None,
    sparsity: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int | None = None,
) -> FiniteDifferenceTesseract:
    """Wrap a Tesseract so its gradient endpoints are finite differences of ``apply``.

    Works for any Tesseract, including one that ships only ``apply``. The
    result is a ``tesseract_core.Tesseract`` (``isinstance`` holds; its
    gradient endpoints are the finite differences, everything else is the
    wrapped Tesseract's), so it is accepted wherever a Tesseract is:
    :func:`tess_ad.jax.apply_tesseract`, :func:`tess_ad.torch.apply_tesseract`,
    ``tesseract_jax.apply_tesseract``. Using it as a context manager serves
    the wrapped Tesseract (``with with_finite_differences(Tesseract.from_image(...)) as t:``).

    Cost per call (``n`` differentiated input elements, every output path
    served by the same evaluations): ``jacobian`` and
    ``vector_jacobian_product`` take ``2n`` apply calls (central), ``n + 1``
    (forward), ``4n`` (richardson) or ``2 * num_samples`` (stochastic);
    ``jacobian_vector_product`` takes 2 (richardson: 4). Each of the three
    also comes with an error estimate per entry
    (``jacobian_with_error``, ``vector_jacobian_product_with_error``,
    ``jacobian_vector_product_with_error``: ``(result, error)``), from
    differences at two steps.

    Args:
        tesseract: A ``tesseract_core.Tesseract`` (in-process or served).
        method: ``"central"`` (accurate, default), ``"forward"`` (cheaper, less
            accurate), ``"richardson"`` (central differences at ``h`` and
            ``2h``, extrapolated: truncation error ``O(h^4)``, about
            ``eps^(4/5)`` relative, for twice central's calls) or
            ``"stochastic"`` (SPSA with Rademacher directions: unbiased
            estimates at a cost independent of the input size).
        eps: ``None`` (default) for scale-aware steps, relative to each
            element's magnitude and set from its dtype; a float for one
            absolute step; or ``{path: step}`` for absolute steps on some
            inputs (concrete paths such as ``"params.{alpha}"``).
        num_samples: SPSA samples (default ``max(10, sqrt(n))``; with at least
            ``n`` samples central differences are used, which are exact and no dearer).
        seed: SPSA seed, for reproducible estimates.
        executor: ``None`` (serial), a ``concurrent.futures.Executor`` (threads
            suit a Tesseract served with several workers), or a
            ``dask.distributed.Client`` (a served Tesseract's URL, or the path
            of its ``tesseract_api.py``, travels to the workers). Results are
            identical to serial evaluation.
        progress: Show a progress bar of evaluations (tqdm).
        cache: A directory that keeps every finished evaluation (``.npz``,
            keyed by the Tesseract's schema and the inputs), so an interrupted
            sweep resumes with only the missing calls. A changed simulator
            behind the same schema needs a new directory.
        sparsity: The Jacobian's sparsity pattern, ``{out_path: {in_path:
            bool array of shape (*out_shape, *in_shape)}}`` (the Jacobian's
            own layout; a missing pair is all-zero). Input elements that
            share no non-zero output entry are perturbed together (greedy
            colouring), so a central Jacobian or VJP takes ``2 x colours``
            apply calls instead of ``2n`` (a tridiagonal stencil: 6, at any
            size), and entries outside the pattern are zero. A wrong
            pattern gives wrong numbers: derive one with
            :func:`tess_ad.jacobian_sparsity`, check one with
            :func:`tess_ad.check_sparsity`.
        batch_size: Up to this many perturbed points go to the Tesseract in
            one ``apply`` call, stacked along a leading batch axis (every
            other array input broadcast to it), for a Tesseract whose every
            input and output array takes one (``Array[..., dtype]``; others
            are refused here, naming the leaf). A central Jacobian then takes
            ``ceil(2n / batch_size)`` calls; combines with ``executor``,
            ``cache`` and ``sparsity``. The numbers are those of unbatched
            calls (bit for bit when ``apply`` treats each batch element alone).

    Returns:
        The proxy client.

    Raises:
        ValueError: Unknown method, non-positive step, ``num_samples < 1``, or
            ``eps`` naming a path that is not a differentiable input.
        TypeError: If ``tesseract`` is not a Tesseract client, or ``executor``
            cannot ``submit``.
        OSError: If ``cache`` cannot be written.

    Example:
        >>> from tesseract_core import Tesseract
        >>> import tess_ad
        >>> t = Tesseract.from_tesseract_api("examples/nested/tesseract_api.py")  # only apply
        >>> fd = tess_ad.with_finite_differences(t)
        >>> "vector_jacobian_product" in fd.available_endpoints
        True
    """
    return FiniteDifferenceTesseract(
        tesseract,
        method=method,
        eps=eps,
        num_samples=num_samples,
        seed=seed,
        executor=executor,
        progress=progress,
        cache=cache,
        sparsity=sparsity,
        batch_size=batch_size,
    )
