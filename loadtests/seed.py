# loadtests/seed.py -- the original experiment's published figures.
#
# Strategy: the table this project grew from (ApacheBench, 1000 requests per
# cell, an asyncore-era async server, a thread-per-connection server and an
# async server behind a byte-piping balancer), kept as data so every report
# can set our cells beside it.  A seed row counts as valid by the same rule
# as ours: no failed request and total transferred = 1000 x response size.
from __future__ import annotations

from dataclasses import dataclass

REQUESTS = 1000
#: Bytes of one full response in the seed (it served a 404 page).
RESPONSE_SIZE = {"async": 122, "thread": 135, "lb": 122}


@dataclass(frozen=True)
class SeedRow:
    model: str
    concurrency: int
    time_taken: float   #: s
    complete: int
    failed: int
    total_transferred: int
    rps: float
    time_per_request: float  #: ms

    @property
    def valid(self) -> bool:
        return (self.failed == 0 and
                self.total_transferred == REQUESTS * RESPONSE_SIZE[self.model])


ROWS = (
    SeedRow("async", 1, 155.120, 1000, 0, 122000, 6.45, 155.120),
    SeedRow("async", 10, 475.142, 1000, 0, 122000, 2.10, 4751.421),
    SeedRow("async", 100, 159.386, 1000, 0, 122000, 6.27, 15938.577),
    SeedRow("async", 500, 64.881, 1000, 0, 122000, 15.41, 32440.722),
    SeedRow("async", 1000, 192.361, 1000, 0, 122000, 5.20, 192361.271),
    SeedRow("thread", 1, 801.508, 1000, 0, 135000, 1.25, 801.508),
    SeedRow("thread", 10, 466.848, 1000, 0, 135000, 2.14, 4668.477),
    SeedRow("thread", 100, 499.012, 1000, 0, 135000, 2.00, 49901.221),
    SeedRow("thread", 500, 8.936, 1000, 246, 33345, 111.91, 4467.817),
    SeedRow("thread", 1000, 21.234, 1000, 131, 17685, 47.09, 21234.037),
    SeedRow("lb", 1, 4.336, 1000, 0, 122000, 230.63, 4.336),
    SeedRow("lb", 10, 1.710, 1000, 0, 122000, 584.84, 17.099),
    SeedRow("lb", 100, 1.898, 1000, 0, 122000, 526.84, 189.809),
    SeedRow("lb", 500, 0.168, 1000, 66, 8296, 5964.70, 83.826),
    SeedRow("lb", 1000, 0.212, 1000, 203, 24766, 4719.34, 211.894),
)


def lookup(model: str, concurrency: int) -> SeedRow | None:
    """The seed's row for a cell, if it measured one."""
    for row in ROWS:
        if row.model == model and row.concurrency == concurrency:
            return row
    return None
