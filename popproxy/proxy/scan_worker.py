"""A scan worker process: reads jobs on stdin, answers on stdout (``python -m`` this module).

Frames both ways: a 4-octet big-endian length, a JSON header of that length, then
``header["payload"]`` octets of raw data (the message).  The first frame from the parent holds
the policy's ``scan`` section; the worker answers ``{"ready": true}`` once its scanner (and
feeds) are loaded.  Jobs: ``{"op": "scan"}`` -> a verdict and its evidence;
``{"op": "render", "order": ..., "out": path}`` -> the rendered message written to ``out`` and
``{"size": n}``.  The message
comes as the payload or, with ``"in": path``, from a spool file (so the parent never holds it).

A job that raises is answered ``{"error": "<exception class>"}``; the parent decides what that
means.  The parent kills a worker that is late (:mod:`popproxy.proxy.scan_pool`), so nothing
here needs a timer.  End of stdin ends the worker.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO

from popproxy.policy import Scan
from popproxy.proxy import scan_jobs
from popproxy.scan import Scanner, ScanSettings
from popproxy.scan.feeds import load_feeds_lenient

FRAME_HEADER = struct.Struct(">I")
# A job header is a few hundred octets; anything bigger is a broken parent.
MAX_JOB_HEADER = 1024 * 1024
# Address space of one worker.  A scan holds the message (<= scan.max_message_bytes, 16 MiB
# by default), its decoded parts (<= 48 MiB) and the parsed trees: 2 GiB is far above honest
# needs, and a decompression or parser bomb then fails with MemoryError (an "error" answer)
# instead of taking the host's memory.
MAX_WORKER_MEMORY = 2 * 1024 * 1024 * 1024


def read_frame(stream: BinaryIO) -> tuple[dict[str, Any], bytes] | None:
    """One frame, or None at a clean end of input."""
    raw = stream.read(FRAME_HEADER.size)
    if len(raw) < FRAME_HEADER.size:
        return None
    (length,) = FRAME_HEADER.unpack(raw)
    if length > MAX_JOB_HEADER:
        raise ValueError("job header too large")
    header = json.loads(stream.read(length))
    size = int(header.get("payload", 0))
    payload = stream.read(size) if size else b""
    if len(payload) != size:
        return None
    return header, payload


def encode_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    body = json.dumps({**header, "payload": len(payload)}).encode()
    return FRAME_HEADER.pack(len(body)) + body + payload


def handle(job: dict[str, Any], payload: bytes, scanner: Scanner,
           config: ScanSettings) -> dict[str, Any]:
    if "in" in job:  # the message in a spool file of the parent's (0600, same user)
        payload = Path(job["in"]).read_bytes()
    if job["op"] == "scan":
        return scan_jobs.judge(scanner, payload, bool(job.get("truncated")))
    if job["op"] == "render":
        order = scan_jobs.RenderOrder.from_json(job["order"])
        return {"size": scan_jobs.render_to_file(config, payload, order, Path(job["out"]))}
    if job["op"] == "render_sized":  # the listing budget: the size the client was told
        order = scan_jobs.RenderOrder.from_json(job["order"])
        return scan_jobs.render_sized_to_file(payload, order, int(job["size"]), Path(job["out"]),
                                              config.risky_attachments)
    raise ValueError("unknown job")


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    first = read_frame(stdin)
    if first is None:
        return
    policy = Scan.model_validate(first[0]["scan"])
    config = policy.to_settings()
    # A feed briefly unreadable (replaced non-atomically) must not stop new workers from
    # starting: it starts empty and is loaded at the next scan's refresh.
    scanner = Scanner(config, feeds=load_feeds_lenient(config.feed_paths))
    stdout.write(encode_frame({"ready": True}))
    stdout.flush()
    while (frame := read_frame(stdin)) is not None:
        job, payload = frame
        try:
            answer = handle(job, payload, scanner, config)
        except Exception as exc:  # the parent decides; the worker goes on with the next job
            answer = {"error": exc.__class__.__name__}
        del payload
        stdout.write(encode_frame(answer))
        stdout.flush()


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MAX_WORKER_MEMORY, MAX_WORKER_MEMORY))
    # The protocol gets a descriptor of its own and fd 1 becomes stderr: a library that prints
    # cannot corrupt a frame (the parent would take that for a crashed worker).
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, protocol)


if __name__ == "__main__":
    main()
