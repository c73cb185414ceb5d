"""``sipmesh parse FILE|-``: a SIP message linter.

Reads one message (a file, or stdin with ``-``), parses it fully with :mod:`shared.sip` and
prints it as JSON: kind, method or status, the Request-URI's parts, every header by its
canonical name (list headers split into values) and the body length; exit status 0.

A malformed message prints exactly one line, the answer RFC 3261 gives to it
(``400 Bad Request: unterminated quoted string in To``; ``drop: ...`` for a response, which
is never answered), and exits 1. Whatever the bytes, the command never shows a traceback:
the parser raises only ``SipParseError``, and anything else is reported on one line too.
A file that cannot be read exits 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.sip import Request, SipParseError, parse_message
from shared.sip.uri import Uri


def _uri_json(raw: str, uri: Uri) -> dict[str, Any]:
    return {
        "raw": raw,
        "scheme": uri.scheme,
        "user": uri.user,
        "password": uri.password,
        "host": uri.host,
        "port": uri.port,
        "params": uri.params,
        "headers": uri.headers,
    }


def describe(data: bytes) -> dict[str, Any]:
    """The JSON description of a message; raises SipParseError for a malformed one."""
    msg = parse_message(data)
    msg.validate()
    out: dict[str, Any]
    if isinstance(msg, Request):
        out = {
            "kind": "request",
            "method": msg.method,
            "request_uri": _uri_json(msg.uri, msg.parsed_uri),
        }
    else:
        out = {"kind": "response", "status": msg.status, "reason": msg.reason}
    out["call_id"] = msg.call_id
    out["cseq"] = {"number": msg.cseq.number, "method": msg.cseq.method}
    out["headers"] = msg.headers_by_name()
    out["body_length"] = len(msg.body)
    return out


def lint(data: bytes) -> tuple[int, str]:
    """(exit status, text to print) for the bytes of one message."""
    try:
        return 0, json.dumps(describe(data), indent=2, ensure_ascii=False)
    except SipParseError as err:
        return 1, " ".join(str(err).split())  # one line, whatever the detail holds
    except Exception as err:
        return 1, " ".join(f"400 Bad Request: unparseable message ({type(err).__name__})".split())


def register(app: typer.Typer) -> None:
    """Adds `sipmesh parse` to the app."""

    @app.command("parse")
    def parse(
        file: Annotated[str, typer.Argument(help="message file, or - for stdin")],
    ) -> None:
        """Lint one SIP message: JSON on success (exit 0), `STATUS Reason: detail` (exit 1)."""
        try:
            data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
        except OSError as err:
            typer.echo(f"error: cannot read {file}: {err.strerror or err}", err=True)
            raise typer.Exit(2) from None
        code, text = lint(data)
        sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace") + b"\n")
        sys.stdout.flush()
        raise typer.Exit(code)
