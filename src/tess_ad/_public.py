"""Public exceptions show where users import them from, not where they are defined.

``tess_ad.SchemaError`` is defined in a private module; without this, a
traceback prints ``tess_ad._schema.SchemaError``, a module users should not
import. Setting ``__module__`` to the public namespace changes only how the
class is named (pickling by reference still works: the public name resolves to
the same class).

Only exceptions are renamed: a class or function whose ``__module__`` differs
from the module that defines it is skipped by ``doctest``'s finder, so renaming
those would silently drop their docstring examples from the doctest run.
"""

from __future__ import annotations

from typing import Any


def show_as_public(namespace: dict[str, Any], all_names: list[str]) -> None:
    """Rename each exception class in ``all_names`` to the module owning ``namespace``.

    Args:
        namespace: The ``globals()`` of a public ``__init__.py``.
        all_names: Its ``__all__``.
    """
    public = namespace["__name__"]
    for name in all_names:
        obj = namespace[name]
        if (
            isinstance(obj, type)
            and issubclass(obj, BaseException)
            and obj.__module__.startswith(f"{public}.")
        ):
            obj.__module__ = public
