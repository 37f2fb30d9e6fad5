"""Beijing time, in which the city's staff read times and count days.

China keeps no daylight saving time: Beijing time is UTC+8 all year. A module of its own
so that what only formats a time (the command line, the pages) need not import the store.
"""

from __future__ import annotations

from datetime import timedelta, timezone

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
