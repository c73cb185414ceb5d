"""`routing.is_awaitable`, which the edge's core asks of every hook's result, answers as
`inspect.isawaitable` does, also now that it remembers the answer per type."""

from __future__ import annotations

import types
from collections.abc import Generator
from typing import Any

from services.edge.routing import is_awaitable


async def _coroutine() -> None:
    return None


class _WithAwait:
    def __await__(self) -> Generator[Any, None, None]:
        yield


def _plain_generator() -> Generator[int, None, None]:
    yield 1


@types.coroutine
def _generator_coroutine() -> Generator[None, None, None]:
    yield


def test_coroutines_and_objects_with_await_are_awaitable_others_not() -> None:
    for _ in range(2):  # the second answers come from what the first ones learned
        coro = _coroutine()
        assert is_awaitable(coro)
        coro.close()
        assert is_awaitable(_WithAwait())
        assert not is_awaitable(None)
        assert not is_awaitable(object())
        assert not is_awaitable("text")


def test_generators_are_asked_one_by_one() -> None:
    # One type, two answers: a generator is awaitable when its function was made a
    # coroutine (types.coroutine), so no answer may be remembered for the type.
    assert not is_awaitable(_plain_generator())
    assert is_awaitable(_generator_coroutine())
    assert not is_awaitable(_plain_generator())
