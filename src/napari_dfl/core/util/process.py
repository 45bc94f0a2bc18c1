"""Child processes that end with their parent, however the parent ends."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading

__all__ = ["exit_with_parent"]


def exit_with_parent() -> None:
    """In a multiprocessing child: exit at once when the parent process dies.

    A parent killed outright (a crash, SIGKILL) runs no clean-up, and a child blocked on a
    multiprocessing queue never sees end-of-file because it holds both ends of the queue's
    pipe: without this watch it would wait for ever, holding its memory (a loaded backbone,
    an embedding matrix). A daemon thread waits on the parent's sentinel and ends the child.
    Does nothing outside a multiprocessing child.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="dfl-parent-watch", daemon=True).start()
