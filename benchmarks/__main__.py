"""``python -m benchmarks``: run the suite (see ``benchmarks/README.md``)."""

from benchmarks.harness import main

raise SystemExit(main())
