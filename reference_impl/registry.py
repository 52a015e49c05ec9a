"""A registry of functions by name: the pattern behind transformers' `AttentionInterface` and
`AttentionMaskInterface`.

Mirrors transformers.utils.generic.GeneralInterface (transformers 4.53–5.22). Taught in
lessons/06_attention_registration.ipynb.

A registry is a dict-like object with two layers:

- a **class-wide** mapping, changed with the classmethod `register(key, fn)`; every instance, in every file,
  sees it;
- an **instance-local** mapping, changed with `registry[key] = fn`; it shadows the class-wide one for that
  instance only (a model file can override `"sdpa"` for itself without touching anyone else).

Reads (`registry[key]`, `in`, iteration, `len`) merge both layers, local first.

# NOTE [ What we fix, and what we keep ]
# transformers' GeneralInterface keeps the surface above but has awkward corners; ours keeps the surface
# and fixes:
# 1. `register` returns the function (transformers returns None), so it works as a call *and* as a decorator:
#        @AttentionInterface.register("mine")
#        def my_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs): ...
# 2. Each registry class gets its own class-wide mapping from `__init_subclass__` (a copy of what the class
#    declares or, failing that, of its parent's). In transformers a subclass that forgets to declare
#    `_global_mapping` shares the base class's dict, so registering on it registers everywhere.
# 3. An unknown key raises `KeyError` listing the registered keys (transformers: a bare `KeyError: 'x'`).
# 4. `registered(key, fn)` is a context manager that registers for the duration of a `with` block and then
#    restores exactly what was there before (the previous function, or nothing), so tests and lessons cannot
#    leak registrations into each other. `scoped_registration` does the same for transformers' own registry
#    classes.
# 5. Bad input is refused at registration time: a non-string key or a non-callable is a `TypeError`, and so is
#    a function whose signature cannot accept the call the registry's users make (checked with
#    `inspect.signature`).
# 6. Duplicates: registering a key that already holds a *different* function raises `ValueError` unless
#    `overwrite=True` (transformers silently replaces it). Registering the very same function again is a
#    no-op, so re-running a notebook cell that registers a module-level function is harmless.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

__all__ = ["GeneralInterface", "scoped_registration"]

F = TypeVar("F", bound=Callable[..., Any])

_MISSING = object()


class GeneralInterface(MutableMapping):
    """Dict-like registry: a class-wide mapping (`register`) plus an instance-local one (`obj[key] = fn`).

    Subclasses declare their built-in entries in `_global_mapping` and describe the call their users make in
    `_example_call` (positional arguments, keyword arguments), which `register` checks every function against.
    """

    #: class-wide key -> function; every subclass gets its own dict (see `__init_subclass__`).
    _global_mapping: ClassVar[dict[str, Callable[..., Any]]] = {}
    #: (args, kwargs) the registry's users call every registered function with; `None` skips the check.
    _example_call: ClassVar[tuple[tuple[Any, ...], dict[str, Any]] | None] = None
    #: what the registry holds, for error messages ("attention function", "mask builder").
    _kind: ClassVar[str] = "function"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("_global_mapping")
        inherited = cls._global_mapping  # the parent's mapping, found through the MRO
        # A fresh dict per class: registering on one registry never shows up in another.
        cls._global_mapping = dict(declared if declared is not None else inherited)

    def __init__(self) -> None:
        self._local_mapping: dict[str, Callable[..., Any]] = {}

    # ---- dict-like reads: local overrides first, then the class-wide mapping ----
    def __getitem__(self, key: str) -> Callable[..., Any]:
        if key in self._local_mapping:
            return self._local_mapping[key]
        if key in self._global_mapping:
            return self._global_mapping[key]
        raise KeyError(f"{key!r} is not a registered {self._kind}; registered: {sorted(self)}")

    def __setitem__(self, key: str, value: Callable[..., Any]) -> None:
        """Instance-local override: only this object sees it (the class-wide mapping is unchanged)."""
        type(self)._validate(key, value)
        self._local_mapping[key] = value

    def __delitem__(self, key: str) -> None:
        """Remove an instance-local override; class-wide entries are removed with `unregister`."""
        if key not in self._local_mapping:
            where = (
                "is registered class-wide: use unregister()"
                if key in self._global_mapping
                else "is not registered"
            )
            raise KeyError(f"{key!r} has no instance-local override to delete ({key!r} {where})")
        del self._local_mapping[key]

    def __iter__(self) -> Iterator[str]:
        return iter({**self._global_mapping, **self._local_mapping})

    def __len__(self) -> int:
        return len(self._global_mapping.keys() | self._local_mapping.keys())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({sorted(self)})"

    def valid_keys(self) -> list[str]:
        """The registered keys (class-wide and local), as transformers' `valid_keys`."""
        return list(self.keys())

    # ---- class-wide writes ----
    @classmethod
    def register(cls, key: str, fn: F | None = None, *, overwrite: bool = False) -> Any:
        """Register `fn` under `key` for every instance; returns `fn`, or a decorator when `fn` is omitted.

        Correct (both forms return the function, so the name stays bound to it):
            >>> AttentionInterface.register("mine", my_attention)
            >>> @AttentionInterface.register("mine2")
            ... def my_attention2(module, query, key, value, attention_mask, scaling, dropout=0.0,
            ...                   **kwargs): ...

        Raises:
            TypeError: `key` is not a string, `fn` is not callable, or its signature cannot take the
                registry's call.
            ValueError: `key` already holds a different function and `overwrite` is False.
        """
        if fn is None:

            def decorator(f: F) -> F:
                return cls.register(key, f, overwrite=overwrite)

            cls._validate_key(key)
            return decorator
        cls._validate(key, fn)
        previous = cls._global_mapping.get(key, _MISSING)
        if previous is not _MISSING and previous is not fn and not overwrite:
            raise ValueError(
                f"{key!r} is already registered to {_name(previous)}; pass overwrite=True to replace it with "
                f"{_name(fn)}, or use {cls.__name__}.registered({key!r}, fn) to replace it inside a `with` "
                "block"
            )
        cls._global_mapping[key] = fn
        return fn

    @classmethod
    def unregister(cls, key: str) -> Callable[..., Any]:
        """Remove `key` from the class-wide mapping and return its function."""
        if key not in cls._global_mapping:
            raise KeyError(
                f"{key!r} is not registered in {cls.__name__}; registered: {sorted(cls._global_mapping)}"
            )
        return cls._global_mapping.pop(key)

    @classmethod
    @contextmanager
    def registered(cls, key: str, fn: F) -> Iterator[F]:
        """Register `fn` under `key` inside a `with` block, then restore what `key` held before (or
        nothing)."""
        cls._validate(key, fn)
        with scoped_registration(cls, key, fn):
            yield fn

    # ---- validation ----
    @classmethod
    def _validate_key(cls, key: object) -> None:
        if not isinstance(key, str):
            raise TypeError(f"key={key!r} must be a str naming the {cls._kind}, got {type(key).__name__}")

    @classmethod
    def _validate(cls, key: object, fn: object) -> None:
        cls._validate_key(key)
        if not callable(fn):
            raise TypeError(
                f"{cls._kind} registered under {key!r} must be callable, got {type(fn).__name__}: {fn!r}"
            )
        if cls._example_call is None:
            return
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins have no signature: nothing to check
            return
        args, kwargs = cls._example_call
        try:
            signature.bind(*args, **kwargs)
        except TypeError as e:
            call = ", ".join([*(f"<{a}>" for a in args), *(f"{k}=..." for k in kwargs)])
            raise TypeError(
                f"{cls._kind} {_name(fn)} registered under {key!r} has signature {signature}, which cannot "
                f"take the call ({call}): {e}"
            ) from None


@contextmanager
def scoped_registration(
    interface: type[Any], key: str, fn: Callable[..., Any]
) -> Iterator[Callable[..., Any]]:
    """Put `fn` into `interface._global_mapping[key]` for a `with` block, then restore the previous state
    exactly.

    Works on ours and on transformers' own registry classes (`transformers.AttentionInterface`,
    `transformers.masking_utils.AttentionMaskInterface`), whose mapping is global to the whole process:
        >>> with scoped_registration(transformers.AttentionInterface, "mine", my_attention):
        ...     model.set_attn_implementation("mine"); model(input_ids)
    """
    mapping = interface._global_mapping
    previous = mapping.get(key, _MISSING)
    mapping[key] = fn
    try:
        yield fn
    finally:
        if previous is _MISSING:
            mapping.pop(key, None)
        else:
            mapping[key] = previous


def _name(fn: object) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__
