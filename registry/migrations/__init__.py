"""Alembic migrations of the registry store, run by ``yunnao db upgrade``."""
