"""Which transaction commands the mailbox view answers when scanning is on, as a table.

STAT, LIST, RETR and TOP are answered from scan verdicts, so the sizes a client is told are
the sizes RETR returns (RFC 1939 section 5: octet counts are exact).  DELE and RSET are still
relayed, and on +OK the view tracks them so STAT and LIST stay as the upstream would answer.
Every other verb is relayed untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from popproxy.pop3.events import Command
from popproxy.proxy.mailbox import MailboxView
from popproxy.proxy.relay import ClientSink

# (view, client, the command's numeric arguments, already checked against pop3.verbs)
Answer = Callable[[MailboxView, ClientSink, list[int]], Awaitable[None]]


async def _stat(view: MailboxView, client: ClientSink, numbers: list[int]) -> None:
    client.write(await view.stat())


async def _list(view: MailboxView, client: ClientSink, numbers: list[int]) -> None:
    client.write(await view.list(numbers[0] if numbers else None))


async def _retr(view: MailboxView, client: ClientSink, numbers: list[int]) -> None:
    await view.deliver(numbers[0], None)


async def _top(view: MailboxView, client: ClientSink, numbers: list[int]) -> None:
    await view.deliver(numbers[0], numbers[1])  # TOP msg n (RFC 1939 section 7)


FROM_VERDICTS: Mapping[str, Answer] = {"STAT": _stat, "LIST": _list, "RETR": _retr, "TOP": _top}


def _dele(view: MailboxView, cmd: Command) -> None:
    view.deleted.add(int(cmd.args[0]))


def _rset(view: MailboxView, cmd: Command) -> None:
    view.deleted.clear()


# Applied after the upstream said +OK to the relayed command.
TRACKED: Mapping[str, Callable[[MailboxView, Command], None]] = {"DELE": _dele, "RSET": _rset}
