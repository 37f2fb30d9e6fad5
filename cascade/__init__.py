"""Federation of registries: change feed, replication, checkpoints and signatures.
Arrives with the cascade issue; the registry's change log is its feed."""
