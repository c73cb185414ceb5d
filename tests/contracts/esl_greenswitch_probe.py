"""Drives an Event Socket server with greenswitch (an independent, gevent-based ESL client)
and prints what it saw as one JSON line: the cross-check of the fake's framing in
test_esl_server.py. Run as a subprocess (gevent stays out of the test process).

    python esl_greenswitch_probe.py HOST PORT PASSWORD HEARTBEAT_TIMEOUT
"""

from __future__ import annotations

import json
import sys

import gevent
import greenswitch
from gevent.event import AsyncResult


def main() -> None:
    host, port, password, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    out: dict[str, object] = {}
    esl = greenswitch.InboundESL(host=host, port=port, password=password)
    esl.connect()
    heartbeat: AsyncResult = AsyncResult()
    job: AsyncResult = AsyncResult()
    esl.register_handle("HEARTBEAT", lambda ev: heartbeat.set(dict(ev.headers)))
    esl.register_handle("BACKGROUND_JOB", lambda ev: job.set(dict(ev.headers)))
    out["status"] = esl.send("api status").data
    out["echo"] = esl.send("api echo h\u00e9llo w\u00f6rld \u260e").data
    out["subscribe"] = esl.send("event plain HEARTBEAT BACKGROUND_JOB").data
    reply = esl.send("bgapi status")
    out["bgapi_reply"] = reply.data
    out["bgapi_job_uuid"] = reply.headers.get("Job-UUID", "")
    try:
        out["job"] = job.get(timeout=wait)
        out["heartbeat"] = heartbeat.get(timeout=wait)
    except gevent.Timeout:
        out["timeout"] = True
    esl.stop()
    print(json.dumps(out, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
