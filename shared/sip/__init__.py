"""SipMesh's sans-IO SIP message core (RFC 3261 §7, §18.3, §19, §20, §25).

Parse bytes into `Request`/`Response` objects (`parse_message`), edit headers, serialize
back with untouched headers byte for byte; URIs, name-addrs, Via, CSeq, digest credentials;
stream framing for TCP. No sockets, no asyncio: transports live elsewhere.
"""

from shared.sip.cseq import CSeq, parse_cseq
from shared.sip.digest import (
    DigestChallenge,
    DigestCredentials,
    answer_challenge,
    compute_response,
    parse_challenge,
    parse_credentials,
    verify_ha1,
)
from shared.sip.errors import SipParseError
from shared.sip.framing import KeepAlive, StreamFramer
from shared.sip.headers import canonical_name, split_top_level
from shared.sip.message import Message, Request, Response, ValidatedLines
from shared.sip.nameaddr import NameAddr, parse_name_addr
from shared.sip.parser import parse_message
from shared.sip.response import make_response
from shared.sip.status import reason_phrase
from shared.sip.uri import Uri, parse_uri
from shared.sip.via import Via, parse_via

__all__ = [
    "CSeq",
    "DigestChallenge",
    "DigestCredentials",
    "KeepAlive",
    "Message",
    "NameAddr",
    "Request",
    "Response",
    "SipParseError",
    "StreamFramer",
    "Uri",
    "ValidatedLines",
    "Via",
    "answer_challenge",
    "canonical_name",
    "compute_response",
    "make_response",
    "parse_challenge",
    "parse_credentials",
    "parse_cseq",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "reason_phrase",
    "split_top_level",
    "verify_ha1",
]
