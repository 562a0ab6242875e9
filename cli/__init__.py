"""The ``snnkit`` command line: a thin translator from options to one library call per command."""
