import sys

from neurorit_lens.cli.main import main

sys.exit(main())
