"""``python -m pipeline.cli``: the ``ctpipe`` command."""
import sys

from pipeline.cli.main import main

sys.exit(main())
