"""The invocation gateway: every call of a capability, from the HTTP routes (`/v1/invoke`,
the V2 protocol, jobs) through identity, admission and rate limits to the adapter that
runs it, and the usage and metrics it leaves behind."""
