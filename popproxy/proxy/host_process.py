"""``process_*`` for the whole host with workers: the supervisor and every worker, summed.

prometheus_client's multiprocess mode does not carry the process collector's metrics (each
worker's ``process_*`` would have to be one series per pid), so with workers the supervisor's
own ProcessCollector would show one process out of N+1: a CPU panel at idle while the workers
burn. This collector reads each live process's /proc figures with prometheus_client's own
ProcessCollector and serves one value per family: CPU seconds, memory and open files added up
over the processes (what the host spends on popproxy), the start time and fd limit of the
supervisor (the service's start, the limit systemd sets for all of them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# Families that add up over processes; the others are the supervisor's own value.
SUMMED = {"process_cpu_seconds", "process_virtual_memory_bytes",
          "process_resident_memory_bytes", "process_open_fds"}


class HostProcessCollector(Collector):
    """The supervisor's process figures plus those of ``worker_pids()`` (the live workers)."""

    def __init__(self, worker_pids: Callable[[], list[int]]) -> None:
        self._worker_pids = worker_pids

    def collect(self) -> Iterator[Metric]:
        own = {family.name: family for family in _families(os.getpid())}
        for pid in self._worker_pids():
            for family in _families(pid):
                if family.name in SUMMED and family.name in own and family.samples:
                    total = own[family.name]
                    sample = total.samples[0]
                    total.samples[0] = sample._replace(value=sample.value + family.samples[0].value)
        yield from own.values()


def _families(pid: int) -> list[Metric]:
    """One process's families (none when it has just exited: /proc is gone)."""
    return list(ProcessCollector(pid=lambda: pid, registry=None).collect())
