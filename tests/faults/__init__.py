"""Fault injection and resource-limit tests (issue "Performance and reliability").

Every fault has one defined outcome, checked from the client, the upstream and the operator's
side: the client gets ``-ERR [SYS/TEMP] ...`` and a clean close (or just a close); the upstream
never receives a QUIT the client did not send (RFC 1939 section 6: no deletion is committed);
the proxy keeps serving (a fresh login works afterwards); a metric and an audit event record it.

Faults covered elsewhere, not repeated here:

* Redis killed and restarted under a running proxy (fail open / fail closed, recovery without
  a restart): ``tests/integration/test_lockout_redis.py``.
* ``ServerTls.reload`` with a broken certificate at the object level:
  ``tests/tls/test_tls_settings.py::test_reload_keeps_old_certificate_when_new_one_is_broken``
  (``test_tls_reload.py`` here is the session-level variant).
* Broken upstream greetings and login replies: ``tests/integration/test_bad_input.py``.
"""
