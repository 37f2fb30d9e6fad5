"""The ``rayserve`` runtime: capability versions served by Ray Serve 2.x applications.

Each deployed version is one Serve application named after ``Target.slug`` with one
deployment, :class:`CapabilityReplica`, whose replicas load the capability's MLflow
pyfunc model with :func:`yunnao.runtimes.adapters.loading.load_runnable`. Calls go through a
``DeploymentHandle`` (``run(inputs)``); the same application also answers POSTs of the
input JSON on Ray Serve's own HTTP proxy at ``/<slug>``.

**The node is never a Ray driver.** A Ray driver attaches to the raylet of its own
machine, and Ray 2.60 ends a driver's *process* as soon as that raylet dies ("Exiting
because the Raylet IPC connection failed and the local Raylet is dead"), or after
``gcs_rpc_server_reconnect_timeout_s`` (60 s) without the cluster's GCS. Killing the
Ray head would therefore kill a node that called ``ray.init`` itself, so there is no
in-process reconnect to attempt. Instead the adapter runs the driver in a child process
of its own (``python -c "...driver_main()"``, same interpreter and environment, so
Ray's workers import ``yunnao`` from the same venv) and talks to it over a socket pair
with length-prefixed JSON messages. The driver process holds the handles (cached per
slug), makes every Serve API call (blocking ones in threads) and watches the GCS port.
When the cluster goes away the driver process ends (Ray ends it, or its watchdog does
within about a second); calls in flight fail with :class:`RuntimeDown` and the next
call or deploy starts a new driver process — for a cluster given by ``host:port`` once
its GCS port accepts connections again (the head restarted at the same address), for
a local cluster by starting a new one — which redeploys every target this adapter
deployed. A call waits for that recovery only as long as its own timeout allows, then
answers :class:`RuntimeDown` while the recovery goes on in the background. The extra
hop costs a local socket round trip per call (about a millisecond here, next to
the handle call's several).

Models: by default the *node* downloads the model files from MLflow
(``download_model``, with the context's tracking and registry URIs) into
``<data_dir>/rayserve/models`` and replicas load that directory. Replicas then need
no MLflow access or credentials, starting another replica does not hit MLflow, and an
embedded SQLite MLflow is not opened by many processes — but every replica must see
the node's file system, which holds for a cluster on the node's machine. For a cluster
spanning machines set ``model_source: "registry"``: replicas then load the
``models:/`` URI themselves from the tracking server.

Node configuration (``Settings.runtimes["rayserve"]``, read as :class:`RayServeSettings`),
every key optional:

- ``address``: an existing Ray cluster (``"127.0.0.1:6379"``, ``"auto"``). Absent: the
  driver process starts a local Ray on first use (``ray.init`` with ``num_cpus``,
  default 2, no dashboard, quiet logging), which stops in :meth:`close`.
- ``namespace``: the driver's Ray namespace (default ``"yunnao"``).
- ``http_host``, ``http_port``: where Ray Serve's own HTTP proxy listens (default
  ``127.0.0.1`` and a free port; ``http_port`` None or 0 runs no proxy). Serve's HTTP
  options are cluster-wide and fixed when Serve first starts on a cluster, so against
  a cluster already running Serve, :meth:`describe` shows the port it really uses.
- ``model_source``: ``"download"`` (default) or ``"registry"``, see above.
- ``connect_timeout`` (default 60 s), ``deploy_timeout`` (default 120 s): how long
  connecting to the cluster and bringing an application to RUNNING may take.
- ``retry_after`` (default 5 s): the ``Retry-After`` suggested when the cluster is down.

Binding configuration (a version's ``runtime.config``), every key optional:
``num_replicas`` (default 1), ``autoscaling`` (Serve's ``autoscaling_config``; not with
``num_replicas``), ``num_cpus`` (per replica, default 0.5), ``num_gpus`` (default 0)
and ``max_ongoing_requests`` (Serve's default when absent); and ``trusted`` (an
operator's key only, see ``yunnao.registry.bindings``): without it the model of an
uploaded package is NotDeployable, since replicas run as the node's user outside any
sandbox. A trusted uploaded model's replicas start on its package's environment
(``runtime_env`` ``py_executable``: that environment's Python, which sees the node's
packages behind its own) — built by the node from its pinned index, never installed
into the node, and on no network at deploy time. Ray's ``pip`` runtime env would
instead clone the node's whole virtual environment per package and resolve again
without the node's pins; the environment lives on the node's disk, so this needs
``model_source: "download"`` (a cluster on the node's machine).

The driver process inherits the node's environment and logs to
``<data_dir>/rayserve/driver.log``. Ray 2.60's token authentication follows Ray's own
rules: a local ``ray.init()`` turns it on and writes ``~/.ray/auth_token`` (after which
every ``ray start`` of that user requires the token), while a driver connecting by
address uses a token only with ``RAY_AUTH_MODE=token`` in the node's environment;
without it, connecting to such a cluster fails (after Ray retried for a while).

The package's modules, by the OS process each runs in:

- ``runtime.py`` (node): :class:`RayServeRuntime`, the adapter the gateway calls.
- ``settings.py`` (node): :class:`RayServeSettings`, the node configuration above.
- ``connection.py`` (node): the node's end of one driver process (spawning it,
  requests out, answers matched by id).
- ``protocol.py`` (node and driver): the length-prefixed JSON framing between them,
  and the GCS probe both use.
- ``driver.py`` (the driver process): the Ray driver, which makes every Serve call.
- ``deployment.py`` (node, and Ray Serve's replica processes): a binding's Serve
  deployment options, and :class:`CapabilityReplica`, the deployment class Ray
  pickles by reference and imports in its workers.
"""

from .deployment import CapabilityReplica, deployment_options
from .driver import driver_main
from .runtime import RayServeRuntime
from .settings import RayServeSettings

__all__ = [
    "CapabilityReplica",
    "RayServeRuntime",
    "RayServeSettings",
    "deployment_options",
    "driver_main",
]
