"""The cascade's initial sync in one process, without HTTP: µs per feed entry at each end.

A district's SQLite store is loaded with ``--entries`` capabilities (signed as written,
as ``yunnao serve`` does); then its feed is read page by page as ``GET
/v1/cascade/changes`` answers (the page built and written as the response's bytes: the
district's CPU per entry), and a city applies those bytes page by page as its pull loop
does (parsed, checked ahead, applied: the city's CPU per entry, all on one thread here).
Meant for interleaved A/B runs of two trees (``--root``: another checkout's root, e.g. a
``git worktree`` of the last commit); prints one line, nothing goes into the docs.

    python bench/cascade_inprocess.py --entries 3000
    python bench/cascade_inprocess.py --entries 3000 --root /tmp/base
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _use_root(root: str) -> None:
    """Import the yunnao packages from ``root`` instead of this checkout."""
    import __editable___yunnao_0_1_0_finder as finder  # the editable install's mapping

    here = str(Path(__file__).resolve().parent.parent)
    for name, path in finder.MAPPING.items():
        finder.MAPPING[name] = path.replace(here, root, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--root", help="another checkout's root to measure instead")
    args = parser.parse_args()
    if args.root:
        _use_root(args.root)
    root = Path(args.root or Path(__file__).resolve().parent.parent)
    sys.path.insert(0, str(root))

    from bench import cascade as bench_cascade
    from yunnao.cascade import feed_api
    from yunnao.cascade.apply import Applier
    from yunnao.cascade.feed import FEED_DEPTH, Feed
    from yunnao.cascade.peers import PeerStore
    from yunnao.registry import db, migrate
    from yunnao.registry.http import json_response, parse_json
    from yunnao.registry.identity import tokens
    from yunnao.registry.store import RegistryStore

    with tempfile.TemporaryDirectory() as tmp:
        ddir, cdir = Path(tmp, "district"), Path(tmp, "city")
        ddir.mkdir()
        cdir.mkdir()
        bench_cascade.console.quiet = True
        bench_cascade.load(ddir, args.entries)
        dkey = tokens.load_or_create_key(ddir / "node_key.pem")
        dengine = db.create_engine(f"sqlite:///{ddir / 'registry.db'}")
        feed = Feed(dengine, bench_cascade.DISTRICT, dkey)
        page_body = getattr(feed_api, "page_body", None)

        pages: list[tuple[int, int, int, bytes]] = []
        since = 0
        cpu = time.process_time()
        while True:
            page = feed.page(since, args.batch)
            if page_body is not None:
                raw = page_body(feed.node_id, page)
            else:
                body = feed_api.ChangesPage(
                    node=feed.node_id, items=page.items, next=page.next, head=page.head
                )
                raw = bytes(json_response(body).body)
            pages.append((since, page.next, page.head, raw))
            since = page.next
            if since >= page.head:
                break
        district_cpu = time.process_time() - cpu

        cengine = db.create_engine(f"sqlite:///{cdir / 'registry.db'}")
        migrate.upgrade(cengine)
        store = RegistryStore(cengine, bench_cascade.CITY)
        ckey = tokens.load_or_create_key(cdir / "node_key.pem")
        store.ensure_node(public_key=tokens.public_key_text(ckey))
        peers = PeerStore(store, ckey)
        peers.add(
            bench_cascade.DISTRICT,
            relation="child",
            public_key=tokens.public_key_text(dkey),
            url="http://127.0.0.1:9",
            pull=False,
            push=False,
        )
        applier = Applier(bench_cascade.CITY, ckey, store.transaction)
        try:
            from yunnao.cascade.wire import read_page
        except ImportError:  # a tree before the page was read by orjson

            def read_page(raw: bytes, what: str) -> Any:
                return parse_json(raw, what=what, max_depth=FEED_DEPTH)

        applied = 0
        parse_s = check_s = apply_s = 0.0
        for since, nxt, head, raw in pages:
            peer = peers.get(bench_cascade.DISTRICT)
            t0 = time.process_time()
            data = read_page(raw, "feed page")
            t1 = time.process_time()
            checked = applier.check_ahead(data["items"])
            t2 = time.process_time()
            outcome = applier.apply(
                peer, data["items"], since=since, next_seq=nxt, head=head, checked=checked
            )
            t3 = time.process_time()
            parse_s, check_s, apply_s = parse_s + t1 - t0, check_s + t2 - t1, apply_s + t3 - t2
            applied += outcome.applied
            assert not outcome.rejected, outcome.rejected[:3]
        items = sum(len(parse_json(raw, max_depth=FEED_DEPTH)["items"]) for *_, raw in pages)
        us = 1e6 / items
        city = parse_s + check_s + apply_s
        print(
            f"{args.root or 'this tree'}: {items} entries ({applied} applied); "
            f"district {district_cpu * us:.0f} µs CPU/entry; city {city * us:.0f} "
            f"µs CPU/entry (parse {parse_s * us:.0f}, check {check_s * us:.0f}, "
            f"apply {apply_s * us:.0f})"
        )
        dengine.dispose()
        cengine.dispose()


if __name__ == "__main__":
    main()
