"""Marks resent after a lost reply count once.

A client numbers its marks per sender (MarkColumns.sender_id, first_seq): a batch's marks are
first_seq, first_seq + 1, ... It sends batches one at a time, in order, and when a reply is lost
(DEADLINE_EXCEEDED after the daemon recorded the batch) it sends the same batch again. So per
sender the daemon needs one number, the next sequence number it has not recorded: a batch's marks
below it are a resend, the rest are new. A batch may overlap the recorded ones partly or wholly;
one that starts past them (a batch the daemon refused was skipped) is all new.

Memory is bounded: a sender not heard from for ``forget_after_s`` is forgotten, and at most
``max_senders`` are kept (the least recently heard goes first). A forgotten sender's late resend
would be recorded again; an hour of silence between a send and its resend does not happen.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable


class Dedupe:
    """Per sender, the next sequence number not yet recorded. Thread-safe; the caller holds its
    own lock across ``fresh`` and ``record`` so that what it checked is what it records."""

    def __init__(self, max_senders: int = 65_536, forget_after_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic):
        self.max_senders = max_senders
        self.forget_after_s = forget_after_s
        self._clock = clock
        self._next: OrderedDict[int, tuple[int, float]] = OrderedDict()  # sender_id -> (next seq, heard at)
        self._lock = threading.Lock()

    def fresh(self, sender_id: int, first_seq: int, n: int) -> slice:
        """Which of the batch's ``n`` marks are new, as a slice of them (all when the batch has no
        sequence numbers: sender_id or first_seq 0). Changes nothing: ``record`` does."""
        if not sender_id or not first_seq:
            return slice(0, n)
        with self._lock:
            seen = self._next.get(sender_id, (0, 0.0))[0]
        return slice(min(max(seen - first_seq, 0), n), n)

    def next_seq(self, sender_id: int) -> int:
        """The sender's next sequence number not yet recorded (0: none recorded)."""
        with self._lock:
            return self._next.get(sender_id, (0, 0.0))[0]

    def record(self, sender_id: int, first_seq: int, n: int) -> None:
        """The batch's marks are held now: a resend of any of them is skipped from here on."""
        if not sender_id or not first_seq:
            return
        now = self._clock()
        with self._lock:
            seen = self._next.pop(sender_id, (0, 0.0))[0]
            self._next[sender_id] = (max(seen, first_seq + n), now)  # now the most recently heard
            while self._next:
                oldest, (_, heard) = next(iter(self._next.items()))
                if len(self._next) <= self.max_senders and now - heard <= self.forget_after_s:
                    break
                del self._next[oldest]

    def __len__(self) -> int:
        with self._lock:
            return len(self._next)
