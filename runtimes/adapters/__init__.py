"""Runtime adapters: the interchangeable backends a capability version runs on
(in-process, Ray Serve, BentoML, Triton, a remote node), behind the protocol in
`base.py`.

- ``base.py``: the :class:`~.base.Runtime` protocol, :class:`~.base.Target`, the
  contexts an adapter is given; ``settings.py``: :class:`~.settings.RuntimeSettings`,
  the base of each adapter's typed node settings.
- ``manager.py``: the node's runtimes, made on first use, and what is deployed where;
  ``builtin.py``: the built-in adapters, contributed through the ``yunnao_runtimes``
  hook; ``loading.py``: MLflow models as runnable capabilities.
- ``inprocess.py``, ``remote.py``: the adapters that run in the node (threads or a
  process pool) and at another node.
- ``rayserve/``, ``bentoml/``, ``triton/``: the adapters for external servers, one
  package each, one module per OS process or concern (see each package's docstring).
"""
