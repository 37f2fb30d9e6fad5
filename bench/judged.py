"""Relevance of full-text search: nDCG@10 over a judged query set, before and after.

The queries below are what people type into a catalog of the generated entries
(``bench/catalog_gen.py``). Each carries graded judgements written down once, from the
generator's own fields (department, subject, task, district), not from any ranking:
grade 3 is what the query asks for, grade 1 a partial answer, everything else 0. Broad
queries whose every match is equally relevant are kept too, because a ranking must not
push other entries above them.

*before* is the ranking main had before issue 19 (FTS5's ``bm25`` with column weights
on SQLite, ``ts_rank`` on PostgreSQL, over every match), kept here for this comparison
only; *after* is the ranking ``RegistryStore.search`` uses now. Both rank the same
matches through the same facet index, as an anonymous visitor (public entries only).

The generated catalog is too regular to tell rankings apart (every entry names its
subject and task once, in the same fields), so a second, hand-written set is seeded into
it: entries and graded queries in ``bench/judged_set.json``, written to trap a ranking
(the word in the title of some entries and only in the description or tags of others,
repeated or once, near-duplicates across departments, Chinese words inside longer
words, prefixes of several words, several words spread over the fields).

    python bench/judged.py                       # 20,000 entries, both stores
    python bench/judged.py --entries 5000 --stores sqlite --out -
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench/ and tests/ are not installed

from bench import sections  # noqa: E402
from bench.catalog_gen import DEPARTMENTS, entries  # noqa: E402
from bench.ranking_before import match_before  # noqa: E402
from bench.search import NODE, console, load, stores  # noqa: E402
from yunnao.registry import db, migrate  # noqa: E402
from yunnao.registry import search as search_mod  # noqa: E402
from yunnao.registry.access import ANONYMOUS  # noqa: E402
from yunnao.registry.db import read_session  # noqa: E402
from yunnao.registry.schemas import PublishRequest  # noqa: E402
from yunnao.registry.store import RegistryStore  # noqa: E402

START, END = "<!-- bench:judged start -->", "<!-- bench:judged end -->"
K = 10

# (query, filters, [(grade, {field: value, ...}), ...]): the first rule whose fields all
# equal the entry's gives its grade. Fields: dept, subject, task, district.
Rule = tuple[int, dict[str, str]]
JUDGED: list[tuple[str, dict[str, list[str]], list[Rule]]] = [
    # the benchmark's broad queries
    ("forecast", {}, [(3, {"task": "forecast"})]),
    ("交通", {}, [(3, {"dept": "traffic"})]),
    ("anom", {}, [(3, {"task": "anomaly"})]),
    ("air", {"domain": ["livelihood"]}, [(3, {"subject": "air"})]),
    (
        "laoshan clinic forecast",
        {},
        [
            (3, {"district": "laoshan", "subject": "clinic", "task": "forecast"}),
            (1, {"subject": "clinic", "task": "forecast"}),
        ],
    ),
    # a word that every entry's boilerplate holds, but some entries are about
    ("score", {}, [(3, {"task": "score"})]),
    ("scor", {}, [(3, {"task": "score"})]),
    ("score air", {}, [(3, {"task": "score", "subject": "air"}), (1, {"subject": "air"})]),
    ("energy score", {}, [(3, {"task": "score", "subject": "energy"}), (1, {"subject": "energy"})]),
    ("confidence score", {}, [(3, {"task": "score"})]),
    # a task's word that another task's summary also uses
    ("detect", {}, [(3, {"task": "detect"}), (1, {"task": "anomaly"})]),
    (
        "vehicle detect",
        {},
        [
            (3, {"subject": "vehicle", "task": "detect"}),
            (1, {"subject": "vehicle", "task": "anomaly"}),
        ],
    ),
    (
        "fire detect",
        {},
        [
            (3, {"subject": "fire", "task": "detect"}),
            (1, {"subject": "fire", "task": "anomaly"}),
        ],
    ),
    ("route", {}, [(3, {"task": "route"})]),
    ("match", {}, [(3, {"task": "match"})]),
    ("classif", {}, [(3, {"task": "classify"})]),
    ("optimis", {}, [(3, {"task": "optimise"})]),
    # subjects, departments, districts, in English and Chinese
    ("quality", {}, [(3, {"subject": "air"})]),
    ("parking", {}, [(3, {"subject": "parking"})]),
    ("school places", {}, [(3, {"subject": "school"})]),
    ("pipe network", {}, [(3, {"subject": "pipe"})]),
    ("crowd", {}, [(3, {"subject": "crowd"})]),
    ("traffic", {}, [(3, {"dept": "traffic"})]),
    ("water", {}, [(3, {"dept": "water"})]),
    ("public security", {}, [(3, {"dept": "police"})]),
    ("预测", {}, [(3, {"task": "forecast"})]),
    ("检测", {}, [(3, {"task": "anomaly"})]),
    ("流量", {}, [(3, {"subject": "flow"})]),
    ("环境 噪声", {}, [(3, {"dept": "env", "subject": "noise"}), (1, {"subject": "noise"})]),
    ("shinan 交通", {}, [(3, {"district": "shinan", "dept": "traffic"})]),
    (
        "traffic signal optimis",
        {},
        [
            (3, {"dept": "traffic", "subject": "signal", "task": "optimise"}),
            (1, {"subject": "signal", "task": "optimise"}),
        ],
    ),
    ("flood forecast", {}, [(3, {"subject": "flood", "task": "forecast"})]),
]


HAND = json.loads((Path(__file__).with_name("judged_set.json")).read_text())


def seed(store: RegistryStore) -> None:
    """Publish the hand-written entries (public), unless the store has them already."""
    with read_session(store.engine) as s:
        have = {
            tuple(r)
            for r in s.connection().execute(sa.text("SELECT namespace, name FROM capability"))
        }
    items = []
    for e in HAND["entries"]:
        namespace = f"{NODE}.{e['namespace']}"
        if (namespace, e["name"]) in have:
            continue
        spec = PublishRequest(
            version="1.0.0",
            title=e["title"],
            summary=e["summary"],
            description=e["description"],
            kind="model",
            domain=DEPARTMENTS[e["namespace"]][0],
            tags=e["tags"],
            classification="public",
            owner=f"{DEPARTMENTS[e['namespace']][2]} bureau, shinan",
            runtime={"type": "inprocess"},
        )
        items.append((namespace, e["name"], spec))
    if items:
        store.publish_many(items)


def fields(namespace: str, name: str, owner: str) -> dict[str, str]:
    subject, task, _ = name.split("-")
    return {
        "dept": namespace.split(".", 1)[1],
        "subject": subject,
        "task": task,
        "district": owner.rsplit(", ", 1)[1],
    }


def grade(rules: list[Rule], entry: dict[str, str]) -> int:
    for g, want in rules:
        if all(entry[k] == v for k, v in want.items()):
            return g
    return 0


def dcg(grades: list[int]) -> float:
    return sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(grades[:K]))


def evaluate(store: RegistryStore, count: int) -> dict[str, list[float]]:
    """nDCG@10 per judged query (the generated set, then the hand-written one), for each
    ranking."""
    generated = {
        name: (fields(ns, name, spec.owner), spec.classification)
        for ns, name, spec in entries(count, NODE)
    }
    with read_session(store.engine) as s:
        rows = s.connection().execute(sa.text("SELECT id, namespace, name FROM capability")).all()
    name_of = {i: name for i, _, name in rows}
    key_of = {i: f"{ns.split('.', 1)[1]}/{name}" for i, ns, name in rows}
    hand = np.array(sorted(i for i, k in key_of.items() if name_of[i] not in generated))
    rnd = np.random.default_rng(20261130)

    def unranked(conn: sa.Connection, terms: list, *, ranked: bool) -> tuple:
        """The same matches in a random order: what the ranking adds is the difference."""
        ids, _ = search_mod.match(conn, terms, ranked=False)
        return ids, rnd.random(ids.size)

    rankings: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
        "random": unranked,
        "before": match_before,
        "after": search_mod.match,
    }
    draws = {"random": 10, "before": 1, "after": 1}

    def top(
        matcher: Callable[..., tuple[np.ndarray, np.ndarray]],
        q: str,
        filters: dict,
        *,
        generated_only: bool = False,
    ) -> list:
        with read_session(store.engine) as s:
            conn = s.connection()
            snap = store.facet_index.current(conn)
            found = matcher(conn, search_mod.parse_query(q), ranked=True)
            if generated_only:  # the generated set's grades know nothing of the seeded ones
                keep = np.isin(found[0], hand, invert=True)
                found = (found[0][keep], found[1][keep])
            return store.facet_index.query(
                snap,
                ANONYMOUS,
                filters=filters,
                match=found,
                sort="relevance",
                offset=0,
                limit=K,
                facets=(),
            ).ids

    out: dict[str, list[float]] = {r: [] for r in rankings}
    visible = [f for f, cls in generated.values() if cls == "public"]
    for q, filters, rules in JUDGED:
        ideal = dcg(sorted((grade(rules, f) for f in visible), reverse=True))
        for ranking, matcher in rankings.items():
            scores = []
            for _ in range(draws[ranking]):
                ids = top(matcher, q, filters, generated_only=True)
                got = [grade(rules, generated[name_of[i]][0]) for i in ids]
                scores.append(dcg(got) / ideal if ideal else 1.0)
            out[ranking].append(sum(scores) / len(scores))
    for judged in HAND["queries"]:
        grades: dict[str, int] = judged["grades"]
        ideal = dcg(sorted(grades.values(), reverse=True))
        for ranking, matcher in rankings.items():
            scores = []
            for _ in range(draws[ranking]):
                ids = top(matcher, judged["q"], {})
                stray = [key_of[i] for i in ids if name_of[i] in generated]
                if stray:  # the set's words are meant to be absent from the generator's
                    console.print(f"  note: `{judged['q']}` also matches generated {stray[:3]}")
                got = [grades.get(key_of[i], 0) for i in ids]
                scores.append(dcg(got) / ideal)
            out[ranking].append(sum(scores) / len(scores))
    return out


def _summary_row(label: str, r: dict[str, list[float]], part: slice) -> str:
    rand, before, after = r["random"][part], r["before"][part], r["after"][part]
    pairs = list(zip(before, after, strict=True))
    worse = sum(a < b - 1e-9 for b, a in pairs)
    better = sum(a > b + 1e-9 for b, a in pairs)
    return (
        f"| {label} | {len(pairs)} | {sum(rand) / len(rand):.3f} | "
        f"{sum(before) / len(pairs):.3f} | {sum(after) / len(pairs):.3f} | {worse} | {better} |"
    )


def _cells(results: dict[str, dict[str, list[float]]], i: int) -> str:
    return " | ".join(
        f"{r['random'][i]:.3f} | {r['before'][i]:.3f} | {r['after'][i]:.3f}"
        for r in results.values()
    )


def report(results: dict[str, dict[str, list[float]]], count: int) -> str:
    n, h = len(JUDGED), len(HAND["queries"])
    lines = [
        START,
        "### Relevance: nDCG@10 over the judged queries",
        "",
        f"`python bench/judged.py --entries {count}`, {time.strftime('%Y-%m-%d')}: "
        f"{n} queries over {count:,} generated entries, graded from the generator's fields, "
        f"and {h} queries over {len(HAND['entries'])} hand-written entries seeded into the "
        "same catalog, graded once by what a person typing the query wants "
        "(`bench/judged_set.json`; each names the trap it sets); as an anonymous visitor. "
        "*random* is the same matches in a random order (mean of 10 draws): what a ranking "
        "adds is its distance from that. *before* is main's ranking before issue 19 "
        "(`bm25` / `ts_rank` over every match), *after* the ranking search uses now. The "
        "generated queries are scored over the generated entries only (their grades know "
        "nothing of the seeded ones). The stores were loaded with the same generator and "
        "seed as `bench/search.py`.",
        "",
        "| store, queries | count | random | before | after | queries worse | queries better |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for store, r in results.items():
        lines.append(_summary_row(f"{store}, hand-written", r, slice(n, n + h)))
        lines.append(_summary_row(f"{store}, generated", r, slice(0, n)))
    head = " | ".join(f"{s} random | {s} before | {s} after" for s in results)
    cols = " ---: | ---: | ---: |" * len(results)
    lines += ["", "Hand-written queries (`bench/judged_set.json`):", ""]
    lines += [f"| query | trap | {head} |", f"| --- | --- |{cols}"]
    for i, judged in enumerate(HAND["queries"], start=n):
        trap = judged["trap"].replace("|", "\\|")
        lines.append(f"| `{judged['q']}` | {trap} | {_cells(results, i)} |")
    lines += ["", "Generated queries:", "", f"| query | {head} |", f"| --- |{cols}"]
    for i, (q, filters, _) in enumerate(JUDGED):
        label = f"`{q}`" + "".join(f" + {k}={','.join(v)}" for k, v in filters.items())
        lines.append(f"| {label} | {_cells(results, i)} |")
    lines += ["", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=20_000, help="catalog size")
    parser.add_argument("--stores", default="sqlite,postgres", help="sqlite, postgres")
    parser.add_argument(
        "--url",
        action="append",
        default=[],
        help="NAME=URL of a store already loaded with --entries generated entries",
    )
    parser.add_argument(
        "--out", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file, or - "
    )
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="yunnao-judged-") as tmp:
        if args.url:
            targets = [tuple(u.split("=", 1)) for u in args.url]
            ctx = None
        else:
            ctx = stores(args.stores.split(","), Path(tmp))
            targets = ctx.__enter__()
        try:
            for name, url in targets:
                engine = db.create_engine(url)
                if not args.url:
                    migrate.upgrade(engine)
                    load(RegistryStore(engine, NODE), args.entries)
                seed(RegistryStore(engine, NODE))
                store = RegistryStore(engine, NODE)
                results[name] = evaluate(store, args.entries)
                engine.dispose()
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
    section = report(results, args.entries)
    if args.out == "-":
        print(section)
    else:
        sections.write(section, Path(args.out), START, END)
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
