"""``spawn`` (``proxy/tasks.py``): every task is named and referenced until it ends.

asyncio keeps only weak references to tasks; one nobody holds can be garbage-collected
mid-flight (the asyncio docs' warning on ``create_task``).  ruff's banned-api rule makes
``spawn`` the only way to create one.
"""

from __future__ import annotations

import asyncio
import gc

from popproxy.proxy import tasks
from popproxy.proxy.tasks import spawn


def test_spawn_names_the_task_and_holds_it_until_it_ends() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def work() -> str:
            await release.wait()
            return "done"

        task = spawn(work(), "session-pop3")
        assert task.get_name() == "session-pop3"
        assert task in tasks._RUNNING
        del task
        gc.collect()  # only spawn's reference is left: the task must survive this
        (running,) = [t for t in tasks._RUNNING if t.get_name() == "session-pop3"]
        release.set()
        assert await running == "done"
        await asyncio.sleep(0)  # done callbacks run in the next loop step
        assert running not in tasks._RUNNING

    asyncio.run(main())


def test_a_failed_task_is_released_too() -> None:
    async def main() -> None:
        async def fail() -> None:
            raise RuntimeError("boom")

        task = spawn(fail(), "doomed")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
        assert task not in tasks._RUNNING and isinstance(task.exception(), RuntimeError)

    asyncio.run(main())
