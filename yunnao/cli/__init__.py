"""The ``yunnao`` command line: one module per command group, mounted on :func:`main`
here. The groups share :mod:`~yunnao.cli.common` (options, settings, HTTP helpers,
profiles) and :mod:`~yunnao.cli.uploads` (publishing by upload, the client side), and
never import this package's ``__init__`` or each other, except ``demo``, which runs the
``cascade`` commands in process.

=============  ============================================================
module         commands
=============  ============================================================
``node``       ``serve``, ``db upgrade|current``
``catalog``    ``search``, ``show``, ``publish``, ``plugins list``
``authoring``  ``versions``, ``deprecate``, ``retire``, ``edit``, ``publish-jobs list|show``
``profiles``   ``login``, ``logout``, ``profiles``
``invoking``   ``invoke``, ``runtime set|status``
``cascade``    ``cascade add-child|add-parent|sync|status|...``
``keys``       ``token create``, ``key create|list|revoke``
``audit``      ``audit verify|export``, ``usage``
``demo``       ``demo``
``names``      ``node show|set``, ``namespace list|show|create|set``
``split``      ``split show|set|clear``
=============  ============================================================
"""

from __future__ import annotations

import os

import click

from yunnao import __version__

from .access import access
from .assessment import assessment
from .audit import audit, usage
from .authoring import compare, deprecate, edit, publish_jobs, retire, versions
from .cascade import cascade
from .catalog import plugins, publish, search, show
from .demo import demo
from .invoking import invoke, runtime
from .keys import key, token
from .names import namespace_group, node_group
from .node import db, serve
from .pipeline import pipeline
from .profiles import login, logout, profiles_list
from .review import review
from .split import split
from .webhooks import webhook


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="yunnao")
def main() -> None:
    """Yunnao (云脑): the capability marketplace of a city cloud brain.

    Run a registry node, publish and find algorithms and models, and link district,
    city and province nodes. Every option can also be set through the environment
    variable shown in its help.
    """
    # MLflow prints run URLs to stdout (where --json output goes) and installs its own
    # log handlers; Yunnao reports progress itself.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")


for command in (
    serve, db, search, show, invoke, runtime, token, plugins, publish,
    cascade, key, audit, usage, demo,
    versions, compare, deprecate, retire, edit, publish_jobs, login, logout, profiles_list,
    node_group, namespace_group, access, assessment, webhook, review, pipeline, split,
):  # fmt: skip
    main.add_command(command)
