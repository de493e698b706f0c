"""The ``neurorit`` command line: one module per subcommand, flags generated from the configs.

``main(argv)`` is testable and returns the exit code; ``python -m neurorit_lens`` and the
``neurorit`` script call it.
"""

from neurorit_lens.cli.main import main

__all__ = ["main"]
