"""``python -m streamer`` is the ``tandem`` command."""

import sys

from streamer.cli import main

sys.exit(main())
