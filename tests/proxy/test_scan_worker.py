"""The scan worker's side of the pipe: length-prefixed JSON frames, one answer per job, and
a failed job answered with an error instead of ending the worker.  Run in-process on byte
streams; the pool that spawns real workers is tested in test_scan_pool.py."""

from __future__ import annotations

import io
import json

import pytest

from popproxy.policy import Scan
from popproxy.proxy.scan_worker import (
    FRAME_HEADER,
    MAX_JOB_HEADER,
    encode_frame,
    read_frame,
    serve,
)

CLEAN = b"From: a@example.test\r\nSubject: hello\r\n\r\nJust text.\r\n"


def test_a_frame_round_trips_with_its_payload() -> None:
    stream = io.BytesIO(encode_frame({"op": "scan"}, b"\x00payload") + encode_frame({"a": 1}))
    assert read_frame(stream) == ({"op": "scan", "payload": 8}, b"\x00payload")
    assert read_frame(stream) == ({"a": 1, "payload": 0}, b"")
    assert read_frame(stream) is None  # a clean end of input


def test_a_cut_frame_is_the_end_of_input() -> None:
    frame = encode_frame({"op": "scan"}, b"0123456789")
    assert read_frame(io.BytesIO(frame[:-3])) is None
    assert read_frame(io.BytesIO(frame[:2])) is None


def test_an_oversized_job_header_is_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        read_frame(io.BytesIO(FRAME_HEADER.pack(MAX_JOB_HEADER + 1)))


def _answers(*jobs: bytes) -> list[dict[str, object]]:
    stdin = io.BytesIO(encode_frame({"scan": Scan().model_dump(mode="json")}) + b"".join(jobs))
    stdout = io.BytesIO()
    serve(stdin, stdout)
    stdout.seek(0)
    answers = []
    while (frame := read_frame(stdout)) is not None:
        answers.append(frame[0])
    return answers


def test_the_worker_says_ready_then_answers_each_job() -> None:
    ready, verdict, unknown, after = _answers(
        encode_frame({"op": "scan"}, CLEAN),
        encode_frame({"op": "explode"}),
        encode_frame({"op": "scan"}, CLEAN),
    )
    assert ready == {"ready": True, "payload": 0}
    assert unknown == {"error": "ValueError", "payload": 0}  # and the worker goes on
    assert verdict == after
    assert isinstance(verdict["verdict"], dict)
    assert json.loads(json.dumps(verdict)) == verdict  # plain JSON for the parent


def test_no_first_frame_no_answer() -> None:
    stdout = io.BytesIO()
    serve(io.BytesIO(b""), stdout)
    assert stdout.getvalue() == b""
