"""Attack tests: each hole of the trust model tried as an attacker would, with real
requests against real ``yunnao serve`` processes.

The shared federation, started once for the whole folder::

    sd.qd (city) ── pulls ── sd.qd.shinan  (follows the city; the example plugins published)
                 └─ pulls ── sd.qd.laoshan (follows the city)

Tests that need a node with other settings start their own ``YunnaoProcess``. Each test
works in namespaces of its own, so the tests do not see each other's entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.cascade_support import Site
from tests.realservers.yunnao_node import YunnaoProcess

CITY, SHINAN, LAOSHAN = "sd.qd", "sd.qd.shinan", "sd.qd.laoshan"


@dataclass
class Federation:
    city: Site
    shinan: Site
    laoshan: Site

    @property
    def sites(self) -> tuple[Site, ...]:
        return (self.city, self.shinan, self.laoshan)


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """A city and two districts, linked both ways with the ``yunnao cascade`` CLI."""
    root = tmp_path_factory.mktemp("attacks")
    fed = Federation(
        city=Site(CITY, YunnaoProcess(root / CITY, "--node-id", CITY)),
        shinan=Site(SHINAN, YunnaoProcess(root / SHINAN, "--node-id", SHINAN, "--publish-plugins")),
        laoshan=Site(LAOSHAN, YunnaoProcess(root / LAOSHAN, "--node-id", LAOSHAN)),
    )
    try:
        for s in fed.sites:
            s.proc.start(timeout=120)
        for district in (fed.shinan, fed.laoshan):
            fed.city.cascade("add-child", district.node_id, "--child-url", district.url)
            district.cascade("add-parent", CITY, "--parent-url", fed.city.url, "--follow")
        yield fed
    finally:
        for s in fed.sites:
            s.proc.stop()
