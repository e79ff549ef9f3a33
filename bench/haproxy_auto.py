"""haproxy at its own default thread count, for bench/peers.py (product ``haproxy-auto``).

The lab's haproxy (``peers.sh``) runs ``nbthread 1`` (``HAPROXY_THREADS``), while popproxy's
default is one worker per CPU (``workers: auto``).  Issue 18 compares CPU per session at
popproxy's defaults, and on a 2-CPU box two busy processes cost more CPU per session than one
(both share the CPUs with Dovecot and the load generator).  This column is haproxy with no
``nbthread`` line, which in haproxy 2.x means one thread per CPU the process may use: both
products at their defaults, side by side with the lab's 1-thread haproxy.

Same frontend and backend as the lab's ``pop3_tls`` (TLS termination with the lab's
certificate, TCP to Dovecot); haproxy runs in the foreground (``-db``) so its pid is ours.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import relay
from relay import UPSTREAM_PORT, log, wait_port

CONFIG = """\
# bench/haproxy_auto.py: the lab's pop3_tls frontend, no nbthread (haproxy's default)
global
    maxconn 8000
    ssl-default-bind-options ssl-min-ver TLSv1.2
    tune.ssl.default-dh-param 2048
defaults
    mode tcp
    timeout connect 5s
    timeout client 30m
    timeout server 30m
frontend pop3_tls
    bind 127.0.0.1:{port} ssl crt {pem}
    default_backend dovecot
backend dovecot
    server upstream 127.0.0.1:{upstream}
"""


class HaproxyAuto(relay.Proxy):
    """One foreground haproxy, started and stopped like a ``relay.Proxy`` (``tls.Target``
    restarts it for the idle-memory baseline)."""

    def __init__(self, config: Path, port: int, pem: Path, logfile: Path) -> None:
        super().__init__(config, port, "", logfile)
        config.write_text(CONFIG.format(port=port, pem=pem, upstream=UPSTREAM_PORT))

    def start(self) -> None:
        subprocess.run(["haproxy", "-c", "-q", "-f", str(self.config)], check=True)
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        if not wait_port(self.port):
            self.stop()
            sys.exit(f"haproxy-auto did not listen on {self.port}; see {self.logfile}")
        log(f"haproxy-auto pid {self.pid} on 127.0.0.1:{self.port}")

