"""Alembic migrations of the operational database (a package so that a wheel install ships them)."""
