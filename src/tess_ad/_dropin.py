"""Server-side helpers with tesseract-core's signatures: change one import, make fewer calls.

A Tesseract author who writes, in ``tesseract_api.py``::

    from tesseract_core.runtime.experimental import finite_difference_jacobian

switches to ``from tess_ad import finite_difference_jacobian`` and keeps the
rest. The call signatures and return layouts are tesseract-core's
(``apply_fn`` takes and returns pydantic models; ``algorithm=``, ``eps=``,
``num_samples=``, ``seed=``); what changes:

* apply calls: ``2n`` for a central Jacobian or VJP over ``n`` input elements,
  ``n + 1`` forward, ``2`` for a JVP, however many output paths are asked for
  (tesseract-core re-runs ``apply`` per element *and* output path);
* perturbed inputs are made by copying the pydantic model along the path of the
  perturbed leaf only (``model_copy``), not by dumping and re-validating the
  whole model for every evaluation, when that is provably the same: when the
  input model validates nothing beyond tesseract-core's own array checks (no
  ``field_validator``/``model_validator``, validator annotations, computed
  fields or ``model_post_init`` anywhere in its tree, see
  :func:`_runs_user_code`). Otherwise every perturbed point is re-validated as
  tesseract-core's helpers do (``model_validate`` of the dumped inputs), so a
  validator that derives state from an input sees the perturbed value, and
  one that rejects a perturbed point rejects it here too;
* the default step is scale-aware (``eps=None``); an absolute ``eps`` float or
  per-path mapping still works, and a mapping may name only some paths;
* results keep the dtypes of the leaves (float32 stays float32).

The endpoints are the ones the client-side proxy uses (``_fd_endpoints``),
evaluated serially here: a Tesseract's endpoint runs inside one request.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from ._evaluate import FlatFunction
from ._fd import EpsLike, validate_method
from ._fd_endpoints import FDSettings, fd_jacobian, fd_jvp, fd_vjp
from ._paths import get_at_path, list_segment, split_path, unescape_key

__all__ = [
    "finite_difference_jacobian",
    "finite_difference_jvp",
    "finite_difference_vjp",
]


def _replace(tree: Any, segments: Sequence[str], value: Any) -> Any:
    """A copy of ``tree`` with the leaf at ``segments`` replaced; siblings shared, nothing validated."""
    if not segments:
        return value
    seg, rest = segments[0], segments[1:]
    if seg.startswith("{") and seg.endswith("}"):
        key = unescape_key(seg[1:-1])
        new = dict(tree)
        new[key] = _replace(tree[key], rest, value)
        return new
    if seg.startswith("[") and seg == list_segment(
        int(seg[1:-1]) if seg[1:-1].isdigit() else -1
    ):
        i = int(seg[1:-1])
        items = list(tree)
        items[i] = _replace(items[i], rest, value)
        return tuple(items) if isinstance(tree, tuple) else items
    if isinstance(tree, dict):
        new = dict(tree)
        new[seg] = _replace(tree[seg], rest, value)
        return new
    return tree.model_copy(update={seg: _replace(getattr(tree, seg), rest, value)})


def _base_values(
    inputs: Any, paths: Collection[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.dtype]]:
    if isinstance(paths, str):
        raise TypeError(f"input paths must be a set of paths, got the string {paths!r}")
    x = {}
    for p in sorted(paths):
        try:
            x[p] = np.asarray(get_at_path(inputs, p))
        except KeyError as exc:
            raise ValueError(
                f"input path {p!r} does not exist in the inputs: {exc}"
            ) from None
        if x[p].dtype.kind not in "fc":
            raise ValueError(
                f"input {p!r} has dtype {x[p].dtype}; only floating-point inputs can be differentiated"
            )
    return x, {p: v.dtype for p, v in x.items()}


# Validation functions that belong to tesseract-core's and pydantic's own types
# (array decoding, shape and dtype checks): on a perturbed array of the base
# value's shape and dtype they give the array back, so skipping them is safe.
_OWN_MODULES = ("tesseract_core.", "pydantic.", "pydantic_core.")


def _function_of(node: Mapping[str, Any]) -> Any:
    fn = node.get("function")
    fn = fn.get("function") if isinstance(fn, Mapping) else fn
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _runs_user_code(schema: Any) -> bool:
    """Whether validating against a pydantic core schema runs anything but tesseract-core's checks.

    True for a ``field_validator``/``model_validator`` (and the legacy
    ``validator``/``root_validator``), an ``AfterValidator``-style annotation,
    a custom type's validation function, a computed field or a
    ``model_post_init``, anywhere in the schema (nested models, lists,
    dicts, unions, definitions).
    """
    stack = [schema]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Mapping):
            kind = node.get("type")
            if isinstance(kind, str) and kind.startswith("function"):
                module = getattr(_function_of(node), "__module__", None) or ""
                if not module.startswith(_OWN_MODULES):
                    return True
            if node.get("computed_fields") or node.get("post_init"):
                return True
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return False


_REVALIDATES: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _revalidates(cls: type) -> bool:
    """Whether perturbed inputs of model class ``cls`` must be re-validated (see above)."""
    found = _REVALIDATES.get(cls)
    if found is None:
        schema = getattr(cls, "__pydantic_core_schema__", None)
        found = _REVALIDATES[cls] = schema is None or _runs_user_code(schema)
    return found


class _ModelFunction(FlatFunction):
    """``apply_fn`` on pydantic models as a flat function; remembers output dtypes."""

    def __init__(
        self, apply_fn: Callable, inputs: Any, out_paths: Sequence[str]
    ) -> None:
        self.out_dtypes: dict[str, np.dtype] = {}
        cls = type(inputs)
        self.revalidates = hasattr(cls, "model_validate") and _revalidates(cls)

        if self.revalidates:  # as tesseract-core does: dump once, validate per point
            dumped = inputs.model_dump()

            def build(point: Mapping[str, np.ndarray]) -> Any:
                tree = dumped
                for path, value in point.items():
                    tree = _replace(tree, split_path(path), value)
                return cls.model_validate(tree)

        else:

            def build(point: Mapping[str, np.ndarray]) -> Any:
                model = inputs
                for path, value in point.items():
                    model = _replace(model, split_path(path), value)
                return model

        def extract(outputs: Any) -> dict[str, np.ndarray]:
            got = {}
            for o in out_paths:
                try:
                    got[o] = np.asarray(get_at_path(outputs, o))
                except KeyError as exc:
                    raise ValueError(
                        f"output path {o!r} does not exist in apply's result: {exc}"
                    ) from None
                self.out_dtypes.setdefault(o, got[o].dtype)
            return got

        super().__init__(build, apply_fn, extract)

    def out_dtype(self, path: str) -> np.dtype:
        """The dtype ``apply`` returned for an output (known once it has run)."""
        return self.out_dtypes[path]


def finite_difference_jacobian(
    apply_fn: Callable,
    inputs: Any,
    jac_inputs: set[str],
    jac_outputs: set[str],
    *,
    algorithm: str = "central",
    eps: EpsLike = None,
    num_samples: int | None = None,
    seed: int | None = None,
    sparsity: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Jacobian of a Tesseract's ``apply`` by finite differences, for a ``jacobian`` endpoint.

    Same signature and result as
    ``tesseract_core.runtime.experimental.finite_difference_jacobian``, at the
    cost of ``2n`` apply calls (central), ``n + 1`` (forward) or
    ``2 * num_samples`` (stochastic) for ``n`` input elements, for all output
    paths together.

    Args:
        apply_fn: The Tesseract's ``apply(inputs) -> outputs`` (pydantic models).
        inputs: The validated ``InputSchema`` instance.
        jac_inputs: Input paths to differentiate with respect to.
        jac_outputs: Output paths to differentiate.
        algorithm: ``"central"``, ``"forward"``, ``"richardson"`` (central at
            two steps, extrapolated: ``4n`` calls) or ``"stochastic"`` (SPSA).
        eps: ``None`` for scale-aware steps (default), a float for one absolute
            step, or ``{path: step}`` for absolute steps on some paths.
        num_samples: SPSA samples (default ``max(10, sqrt(n))``).
        seed: SPSA seed.
        sparsity: The Jacobian's sparsity pattern (as for
            :func:`tess_ad.with_finite_differences`): ``2 x colours`` calls
            instead of ``2n``.

    Returns:
        ``{out_path: {in_path: array(*out_shape, *in_shape)}}``.

    Example:
        In ``tesseract_api.py``::

            from tess_ad import finite_difference_jacobian

            def jacobian(inputs: InputSchema, jac_inputs: set[str], jac_outputs: set[str]):
                return finite_difference_jacobian(apply, inputs, jac_inputs, jac_outputs)
    """
    validate_method(algorithm)
    x, dtypes = _base_values(inputs, jac_inputs)
    outs = sorted(jac_outputs)
    fn = _ModelFunction(apply_fn, inputs, outs)
    settings = FDSettings(algorithm, eps, num_samples, seed, sparsity=sparsity)
    return fd_jacobian(fn, x, dtypes, outs, settings, fn.out_dtype)


def finite_difference_vjp(
    apply_fn: Callable,
    inputs: Any,
    vjp_inputs: set[str],
    vjp_outputs: set[str],
    cotangent_vector: dict[str, Any],
    *,
    algorithm: str = "central",
    eps: EpsLike = None,
    num_samples: int | None = None,
    seed: int | None = None,
    sparsity: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Vector-Jacobian product of ``apply`` by finite differences, for a VJP endpoint.

    Same signature and result as tesseract-core's ``finite_difference_vjp``;
    ``2n`` apply calls (central), ``n + 1`` (forward), ``2 * num_samples``
    (stochastic).

    Args:
        apply_fn: The Tesseract's ``apply``.
        inputs: The validated ``InputSchema`` instance.
        vjp_inputs: Input paths to differentiate with respect to.
        vjp_outputs: Output paths the cotangent applies to.
        cotangent_vector: ``{out_path: array}``.
        algorithm: ``"central"``, ``"forward"``, ``"richardson"`` or ``"stochastic"``.
        eps: As for :func:`finite_difference_jacobian`.
        num_samples: SPSA samples.
        seed: SPSA seed.
        sparsity: As for :func:`finite_difference_jacobian`.

    Returns:
        ``{in_path: array}`` shaped like each input.

    Example:
        In ``tesseract_api.py``::

            from tess_ad import finite_difference_vjp

            def vector_jacobian_product(inputs, vjp_inputs, vjp_outputs, cotangent_vector):
                return finite_difference_vjp(apply, inputs, vjp_inputs, vjp_outputs, cotangent_vector)
    """
    validate_method(algorithm)
    x, dtypes = _base_values(inputs, vjp_inputs)
    outs = sorted(vjp_outputs)
    fn = _ModelFunction(apply_fn, inputs, outs)
    settings = FDSettings(algorithm, eps, num_samples, seed, sparsity=sparsity)
    return fd_vjp(fn, x, dtypes, outs, cotangent_vector, settings)


def finite_difference_jvp(
    apply_fn: Callable,
    inputs: Any,
    jvp_inputs: set[str],
    jvp_outputs: set[str],
    tangent_vector: dict[str, Any],
    *,
    algorithm: str = "central",
    eps: EpsLike = None,
) -> dict[str, np.ndarray]:
    """Jacobian-vector product of ``apply`` by one directional difference, for a JVP endpoint.

    Same signature and result as tesseract-core's ``finite_difference_jvp``:
    2 apply calls (``"central"``; ``"stochastic"`` is treated as central), or
    1 plus the base point (``"forward"``).

    Args:
        apply_fn: The Tesseract's ``apply``.
        inputs: The validated ``InputSchema`` instance.
        jvp_inputs: Input paths the tangent moves.
        jvp_outputs: Output paths to differentiate.
        tangent_vector: ``{in_path: array}``.
        algorithm: ``"central"``, ``"forward"`` or ``"stochastic"``.
        eps: ``None`` (scale-aware), one absolute step, or ``{path: step}``:
            paths sharing a step move together, each group costing 2 calls
            (central) or 1 plus the shared base (forward), as in
            tesseract-core; paths left out of the mapping stay scale-aware.

    Returns:
        ``{out_path: array}`` shaped like each output.

    Example:
        In ``tesseract_api.py``::

            from tess_ad import finite_difference_jvp

            def jacobian_vector_product(inputs, jvp_inputs, jvp_outputs, tangent_vector):
                return finite_difference_jvp(apply, inputs, jvp_inputs, jvp_outputs, tangent_vector)
    """
    validate_method(algorithm)
    x, dtypes = _base_values(inputs, jvp_inputs)
    outs = sorted(jvp_outputs)
    fn = _ModelFunction(apply_fn, inputs, outs)
    settings = FDSettings(algorithm, eps)
    return fd_jvp(fn, x, dtypes, outs, tangent_vector, settings, fn.out_dtype)
