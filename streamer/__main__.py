"""``python -m streamer`` is the ``tandem`` command."""

import sys

from streamer.cli.main import main

sys.exit(main())
