"""The registry: domain model, store, search, catalog API and access control."""
