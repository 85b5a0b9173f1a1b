"""Launchers for the real test peers (localstripe, ...), kept small and documented."""
