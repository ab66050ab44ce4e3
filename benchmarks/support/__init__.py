"""What the tests and the benchmarks share, in one place that both import (and that imports neither).

``harness`` runs the app on a local cluster; ``speech`` makes test speech and scores it (WER);
``processes`` samples the memory of the app's processes and GPUs; ``load`` sends clips as concurrent
clients; ``soak_loop`` is the soak's request loop; ``fake_youtube`` stands in for YouTube on loopback.
"""
