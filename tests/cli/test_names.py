"""``yunnao node`` and ``yunnao namespace`` against a real ``yunnao serve`` node: run on
the node's machine they sign their own admin token; an author's token names only its
own department; problems come back as readable errors."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tests.realservers.yunnao_node import YUNNAO, YunnaoProcess
from yunnao.cli import main

pytestmark = pytest.mark.slow

NODE = "sd.qd.shinan"
NS = f"{NODE}.traffic"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[YunnaoProcess, Path]]:
    cwd = tmp_path_factory.mktemp("names-node")
    proc = YunnaoProcess(cwd, "--node-id", NODE, env={"YUNNAO_PLUGINS": "false"}).start()
    yield proc, cwd
    proc.stop()


@pytest.fixture(autouse=True)
def no_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("YUNNAO_URL", "YUNNAO_TOKEN", "YUNNAO_PROFILE", "YUNNAO_NODE_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("YUNNAO_CONFIG_DIR", str(tmp_path / "config"))


def cli(node: tuple[YunnaoProcess, Path], *args: str) -> click.testing.Result:
    proc, cwd = node
    local = ["--url", proc.url, "--node-id", NODE, "--data-dir", str(cwd / "var")]
    return CliRunner().invoke(main, [*args, *local])


def author_token(cwd: Path, namespace: str) -> str:
    out = subprocess.run(
        [YUNNAO, "token", "create", "--node-id", NODE, "--role", "author",
         "--namespace", namespace],
        cwd=cwd, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def test_the_node_s_machine_titles_the_node(node: tuple[YunnaoProcess, Path]) -> None:
    done = cli(node, "node", "set", "--title-zh", "市南区", "--title-en", "Shinan District")
    assert done.exit_code == 0, done.output
    assert "市南区" in done.output and "Shinan District" in done.output
    shown = cli(node, "node", "show", "--json")
    assert json.loads(shown.stdout)["title_zh"] == "市南区"
    assert cli(node, "node", "set").exit_code == 2  # nothing to set


def test_namespaces_are_created_set_and_listed(node: tuple[YunnaoProcess, Path]) -> None:
    made = cli(node, "namespace", "create", NS, "--title-zh", "市南区交通运输局")
    assert made.exit_code == 0, made.output
    done = cli(node, "namespace", "set", NS, "--title-en", "Shinan Transport Bureau")
    assert done.exit_code == 0, done.output
    listed = json.loads(cli(node, "namespace", "list", "--json").stdout)["items"]
    assert {"id": NS, "node_id": NODE, "title_zh": "市南区交通运输局",
            "title_en": "Shinan Transport Bureau"} in listed  # fmt: skip
    text = cli(node, "namespace", "list").stdout
    assert "市南区交通运输局 / Shinan Transport Bureau" in text


def test_an_author_names_only_its_own_department(node: tuple[YunnaoProcess, Path]) -> None:
    cwd = node[1]
    token = author_token(cwd, f"{NODE}.water")
    own = cli(node, "namespace", "create", f"{NODE}.water", "--title-zh", "水务局",
              "--token", token)  # fmt: skip
    assert own.exit_code == 0, own.output
    other = cli(node, "namespace", "set", NS, "--title-zh", "x", "--token", token)
    assert other.exit_code == 1 and "403" in other.output
    node_titles = cli(node, "node", "set", "--title-zh", "x", "--token", token)
    assert node_titles.exit_code == 1 and "403" in node_titles.output


def test_a_bad_title_is_a_readable_error(node: tuple[YunnaoProcess, Path]) -> None:
    bad = cli(node, "namespace", "set", NS, "--title-zh", "a\u202eb")
    assert bad.exit_code == 1
    assert "422" in bad.output and "title_zh" in bad.output and "U+202E" in bad.output
    elsewhere = cli(node, "namespace", "create", "sd.qd.laoshan.water", "--title-zh", "x")
    assert elsewhere.exit_code == 1 and "not a department of this node" in elsewhere.output
