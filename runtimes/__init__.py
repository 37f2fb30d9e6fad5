"""Where capabilities execute: the Runtime protocol and its adapters (in-process, BentoML,
Ray Serve, Triton, remote) and the invocation gateway. Arrives with the gateway issue."""
