"""Which transaction commands the mailbox view answers when scanning is on, as a table.

STAT, LIST, RETR and TOP are answered from scan verdicts, so the sizes a client is told are
the sizes RETR returns (RFC 1939 section 5: octet counts are exact).  UIDL too: a held
message's notice has a UIDL of its own, so a release looks new to UIDL-tracking clients, and
released originals the client deleted upstream are listed by the proxy (proxy/released.py).
DELE goes through the view (relayed, except for those); RSET is relayed, and on +OK the view
tracks it; QUIT's +OK commits the session's deletions.  Every other verb is relayed untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from popproxy.pop3.events import Command
from popproxy.proxy.relay import ClientSink
from popproxy.proxy.released import ReleasingMailbox

# (view, client, the command's numeric arguments, already checked against pop3.verbs)
Answer = Callable[[ReleasingMailbox, ClientSink, list[int]], Awaitable[None]]


async def _stat(view: ReleasingMailbox, client: ClientSink, numbers: list[int]) -> None:
    client.write(await view.stat())


async def _list(view: ReleasingMailbox, client: ClientSink, numbers: list[int]) -> None:
    client.write(await view.list(numbers[0] if numbers else None))


async def _retr(view: ReleasingMailbox, client: ClientSink, numbers: list[int]) -> None:
    await view.deliver(numbers[0], None)


async def _top(view: ReleasingMailbox, client: ClientSink, numbers: list[int]) -> None:
    await view.deliver(numbers[0], numbers[1])  # TOP msg n (RFC 1939 section 7)


async def _uidl(view: ReleasingMailbox, client: ClientSink, numbers: list[int]) -> None:
    client.write(await view.uidl(numbers[0] if numbers else None))


async def _dele(view: ReleasingMailbox, client: ClientSink, numbers: list[int]) -> None:
    await view.dele(numbers[0])


FROM_VERDICTS: Mapping[str, Answer] = {"STAT": _stat, "LIST": _list, "RETR": _retr, "TOP": _top,
                                       "UIDL": _uidl, "DELE": _dele}


def _rset(view: ReleasingMailbox, cmd: Command) -> None:
    view.deleted.clear()


def _quit(view: ReleasingMailbox, cmd: Command) -> None:
    view.committed()


# Applied after the upstream said +OK to the relayed command.
TRACKED: Mapping[str, Callable[[ReleasingMailbox, Command], None]] = {"RSET": _rset, "QUIT": _quit}
