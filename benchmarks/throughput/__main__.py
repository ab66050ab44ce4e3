"""``python -m benchmarks.throughput``: the benchmark's command line (``benchmarks.throughput.run``)."""

from benchmarks.throughput.run import main

raise SystemExit(main())
