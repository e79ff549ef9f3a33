"""SIGHUP with a changed ``scan`` section: the new scan service serves new sessions, the old
one is closed (threads, Redis pool) only after the sessions that still use it have ended, and
a scan section that cannot be built is refused without touching anything."""

from __future__ import annotations

from pathlib import Path

from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.scanning import ScanService
from tests.helpers import LoopThread, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3, wait_for

CLEAN = b"From: a@example.test\r\nSubject: hello\r\n\r\nJust text.\r\n"


def _closed(service: ScanService) -> bool:
    return service.closed  # its worker processes are stopped


def test_old_scan_service_is_closed_after_its_sessions_end(loop_thread: LoopThread,
                                                           tmp_path: Path) -> None:
    demo = DemoUpstream({b"u": Mailbox(b"p", [CLEAN])})
    with running_demo(loop_thread, demo):
        config = make_config(demo.port, scan={"enabled": True}, state_dir=str(tmp_path))
        with running_proxy(config, loop_thread) as proxy, RawPOP3(proxy.port) as old_client:
            old_client.login("u", "p")
            old = proxy.server.scan
            assert old is not None
            changed = make_config(demo.port, scan={"enabled": True, "time_budget": 9},
                                  state_dir=str(tmp_path))

            async def reload() -> bool:
                return proxy.server.reload_policy(changed)

            assert loop_thread.call(reload())
            assert proxy.server.scan is not old and proxy.server.scan is not None
            assert not _closed(old)  # the session that started before the reload still uses it
            assert old_client.command("RETR 1").endswith(b"Just text.\r\n.\r\n")
            assert old_client.command("QUIT").startswith(b"+OK")
            wait_for(lambda: _closed(old), what="the replaced scan service to be closed")
            assert not _closed(proxy.server.scan)


def test_scan_section_that_cannot_be_built_is_refused(loop_thread: LoopThread,
                                                      tmp_path: Path) -> None:
    config = make_config(1, scan={"enabled": True}, state_dir=str(tmp_path))
    bad = make_config(1, scan={"enabled": True, "redis_url": "redis://localhost:notaport"},
                      state_dir=str(tmp_path))
    with running_proxy(config, loop_thread) as proxy:
        before = proxy.server.scan

        async def reload() -> bool:
            return proxy.server.reload_policy(bad)

        assert not loop_thread.call(reload())
        assert proxy.server.scan is before and proxy.server.config is config
        assert before is not None and not _closed(before)
