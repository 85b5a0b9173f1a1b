"""Connectors: one small adapter module per external system (``connectors.base`` is the
interface every adapter implements)."""
