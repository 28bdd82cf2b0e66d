"""A simulation worker process: ``python -m goldenloop.sim.worker_main``.

Started by ``goldenloop.sim.workers.Workers``, which writes the pickled ``WorkerJob``
to its stdin (unpickling it is as trusted as the loading process) and reads the pieces
from its stdout. A module of its own rather than ``-m goldenloop.sim.workers``: run as
``__main__``, that module's classes would pickle as ``__main__._PieceHeader``, and it
would be imported a second time under its own name.
"""

from __future__ import annotations

import sys

from goldenloop.sim.workers import main

if __name__ == "__main__":
    sys.exit(main())
