"""``python -m latentsearch`` runs the command line."""

from latentsearch.cli import main

main()
