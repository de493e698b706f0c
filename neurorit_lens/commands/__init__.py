"""One module per CLI subcommand (see :mod:`neurorit_lens.cli`)."""
