"""``python -m snnkit.cli`` (e.g. under ``torchrun``) runs the same app as the ``snnkit`` script."""
from .main import main

main()
