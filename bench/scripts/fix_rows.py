"""Rows of the `fixes` table as the server writes them, for the measurement scripts here.

A `Tracks` holds members whose tracks advance one second and a micro-degree a fix; `rows`
gives a member's next fixes in the column order of the table.
"""
import datetime
import random
import time
import uuid

BASE = datetime.datetime(2026, 11, 20)


def v7():
    """A time-ordered UUID (version 7 layout: milliseconds, then random bits), as bytes."""
    return uuid.UUID(int=(time.time_ns() // 1_000_000 << 80) | random.getrandbits(80)).bytes


class Tracks:
    def __init__(self, members, ordered_client_ids=False):
        self.members = [uuid.uuid4().bytes for _ in range(members)]
        self.steps = [0] * members
        self.ordered = ordered_client_ids

    def rows(self, member, n):
        out = []
        for _ in range(n):
            step = self.steps[member]
            self.steps[member] += 1
            t = (BASE + datetime.timedelta(seconds=step)).isoformat() + "+00:00"
            client_id = v7() if self.ordered else uuid.uuid4().bytes
            out.append((v7(), self.members[member], client_id, t, t, 34.2 + step * 1e-6,
                        108.9, 8.0, 1.0, None, None, None, "ping", None, None, "wgs84", 0,
                        0, "api"))
        return out
