"""Choosing the best final response of a response context (RFC 3261 §16.7 step 6).

- any 6xx wins (a 6xx ends the search, §16.7 step 5);
- otherwise the lowest response class among 2xx-5xx (a 2xx is never held back, but is
  listed for completeness);
- within 4xx, 401, 407, 415, 420 and 484 are preferred because the caller can act on them
  (authenticate, change the body, the extensions or the address), §16.7 step 6;
- ties go to the first response received.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.sip import Response

_ACTIONABLE_4XX = (401, 407, 415, 420, 484)


def is_challenge(status: int) -> bool:
    return status in (401, 407)


def rank(status: int) -> tuple[int, int]:
    """Smaller is better."""
    if status >= 600:
        return (0, 0)
    klass = status // 100
    preferred = 0 if status in _ACTIONABLE_4XX else 1
    return (klass, preferred)


def best_response(responses: Sequence[Response]) -> Response:
    if not responses:
        raise ValueError("no final responses to choose from")
    best = responses[0]
    best_rank = rank(best.status)
    for response in responses[1:]:
        r = rank(response.status)
        if r < best_rank:
            best, best_rank = response, r
    return best
