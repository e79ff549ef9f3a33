"""The I/O shell: listeners, sessions and upstream connections around the sans-io core.

Who owns what (each piece of state has one owner; helpers return values):

- ``server.ProxyServer`` owns the listeners, the policy in force and everything shared by the
  sessions of a process (TLS contexts, lockout guard, scan service, learned upstream CAPA); a
  reload builds a new ``settings.SessionSettings`` for the sessions that start afterwards.
- ``acceptor.Acceptor`` accepts on a listening socket; each client gets a
  ``socket_channel.SocketChannel``, which owns the connection's bytes, TLS included: it reads
  its socket itself (``loop.add_reader``; TLS is a non-blocking ``ssl.SSLSocket`` on the
  descriptor), so an idle session holds no transport and no memory BIOs (issue 18); STLS
  refuses unread plaintext and leaves the rest to OpenSSL (RFC 2595 s4).  The session sees it
  as a ``client_channel.ClientChannel``.
- ``upstream_socket.open_channel`` connects to the upstream (each address in turn, through the
  loop) and gives the connection a ``SocketChannel`` too (no transport per upstream, issue 18
  item 6); STLS and implicit TLS to the upstream are ``switch_to_tls(server_side=False)`` with
  the verifying context of ``tls.upstream_contexts``.  The channel's parts: ``read_queue``
  (received bytes, the read deadline, the receive buffer) and ``socket_writer`` (coalescing,
  back-pressure); ``channel_errors`` has ``ChannelClosed`` and the handshake timeout.
- ``session.Session`` owns one client's POP3 state machine (``pop3.state``) and its parser,
  and is the only code that applies a state transition or writes a reply.
- ``auth.AuthHandler`` decides a login and returns a value (``LoggedIn``, ``Refused``,
  ``Reply``, ``SaslStarted``); the session acts on it.
- ``upstream.UpstreamConnection`` is the one reader of upstream replies: ``request`` (status
  line), ``body()`` (still-stuffed chunks), ``read_unstuffed(limit)``; failures carry an
  ``UpstreamFailure`` reason.

Data flow of one session: accept -> allowlist (``policy.decisions``) -> our own greeting ->
client bytes into ``pop3.commands.CommandParser`` -> the session decides (local answer, STLS,
lockout and auth gate, login) -> upstream login -> relay (``relay.relay``/``relay_body``).

The scan path (scanning on, docs/scanning.md): at the first STAT/LIST/UIDL/RETR/TOP the
session's ``mailbox.MailboxView`` reads the upstream's UIDL and LIST once, asks
``scanning.ScanService`` for each message's verdict (the ``verdict_cache``, memory or Redis,
keyed by upstream, user, UIDL and size, valid for the scanner's current generation), and for a
message it has none for, fetches it (``delivery``: into ``spool`` files), has it judged and
rendered in a worker process (``scan_pool`` -> ``scan_worker`` -> ``scan_jobs``, killed at the
time budget, a timeout counts as suspicious), and caches the action with the exact size the
client will receive. STAT/LIST then report those sizes, RETR/TOP deliver the spooled rendering,
the original relayed byte for byte (clean), or its header rewritten while the body streams
(tagged), so LIST == RETR and TOP is cut from the same message (RFC 1939 s5, s7). Quarantined
originals are held by ``popproxy.quarantine`` until an admin releases them.
"""
