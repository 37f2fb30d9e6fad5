"""Search latency and load rate of the registry store at catalog scale.

Loads ``--entries`` generated capabilities (``bench/catalog_gen.py``) into a fresh
SQLite store and a fresh PostgreSQL database (a real server, started here as the
tests start it), then times typical catalog queries through ``RegistryStore.search``
and, for a few of them, over HTTP against a real ``yunnao serve`` process on the same
store. Each figure is quoted with its ratio to a baseline measured in the same run
and the same way (showing one capability by its name), because these machines are
noisy. Results go into the marked section of ``docs/benchmarks.md``.

    python bench/search.py                      # 100,000 entries, both stores
    python bench/search.py --entries 10000 --stores sqlite --out -   # quick look
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ and tests/ are not installed

from bench import sections  # noqa: E402
from bench.catalog_gen import entries  # noqa: E402
from bench.ranking_before import search_before  # noqa: E402
from tests.realservers.postgres import PostgresServer  # noqa: E402
from tests.realservers.yunnao_node import YunnaoProcess  # noqa: E402
from yunnao.registry import db, migrate  # noqa: E402
from yunnao.registry.access import ANONYMOUS, Identity  # noqa: E402
from yunnao.registry.search import SearchQuery  # noqa: E402
from yunnao.registry.store import RegistryStore  # noqa: E402

NODE = "qd"
BATCH = 1000
START, END = "<!-- bench:search start -->", "<!-- bench:search end -->"
console = Console(stderr=True)

# What people type into a catalog: a broad English word, a Chinese word, a word half
# typed, a word narrowed by a facet, facets alone, a specific phrase; and browsing.
QUERIES: dict[str, tuple[str, SearchQuery]] = {
    "browse": ("newest first, no query", SearchQuery()),
    "word": ("`forecast`, a broad word", SearchQuery(q="forecast")),
    "chinese": ("`交通`, a broad Chinese word", SearchQuery(q="交通")),
    "prefix": ("`anom` while typing", SearchQuery(q="anom")),
    "word+facet": (
        "`air` + domain=livelihood",
        SearchQuery(q="air", filters={"domain": ["livelihood"]}),
    ),
    "facets": (
        "runtime=triton + tag=gis",
        SearchQuery(filters={"runtime": ["triton"], "tag": ["gis"]}),
    ),
    "specific": ("`laoshan clinic forecast`", SearchQuery(q="laoshan clinic forecast")),
    "deep page": ("browse, page 50", SearchQuery(page=50)),
    "by name": ("browse sorted by name", SearchQuery(sort="name")),
}
# Broad words timed also as main ranked them before issue 19 (bench/ranking_before.py),
# in the same run: the ratio of the two is the speed-up.
BEFORE = ("word", "chinese", "prefix", "word+facet", "specific")
LABELS = {key: label for key, (label, _) in QUERIES.items()}
for _key in BEFORE:
    LABELS[f"{_key}, before"] = LABELS[_key] + ", ranked as before issue 19"
HTTP_QUERIES = {
    "browse": {},
    "word": {"q": "forecast"},
    "chinese": {"q": "交通"},
    "word+facet": {"q": "air", "domain": "livelihood"},
}
CALLERS = {
    "anonymous": ANONYMOUS,
    "staff": Identity(subject="bench", role="consumer", scopes=(f"{NODE}.traffic",)),
}


@dataclass
class Timing:
    samples: list[float]  # milliseconds

    def pct(self, p: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def measure(cases: dict[str, Callable[[], object]], runs: int) -> dict[str, Timing]:
    """Round-robin over the cases, so drift in machine load hits all of them alike."""
    for fn in cases.values():  # warm caches and connections
        fn()
    out = {name: Timing([]) for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            out[name].samples.append(timed(fn))
    return out


def load(store: RegistryStore, count: int) -> float:
    """Publish ``count`` generated entries in batches; entries per second."""
    store.ensure_node(title="benchmark")
    items = entries(count, NODE)
    start = time.perf_counter()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("loading", total=count)
        while batch := list(itertools.islice(items, BATCH)):
            store.publish_many(batch)
            progress.advance(task, len(batch))
    return count / (time.perf_counter() - start)


@dataclass
class StoreResult:
    name: str
    load_rate: float
    index_ms: float
    store: dict[str, dict[str, Timing]]  # caller -> case -> timing
    http: dict[str, Timing]
    totals: dict[str, int]


def bench_store(
    name: str, url: str, workdir: Path, count: int, runs: int, *, loaded: bool = False
) -> StoreResult:
    """Load ``count`` entries into the store at ``url`` (unless ``loaded``: a store that
    an earlier run of the generator filled with ``count`` entries) and time it."""
    engine = db.create_engine(url)
    migrate.upgrade(engine)
    store = RegistryStore(engine, NODE)
    rate = 0.0
    if not loaded:
        console.print(f"[bold]{name}[/]: loading {count:,} capabilities")
        rate = load(store, count)
    if engine.dialect.name == "postgresql":
        # What autovacuum would do shortly after a bulk load: without statistics the
        # planner may scan the whole search table instead of using its GIN index.
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    fresh = RegistryStore(engine, NODE)  # as a node starting on this store
    index_ms = timed(fresh.warm)

    first = next(entries(1, NODE))
    show = (first[0], first[1])
    results: dict[str, dict[str, Timing]] = {}
    totals = {}
    for caller, identity in CALLERS.items():
        cases: dict[str, Callable[[], object]] = {
            "baseline": lambda identity=identity: fresh.describe(ANONYMOUS, *show)
        }
        for key, (_, query) in QUERIES.items():
            cases[key] = lambda q=query, identity=identity: fresh.search(identity, q)
            totals[f"{caller}:{key}"] = fresh.search(identity, query).total
        for key in BEFORE:  # the same query, ranked as main did before issue 19
            query = QUERIES[key][1]
            cases[f"{key}, before"] = lambda q=query, identity=identity: search_before(
                fresh, identity, q
            )
            totals[f"{caller}:{key}, before"] = totals[f"{caller}:{key}"]
        console.print(f"  timing {len(cases)} cases x {runs} runs as {caller}")
        results[caller] = measure(cases, runs)

    console.print("  timing over HTTP against `yunnao serve`")
    node = YunnaoProcess(
        workdir,
        "--node-id",
        NODE,
        "--data-dir",
        str(workdir / f"{name}-node"),
        "--database-url",
        url,
        "--log-level",
        "warning",
    ).start(timeout=120)
    try:
        with httpx.Client(base_url=node.url, timeout=30) as client:

            def get(path: str, params: dict[str, str] | None = None) -> None:
                client.get(path, params=params).raise_for_status()

            http_cases: dict[str, Callable[[], object]] = {
                "baseline": lambda: get(f"/v1/capabilities/{show[0]}/{show[1]}")
            }
            for key, params in HTTP_QUERIES.items():
                http_cases[key] = lambda p=params: get("/v1/capabilities", p)
            http = measure(http_cases, runs)
    finally:
        node.stop()
    engine.dispose()
    return StoreResult(name, rate, index_ms, results, http, totals)


@contextmanager
def stores(names: list[str], workdir: Path) -> Iterator[list[tuple[str, str]]]:
    out: list[tuple[str, str]] = []
    pg: PostgresServer | None = None
    try:
        for name in names:
            if name == "sqlite":
                out.append(("SQLite", f"sqlite:///{workdir / 'bench.db'}"))
            elif name == "postgres":
                console.print("starting PostgreSQL")
                pg = PostgresServer().start()
                out.append(("PostgreSQL", pg.create_database("bench_search")))
            else:
                raise SystemExit(f"unknown store {name!r}: use sqlite, postgres")
        yield out
    finally:
        if pg is not None:
            pg.stop()


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _store_marks(name: str) -> tuple[str, str]:
    return f"<!-- bench:search:{name} start -->", f"<!-- bench:search:{name} end -->"


def kept_blocks(previous: str, run: list[str]) -> dict[str, str]:
    """The stores' blocks of a previous section that this run does not replace."""
    out = {}
    for name in ("SQLite", "PostgreSQL"):
        start, end = _store_marks(name)
        if name not in run and start in previous and end in previous:
            out[name] = start + previous.split(start, 1)[1].split(end, 1)[0] + end
    return out


def report(
    results: list[StoreResult], count: int, runs: int, kept: dict[str, str] | None = None
) -> str:
    """The section: one block per store; a store not run keeps its block from before."""
    lines = [
        START,
        "## Search",
        "",
        "Generated capabilities (10 departments, 16 subjects, 8 tasks; "
        "Chinese titles, English summaries; half public, 40% internal, 10% restricted). "
        "Latencies in milliseconds, interleaved over the cases. *× base* is the case's "
        "p50 over the baseline's p50 from the same run: the baseline shows one capability "
        "by name through the same layer (store call, or HTTP request). Each store's "
        "block names the command and the day that measured it.",
        "",
        "A search returns the first page of 20, the total and all eight facet counts "
        "(each ignoring its own filter). *Staff* is a signed-in consumer, who also sees "
        "internal entries (about twice the matches of an anonymous visitor).",
        "",
    ]
    blocks = dict(kept or {})
    for r in results:
        blocks[r.name] = _store_block(r, count, runs)
    for name in ("SQLite", "PostgreSQL"):
        if name in blocks:
            lines += [blocks[name], ""]
    lines.append(END)
    return "\n".join(lines)


def _store_block(r: StoreResult, count: int, runs: int) -> str:
    start, end = _store_marks(r.name)
    store = "sqlite" if r.name == "SQLite" else "postgres"
    lines = [
        start,
        f"### {r.name}",
        "",
        f"`python bench/search.py --entries {count} --runs {runs} --stores {store}` on "
        f"{platform.machine()} / {platform.python_implementation()} "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}.",
        "",
    ]
    lines += [
        (
            f"- load: **{r.load_rate:,.0f} capabilities/s** (publish in batches of {BATCH}, "
            "each entry a capability, a version, tags, index entry and two change-log rows"
            + (")" if r.name == "SQLite" else "; then `ANALYZE`, as autovacuum would after a load)")
            if r.load_rate
            else "- load: not measured (`--url`: a store the generator filled before this run)"
        ),
        f"- facet index built when the node starts: {ms(r.index_ms)} ms",
        "",
        "| query | caller | matches | p50 | p95 | p99 | × base |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for caller, timings in r.store.items():
        base = timings["baseline"].pct(50)
        lines.append(
            f"| baseline: show one | {caller} | 1 | {ms(base)} | "
            f"{ms(timings['baseline'].pct(95))} | {ms(timings['baseline'].pct(99))} | 1.0 |"
        )
        for key, label in LABELS.items():
            t = timings[key]
            lines.append(
                f"| {key}: {label} | {caller} | {r.totals[f'{caller}:{key}']:,} | "
                f"{ms(t.pct(50))} | {ms(t.pct(95))} | {ms(t.pct(99))} | "
                f"{t.pct(50) / base:.1f} |"
            )
    base = r.http["baseline"].pct(50)
    lines += [
        "",
        f"Over HTTP (anonymous, `yunnao serve` on {r.name}, one client, keep-alive):",
        "",
        "| request | p50 | p95 | p99 | × base |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, t in r.http.items():
        label = "baseline: GET one capability" if key == "baseline" else key
        lines.append(
            f"| {label} | {ms(t.pct(50))} | {ms(t.pct(95))} | {ms(t.pct(99))} | "
            f"{t.pct(50) / base:.1f} |"
        )
    lines.append(end)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000, help="catalog size")
    parser.add_argument(
        "--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres"
    )
    parser.add_argument("--runs", type=int, default=50, help="timed runs per case")
    parser.add_argument(
        "--url",
        action="append",
        default=[],
        help="SQLite=URL or PostgreSQL=URL: time a store the generator already filled "
        "with --entries entries, instead of loading fresh ones (repeatable)",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file, or - "
    )
    args = parser.parse_args()
    results = []
    given = [tuple(u.split("=", 1)) for u in args.url]
    with (
        tempfile.TemporaryDirectory(prefix="yunnao-bench-") as tmp,
        stores([] if given else args.stores.split(","), Path(tmp)) as targets,
    ):
        for name, url in given or targets:
            results.append(
                bench_store(name, url, Path(tmp), args.entries, args.runs, loaded=bool(given))
            )
    previous = Path(args.out).read_text() if args.out != "-" and Path(args.out).exists() else ""
    kept = kept_blocks(previous, [r.name for r in results])
    section = report(results, args.entries, args.runs, kept)
    if args.out == "-":
        print(section)
    else:
        sections.write(section, Path(args.out), START, END)
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
