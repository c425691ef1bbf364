"""``python -m healthmesh`` is the ``healthmesh`` command."""

from healthmesh.cli import main

main()
