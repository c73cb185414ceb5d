"""The CSeq header (RFC 3261 §20.16): a sequence number and the request method.

The number is a 32-bit unsigned integer (RFC 3261 §8.1.1.5: "MUST be expressible as a 32-bit
unsigned integer"); a larger one, or a method differing from the request's, is a 400 (RFC 4475
§3.1.2.4 and §3.1.2.17-18).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from shared.sip.errors import bad_request

CSEQ_MAX: Final = 2**32 - 1


class CSeq(NamedTuple):
    """`CSeq: <number> <method>` (immutable; a named tuple because parsing makes one per
    message and tuple construction is the cheapest immutable record in CPython)."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(text: str) -> CSeq:
    """Parse a CSeq value; raises 400 on a malformed or out-of-range one."""
    parts = text.split()
    if len(parts) != 2:
        raise bad_request(f"malformed CSeq {text!r}")
    number, method = parts
    if not number.isdigit() or not number.isascii():
        raise bad_request(f"CSeq number {number!r} is not a number")
    digits = number.lstrip("0") or "0"  # leading zeros are legal (RFC 4475 §3.1.1.1)
    if len(digits) > 10 or int(digits) > CSEQ_MAX:
        raise bad_request(f"CSeq number {number[:30]} out of range (> 2^32-1)")
    return CSeq(int(digits), method)
