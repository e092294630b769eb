"""``python -m kerasq`` runs the command line."""

from kerasq.cli import entry_point

entry_point()
