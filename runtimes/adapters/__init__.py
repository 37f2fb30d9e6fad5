"""Runtime adapters: the interchangeable backends a capability version runs on
(in-process, Ray Serve, BentoML, Triton, a remote node), behind the protocol in
`base.py`."""
