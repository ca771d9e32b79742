"""`with_evolution_tracking(obj)`: trace an object's method calls without touching its class.

The proxy looks attributes up on the wrapped object at every access, so state changes and
monkeypatches show through; public methods come back wrapped by the decorator's own
`wrap_callable` (one wrapper per method, cached while the method stays the same object).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, TypeVar

from ._decorator import wrap_callable

T = TypeVar("T")


def _is_method(value: Any) -> bool:
    return inspect.ismethod(value) or inspect.isfunction(value) or inspect.isbuiltin(value)


class _TrackedProxy:
    __slots__ = (
        "_evo_target",
        "_evo_tags",
        "_evo_methods",
        "_evo_cache",
        "_evo_prefix",
        "__weakref__",
    )

    def __init__(self, target: Any, tags: tuple[str, ...], methods: frozenset[str] | None) -> None:
        object.__setattr__(self, "_evo_target", target)
        object.__setattr__(self, "_evo_tags", tags)
        object.__setattr__(self, "_evo_methods", methods)
        object.__setattr__(self, "_evo_cache", {})
        object.__setattr__(self, "_evo_prefix", type(target).__name__)

    def _evo_traced(self, name: str, value: Any) -> Any:
        methods = self._evo_methods
        if methods is None:
            if name.startswith("_") or not _is_method(value):
                return value
        elif name not in methods or not callable(value):
            return value
        key = getattr(value, "__func__", value)
        cached = self._evo_cache.get(name)
        if cached is not None and cached[0] is key:
            self_of = getattr(value, "__self__", None)
            if self_of is None or cached[1] is self_of:
                return cached[2]
        wrapped = wrap_callable(value, name=f"{self._evo_prefix}.{name}", tags=self._evo_tags)
        self._evo_cache[name] = (key, getattr(value, "__self__", None), wrapped)
        return wrapped

    def __getattr__(self, name: str) -> Any:
        return self._evo_traced(name, getattr(self._evo_target, name))

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._evo_target, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._evo_target, name)

    # Python looks special methods up on the type, so the common ones are forwarded here.
    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(proxy, Agent) stays true
        return type(self._evo_target)

    def __dir__(self) -> list[str]:
        return dir(self._evo_target)

    def __repr__(self) -> str:
        return repr(self._evo_target)

    def __str__(self) -> str:
        return str(self._evo_target)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        target = self._evo_target
        methods = self._evo_methods
        if methods is not None and "__call__" not in methods:
            return target(*args, **kwargs)
        call = self._evo_cache.get("__call__")
        if call is None:
            # Callable agents (`agent(question)`) are traced as `<Class>.__call__`.
            call = wrap_callable(
                target.__call__ if not inspect.isroutine(target) else target,
                name=f"{self._evo_prefix}.__call__",
                tags=self._evo_tags,
            )
            self._evo_cache["__call__"] = call
        return call(*args, **kwargs)

    def __len__(self) -> int:
        return len(self._evo_target)

    def __iter__(self) -> Any:
        return iter(self._evo_target)

    def __contains__(self, item: Any) -> bool:
        return item in self._evo_target

    def __getitem__(self, key: Any) -> Any:
        return self._evo_target[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._evo_target[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._evo_target[key]

    def __bool__(self) -> bool:
        return bool(self._evo_target)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _TrackedProxy):
            other = other._evo_target
        return self._evo_target == other

    def __hash__(self) -> int:
        return hash(self._evo_target)

    def __enter__(self) -> Any:
        entered = self._evo_target.__enter__()
        return self if entered is self._evo_target else entered

    def __exit__(self, *exc_info: Any) -> Any:
        return self._evo_target.__exit__(*exc_info)

    async def __aenter__(self) -> Any:
        entered = await self._evo_target.__aenter__()
        return self if entered is self._evo_target else entered

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._evo_target.__aexit__(*exc_info)


def with_evolution_tracking(
    obj: T, tags: Iterable[str] = (), methods: Iterable[str] | None = None
) -> T:
    """A proxy for `obj` whose public method calls are traced like `@track_evolution` ones.

    Attribute reads and writes, return values and exceptions pass through unchanged, and
    `isinstance(proxy, type(obj))` holds; the object's class is not modified, so other
    instances stay untraced. `methods` limits tracing to the names given (`"__call__"`
    included, for callable agents); by default every public method and `__call__` is traced.
    Spans are named `<Class>.<method>`.

    ```python
    agent = with_evolution_tracking(SupportAgent(llm), tags=["support"])
    agent.answer("Where is my order?")   # traced as SupportAgent.answer
    ```
    """
    if isinstance(tags, str):
        tags = (tags,)
    chosen = None if methods is None else frozenset(methods)
    return _TrackedProxy(obj, tuple(tags), chosen)  # type: ignore[return-value]
