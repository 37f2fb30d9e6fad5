"""The ``bentoml`` runtime: capability versions served by BentoML 1.4 services.

A version's binding (``runtime.config``) names the service in one of three ways:

- ``url``: adopt a BentoML service someone else runs, e.g. ``"http://127.0.0.1:3000"``.
- ``service``: ``"module:ServiceClass"`` as ``bentoml serve`` accepts it, with an optional
  ``working_dir`` (default: the node's current directory). The node starts
  ``bentoml serve <service> --host 127.0.0.1 --port <free port>`` itself, once for all
  the versions bound to the same service and working directory, and starts it again
  (with back-off) whenever it dies, so service resumes without an operator.
- ``bento``: the SHA-256 of a Bento an author uploaded to the version's namespace (the
  only form an author may set): the node serves it inside the bubblewrap sandbox, over
  a Unix socket (``sandboxed.py``; see docs/security.md "The sandbox").

and ``api`` names the service API (default: the capability name with ``-`` replaced by
``_``). Deploying asks the service for its ``/schema.json`` to find the API's route, so
custom routes and path prefixes work; task and streaming APIs are refused (a call must
answer with one JSON value). A call POSTs the input object as the JSON body (BentoML
1.4 APIs take their parameters by name); a JSON answer is returned as parsed, a text
answer (a ``str`` API) as a string.

Node configuration (``Settings.runtimes["bentoml"]``, read as :class:`BentoMLSettings`),
every key optional:

- ``start_timeout`` (seconds, default 60): how long a started service may take to
  answer ``/readyz``.
- ``stop_timeout`` (seconds, default 10): how long a started service has to shut down
  after SIGTERM before it is killed.
- ``retry_after`` (seconds, default 5): the ``Retry-After`` suggested when a service is
  down or restarting.
- ``bentoml``: the ``bentoml`` executable for started services (default: the one next to
  this Python, else the one on PATH); point it at another virtual environment to run
  a service with dependencies the node does not have.
- ``home``: ``BENTOML_HOME`` for started services (default: the node's environment
  variable if set, else ``<data_dir>/bentoml/home``).
- ``env``: extra environment variables for started services.

Logs of started services are under ``<data_dir>/bentoml/logs``. BentoML answers a call
that raised with a generic 500; for a service the node started, the exception line is
read back from that log (by BentoML's request id) into the :class:`CapabilityError`
detail; for an adopted service the detail carries the request id to look up instead.

The package's modules, by the OS process each runs in:

- ``runtime.py`` (node): :class:`BentoMLRuntime`, the adapter the gateway calls.
- ``settings.py`` (node): :class:`BentoMLSettings`, the node configuration above.
- ``binding.py`` (node): a version's binding read as which service and API to call.
- ``process.py`` (node, watching ``bentoml serve`` processes): one service as the
  node knows it, and the processes of a started one: found, signalled, their logs
  read for a failed call's exception.
- ``services.py`` (the process that publishes, e.g. ``yunnao publish --bentoml``): a
  BentoML service's APIs read as capability specs.
- ``sandboxed.py`` (node): uploaded Bentos, each served by BentoML's HTTP worker inside
  the sandbox, called over a Unix socket whose listening end the node passes in.
- ``inspector.py`` (inside the sandbox, at upload): an uploaded Bento's APIs read as
  capability specs, as a JSON report for the node.
"""

from .runtime import BentoMLRuntime
from .services import service_capabilities
from .settings import BentoMLSettings

__all__ = ["BentoMLRuntime", "BentoMLSettings", "service_capabilities"]
