"""The one way tests wait: poll an observable condition until it holds, with a deadline.

No test sleeps to synchronise. A test that must wait for something another task or
process does asks :func:`eventually` (async tests) or :func:`eventually_sync` (tests
driving processes from plain functions) to poll the condition; the interval only paces
the polling. On time-out the failure names what was awaited and the last value seen, so a
red test says what did not happen.

``check`` returns something truthy when done (that value is returned, so a test can wait
for and take a result in one step); it may be a coroutine function in the async form.
Exceptions listed in ``ignore`` count as "not yet" (a process still starting refuses
connections), any other propagates at once.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0


class _Poll:
    """The deadline, the last value seen and the failure message, shared by both forms."""

    def __init__(self, timeout: float, what: str, ignore: tuple[type[BaseException], ...],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.deadline = clock() + timeout
        self.timeout = timeout
        self.what = what
        self.ignore = ignore
        self.last: Any = None

    def expired(self) -> bool:
        return self.clock() >= self.deadline

    def failure(self) -> AssertionError:
        return AssertionError(
            f"timed out after {self.timeout:g}s waiting for {self.what}; last: {self.last!r}")


# ``T | None``: a check returns its value when done and None (or False) until then, and
# what eventually() returns is never that None.
@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout: float = ..., what: str = ..., *,
    interval: float = ..., ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None], timeout: float = ..., what: str = ..., *,
    interval: float = ..., ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT,
    what: str = "the condition", *, interval: float = 0.01,
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Polls ``check`` until it returns something truthy, and returns that."""
    poll = _Poll(timeout, what, ignore, asyncio.get_running_loop().time)
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except ignore as exc:
            poll.last = exc
        else:
            if value:
                return value
            poll.last = value
        if poll.expired():
            raise poll.failure()
        await asyncio.sleep(interval)  # polling pace, not synchronisation


def eventually_sync(
    check: Callable[[], T | None], timeout: float = DEFAULT_TIMEOUT, what: str = "the condition",
    *, interval: float = 0.02, ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """:func:`eventually` for plain (non-async) tests: blocks while polling."""
    poll = _Poll(timeout, what, ignore)
    while True:
        try:
            value = check()
        except ignore as exc:
            poll.last = exc
        else:
            if value:
                return value
            poll.last = value
        if poll.expired():
            raise poll.failure()
        time.sleep(interval)  # polling pace, not synchronisation
