"""The sans-IO ESL session (services/freeswitch/esl.py EslSession) on a fake clock:
authentication, the command FIFO, api/bgapi, events, heartbeat staleness, timeouts."""

from __future__ import annotations

import json

import pytest

from services.freeswitch.esl import (
    Authenticated,
    AuthFailed,
    Closing,
    CommandDone,
    EslSession,
    Event,
    Heartbeat,
    JobDone,
    Output,
    Send,
    SessionConfig,
    Subscribed,
    check_command,
    parse_heartbeat,
)


def frame(headers: dict[str, str], body: str = "") -> bytes:
    payload = body.encode()
    lines = [f"{k}: {v}" for k, v in headers.items()]
    if payload:
        lines.append(f"Content-Length: {len(payload)}")
    return ("\n".join(lines) + "\n\n").encode() + payload


AUTH_REQUEST = frame({"Content-Type": "auth/request"})
ACCEPTED = frame({"Content-Type": "command/reply", "Reply-Text": "+OK accepted"})


def reply(text: str, **extra: str) -> bytes:
    return frame({"Content-Type": "command/reply", "Reply-Text": text, **extra})


def api_response(body: str) -> bytes:
    return frame({"Content-Type": "api/response"}, body)


def event(name: str, body: str = "", **headers: str) -> bytes:
    doc = {"Event-Name": name, "Core-UUID": "core-1", **headers}
    if body:
        doc["_body"] = body
    return frame({"Content-Type": "text/event-json"}, json.dumps(doc))


def sent(out: list[Output]) -> list[bytes]:
    return [o.data for o in out if isinstance(o, Send)]


def ready_session(events: tuple[str, ...] = ("HEARTBEAT",), *, command_timeout: float = 5.0,
                  job_timeout: float = 60.0, heartbeat_timeout: float = 50.0) -> EslSession:
    config = SessionConfig(password="ClueCon", events=events, command_timeout=command_timeout,
                           job_timeout=job_timeout, heartbeat_timeout=heartbeat_timeout)
    s = EslSession(config, now=0.0)
    assert sent(s.receive(AUTH_REQUEST, 0.0)) == [b"auth ClueCon\n\n"]
    out = s.receive(ACCEPTED, 0.1)
    assert any(isinstance(o, Authenticated) for o in out)
    if events:
        assert sent(out) == [f"event json {' '.join(events)}\n\n".encode()]
        assert s.receive(reply("+OK event listener enabled json"), 0.1) == [Subscribed(True)]
    return s


def test_auth_then_subscribe_then_ready() -> None:
    s = ready_session(("HEARTBEAT", "BACKGROUND_JOB"))
    assert s.state == "ready"


def test_a_refused_subscription_is_said_and_the_next_reply_still_matches() -> None:
    s = EslSession(SessionConfig(password="ClueCon", events=("NOPE",)), now=0.0)
    s.receive(AUTH_REQUEST, 0.0)
    s.receive(ACCEPTED, 0.1)
    token, _ = s.api("status", 0.2)
    assert s.receive(reply("-ERR no keywords supplied"), 0.3) == [Subscribed(False)]
    [done] = s.receive(api_response("UP 0 years"), 0.4)
    assert isinstance(done, CommandDone) and done.token == token
    assert done.reply is not None and done.reply.body == "UP 0 years"


def test_userauth_when_a_user_is_given() -> None:
    s = EslSession(SessionConfig(password="pw", user="ops@default"))
    assert sent(s.receive(AUTH_REQUEST, 0)) == [b"userauth ops@default:pw\n\n"]


def test_a_wrong_password_fails_and_closes() -> None:
    s = EslSession(SessionConfig(password="nope"))
    s.receive(AUTH_REQUEST, 0)
    out = s.receive(reply("-ERR invalid") + frame(
        {"Content-Type": "text/disconnect-notice"}, "Disconnected, goodbye.\n"), 0.1)
    assert [type(o) for o in out] == [AuthFailed, Closing]
    assert s.state == "closed"


def test_commands_before_auth_wait_then_go_out_in_order() -> None:
    s = EslSession(SessionConfig(password="ClueCon"))
    t1, out1 = s.api("status", 0)
    t2, out2 = s.command("nixevent DTMF", 0)
    assert out1 == out2 == []
    s.receive(AUTH_REQUEST, 0)
    out = s.receive(ACCEPTED, 0.1)
    assert sent(out) == [b"api status\n\n", b"nixevent DTMF\n\n"]
    done = s.receive(api_response("UP\n") + reply("+OK events nixed"), 0.2)
    assert [(d.token, d.reply.text) for d in done if isinstance(d, CommandDone)
            and d.reply] == [(t1, "UP"), (t2, "+OK events nixed")]


def test_replies_match_commands_first_in_first_out() -> None:
    s = ready_session()
    t1, _ = s.api("status", 1)
    t2, _ = s.api("show calls", 1)
    out = s.receive(api_response("first") + api_response("second"), 2)
    assert [(o.token, o.reply.body) for o in out if isinstance(o, CommandDone)
            and o.reply] == [(t1, "first"), (t2, "second")]


def test_an_api_error_is_an_answer_not_a_failure() -> None:
    s = ready_session()
    token, _ = s.api("bogus", 1)
    [done] = s.receive(api_response("-ERR bogus Command not found!\n"), 2)
    assert isinstance(done, CommandDone) and done.reply is not None
    assert done.token == token and not done.reply.ok


def test_a_timed_out_command_keeps_its_slot_so_later_replies_stay_matched() -> None:
    s = ready_session(command_timeout=5.0)
    slow, _ = s.api("slow", 10)
    [timeout] = s.expire(15.0)
    assert isinstance(timeout, CommandDone) and timeout.token == slow and timeout.reply is None
    fast, _ = s.api("status", 16)
    out = s.receive(api_response("late answer to slow") + api_response("UP"), 17)
    assert [(o.token, o.reply.body) for o in out if isinstance(o, CommandDone)
            and o.reply] == [(fast, "UP")]


def test_bgapi_sends_the_job_uuid_and_correlates_the_background_job() -> None:
    s = ready_session(("HEARTBEAT", "BACKGROUND_JOB"))
    token, out = s.bgapi("originate user/1000 &park", "job-1", 1)
    assert sent(out) == [b"bgapi originate user/1000 &park\nJob-UUID: job-1\n\n"]
    [done] = s.receive(reply("+OK Job-UUID: job-1", **{"Job-UUID": "job-1"}), 1.1)
    assert isinstance(done, CommandDone) and done.token == token
    assert done.reply is not None and done.reply.job_uuid == "job-1"
    other = s.receive(event("BACKGROUND_JOB", "+OK other\n", **{"Job-UUID": "job-2"}), 1.2)
    assert [type(o) for o in other] == [Event]  # someone else's job: an event only
    mine = s.receive(event("BACKGROUND_JOB", "+OK uuid\n", **{"Job-UUID": "job-1"}), 1.3)
    assert [type(o) for o in mine] == [Event, JobDone]
    assert mine[1] == JobDone("job-1", "+OK uuid\n")
    assert s.jobs == {}


def test_a_refused_bgapi_leaves_no_job_waiting() -> None:
    s = ready_session()
    s.bgapi("bogus", "job-9", 1)
    s.receive(reply("-ERR bogus Command not found!"), 1.1)
    assert s.jobs == {}


def test_jobs_survive_into_the_next_connection() -> None:
    first = ready_session(("BACKGROUND_JOB",), job_timeout=60.0)
    first.bgapi("status", "job-7", 1)
    first.receive(reply("+OK Job-UUID: job-7", **{"Job-UUID": "job-7"}), 1.1)
    first.connection_lost("reset")
    second = ready_session(("BACKGROUND_JOB",))
    second.adopt_jobs(first.jobs, 5)
    out = second.receive(event("BACKGROUND_JOB", "UP", **{"Job-UUID": "job-7"}), 6)
    assert JobDone("job-7", "UP") in out


def test_a_job_whose_result_never_comes_times_out() -> None:
    s = ready_session(job_timeout=30.0)
    s.bgapi("status", "job-3", 0)
    s.receive(reply("+OK Job-UUID: job-3"), 0.1)
    assert s.expire(29.0) == []
    assert s.expire(31.0) == [JobDone("job-3", "", "background job result timeout")]


def test_heartbeat_figures_and_staleness_on_the_given_clock() -> None:
    s = ready_session(heartbeat_timeout=2.5)
    out = s.receive(event("HEARTBEAT", **{"Session-Count": "7", "Max-Sessions": "100",
                                          "Idle-CPU": "78.400000"}), 1.0)
    assert Heartbeat(7, 100, 78.4, 1.0) in out
    assert not s.heartbeat_stale(3.4)
    assert s.heartbeat_stale(3.5)
    assert s.next_deadline() == pytest.approx(3.5)


def test_no_heartbeat_at_all_is_stale_from_authentication() -> None:
    s = ready_session(heartbeat_timeout=2.0)  # authenticated at 0.1
    assert not s.heartbeat_stale(2.0)
    assert s.heartbeat_stale(2.1)


def test_a_heartbeat_with_bad_figures_keeps_the_link_alive_but_not_the_figures() -> None:
    s = ready_session(heartbeat_timeout=2.0)
    out = s.receive(event("HEARTBEAT", **{"Session-Count": "x", "Max-Sessions": "100",
                                          "Idle-CPU": "50"}), 1.0)
    assert not any(isinstance(o, Heartbeat) for o in out)
    assert s.heartbeat is None and not s.heartbeat_stale(2.5)


def test_disconnect_notice_fails_pending_commands() -> None:
    s = ready_session()
    token, _ = s.api("status", 1)
    out = s.receive(frame({"Content-Type": "text/disconnect-notice"}, "bye\n"), 2)
    assert isinstance(out[0], Closing)
    assert CommandDone(token, None, "ESL link lost: bye") in out
    with pytest.raises(ConnectionError):
        s.api("status", 3)


def test_an_event_that_is_not_json_is_dropped_and_the_link_lives() -> None:
    s = ready_session()
    out = s.receive(frame({"Content-Type": "text/event-json"}, "{not json"), 1)
    assert out == [] and s.state == "ready"


def test_event_sequence_and_body() -> None:
    s = ready_session()
    [ev] = s.receive(event("CUSTOM", "ünï body", **{"Event-Sequence": "42",
                                                     "Event-Subclass": "sofia::register"}), 1)
    assert isinstance(ev, Event)
    assert ev.sequence == 42 and ev.core_uuid == "core-1" and ev.body == "ünï body"
    assert json.loads(ev.raw)["Event-Subclass"] == "sofia::register"


def test_garbage_from_the_server_closes_the_link() -> None:
    s = ready_session()
    out = s.receive(b"this is not esl\n\n", 1)
    assert isinstance(out[0], Closing) and "protocol error" in out[0].reason


def test_a_reply_to_no_command_closes_the_link() -> None:
    s = ready_session()
    out = s.receive(reply("+OK"), 1)
    assert isinstance(out[0], Closing)


@pytest.mark.parametrize("text", ["", "   ", "api a\n\nevent plain ALL", "x" * 5000, "api a\n"])
def test_commands_esl_cannot_carry_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        check_command(text)


def test_parse_heartbeat_bounds() -> None:
    assert parse_heartbeat({"Session-Count": "1", "Max-Sessions": "2",
                            "Idle-CPU": "101"}, 0) is None
    assert parse_heartbeat({"Session-Count": "1", "Max-Sessions": "2"}, 0) is None
