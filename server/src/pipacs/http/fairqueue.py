"""The HTTP worker threads take requests client by client, not first come first served.

waitress queues each connection with a complete request in one deque, served in arrival order.
In a classroom 30 tablets share a few worker threads: each viewer keeps 4 connections busy
prefetching images, so a tablet that has just opened the viewer waits behind every request
the others queued (about 120) for each of its own. Here the queue is one deque per client
address, and the threads serve the addresses in turn: a newcomer's request waits for at most
one request of each other client. Behind the TLS front every connection comes from the front's
address, and the order is first come first served as before.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class FairQueue:
    """What waitress' ThreadedTaskDispatcher needs of its queue (append, popleft, len), with
    the tasks (channels) of each client address served round-robin."""

    def __init__(self) -> None:
        self._tasks: dict[str, deque[Any]] = {}
        self._turns: deque[str] = deque()  # each address with queued tasks, once
        self._size = 0

    def append(self, task: Any) -> None:
        key = _client(task)
        queued = self._tasks.get(key)
        if queued is None:
            queued = self._tasks[key] = deque()
            self._turns.append(key)
        queued.append(task)
        self._size += 1

    def popleft(self) -> Any:
        if not self._size:
            raise IndexError("pop from an empty queue")
        key = self._turns.popleft()
        queued = self._tasks[key]
        task = queued.popleft()
        if queued:
            self._turns.append(key)  # its next task after one of every other client's
        else:
            del self._tasks[key]
        self._size -= 1
        return task

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0


def _client(task: Any) -> str:
    addr = getattr(task, "addr", None)
    if isinstance(addr, tuple) and addr:
        return str(addr[0])
    return ""


def install(dispatcher: Any) -> None:
    """Give waitress' dispatcher a fair queue (before it has any task)."""
    with dispatcher.lock:
        pending = dispatcher.queue
        fair = FairQueue()
        while pending:
            fair.append(pending.popleft())
        dispatcher.queue = fair
