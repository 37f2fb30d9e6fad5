"""The Idempotency-Key rows on SQLite and PostgreSQL: of 20 processes claiming one key
at once, one wins; a finished request's answer is there for the others; an expired key
is claimed afresh. (The HTTP behaviour: tests/end_to_end/test_idempotency.py.)"""

from __future__ import annotations

import threading
import time

from starlette.responses import JSONResponse

from yunnao.registry import db
from yunnao.runtimes.gateway.idempotency import Idempotency


def test_one_of_twenty_concurrent_claims_wins(database_url: str) -> None:
    engines = [db.create_engine(database_url) for _ in range(4)]  # as separate processes
    try:
        stores = [Idempotency(e) for e in engines]
        barrier = threading.Barrier(20)
        results: list[object] = []

        def claim(i: int) -> None:
            barrier.wait()
            results.append(stores[i % 4].claim("k" * 64, "fp-1"))

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r is None for r in results) == 1
        assert {r.fingerprint for r in results if r is not None} == {"fp-1"}

        stores[0].finish("k" * 64, JSONResponse({"output": 1}, headers={"Deprecation": "true"}))
        row = stores[1].read("k" * 64)
        assert (row.state, row.status, row.body) == ("done", 200, b'{"output":1}')
        assert "deprecation" in row.headers

        short = Idempotency(engines[0], window=0.2)
        assert short.claim("e" * 64, "fp-2") is None
        assert short.claim("e" * 64, "fp-3").fingerprint == "fp-2"
        time.sleep(0.3)  # past the window: the key is free again
        assert short.claim("e" * 64, "fp-3") is None
    finally:
        for e in engines:
            e.dispose()
