"""The manager <-> agent channel: frames of any size, EOF when the other side is gone."""

from __future__ import annotations

import os

import pytest

from runner.agents.channel import pair, wait_readable

pytestmark = pytest.mark.timeout(30)


def test_messages_larger_than_a_pipe_buffer_cross_both_ways_between_processes():
    ours, theirs = pair()
    big = {"blob": os.urandom(1 << 20), "n": 7}
    pid = os.fork()
    if pid == 0:  # echo one message back, then leave: the parent must read EOF
        code = 1
        try:
            ours.close()
            theirs.send(theirs.recv())
            theirs.close()
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    ours.send(big)
    assert ours.recv() == big
    assert ours.poll(10.0)  # EOF counts as readable
    with pytest.raises(EOFError):
        ours.recv()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ours.close()


def test_poll_and_wait_readable_say_when_a_message_is_there():
    a, b = pair()
    assert not a.poll(0) and wait_readable([a], 0) == []
    b.send(("x", 1))
    assert a.poll(0) and wait_readable([a, b], 0) == [a]
    assert a.recv() == ("x", 1)
    b.close()
    with pytest.raises(EOFError):
        a.recv()
    with pytest.raises(OSError):  # the other side is gone: sending fails at once
        a.send("late")
    a.close()


def test_recv_ready_reads_every_waiting_message_in_one_go_and_finishes_a_half_written_one():
    a, b = pair()
    for i in range(50):
        b.send({"i": i})
    big = os.urandom(300_000)  # more than a pipe holds: the reader must wait for its tail
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            a.close()
            b.send(big)
            code = 0
        finally:
            os._exit(code)
    got = []
    while len(got) < 51:
        assert wait_readable([a], 10.0)
        messages, gone = a.recv_ready()
        assert not gone
        got.extend(messages)
    assert got[:50] == [{"i": i} for i in range(50)] and got[50] == big
    os.waitpid(pid, 0)
    b.close()
    assert a.recv_ready() == ([], True)
    a.close()
