"""``python -m benchmarks``: the side-by-side suite (see ``benchmarks.suite``)."""

import logging

from benchmarks.suite import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main()
