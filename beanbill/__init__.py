"""The ``beanbill`` command line: wiring on top of rating, ledger, sync and connectors."""
