"""Uploaded packages: the archives departments send, the environments their code
runs on, and the sandbox it runs in."""
