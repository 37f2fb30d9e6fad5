"""Yunnao, the capability marketplace of a city cloud brain: composition root.

This package assembles the layers (``yunnao.plugins`` ← ``yunnao.registry`` ←
``yunnao.runtimes``/``yunnao.cascade`` ← ``yunnao.catalog_ui``) into a node and
holds the CLI and settings. Nothing below imports it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("yunnao")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
