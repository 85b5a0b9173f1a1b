"""Connectors: one small adapter module per external system (later issue)."""
