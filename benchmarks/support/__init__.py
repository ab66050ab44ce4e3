"""What the tests and the benchmarks share, in one place that both import (and that imports neither).

``harness`` runs the app on a local cluster; ``speech`` makes test speech and scores it (WER); ``real_speech``
fetches real recordings with reference speaker times or texts, and ``der`` scores diarization on them;
``processes`` samples the memory of the app's processes and GPUs; ``load`` sends clips as concurrent
clients; ``soak_loop`` is the soak's request loop; ``fake_youtube`` stands in for YouTube on loopback.
"""
