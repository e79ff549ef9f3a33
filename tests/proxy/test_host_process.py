"""process_* summed over the supervisor and its workers."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client import CollectorRegistry

from popproxy.proxy.host_process import HostProcessCollector


def _values(registry: CollectorRegistry) -> dict[str, float]:
    return {s.name: s.value for family in registry.collect() for s in family.samples}


def test_workers_memory_and_fds_are_added_to_the_supervisors() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        alone, host = CollectorRegistry(), CollectorRegistry()
        alone.register(HostProcessCollector(lambda: []))
        host.register(HostProcessCollector(lambda: [child.pid]))
        one, both = _values(alone), _values(host)
        # A Python child holds megabytes resident and at least stdin/stdout/stderr.
        assert both["process_resident_memory_bytes"] > one["process_resident_memory_bytes"] + 1e6
        assert both["process_open_fds"] >= one["process_open_fds"] + 3
        assert both["process_start_time_seconds"] == one["process_start_time_seconds"]
        assert both["process_max_fds"] == one["process_max_fds"]
    finally:
        child.kill()
        child.wait()


def test_a_worker_that_just_exited_is_skipped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    registry = CollectorRegistry()
    registry.register(HostProcessCollector(lambda: [child.pid]))
    assert _values(registry)["process_open_fds"] > 0  # the supervisor's own, no error
