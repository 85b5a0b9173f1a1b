"""Connectors: one small adapter module per external system, implementing
``sync.interface.Connector`` (``stripe`` first)."""
