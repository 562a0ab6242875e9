"""``python -m snnkit``: the ``snnkit`` command line."""
from snnkit.cli.main import main

main()
