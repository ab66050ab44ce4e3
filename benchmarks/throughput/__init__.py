"""Throughput side by side: faster-whisper direct, a model per request, and the service at 1 to 16 clients.

    python -m benchmarks.throughput                       # the full run (make bench): 10 s, 30 s, 2 min, 10 min
    python -m benchmarks.throughput --quick               # a smoke run: two short clips, one repetition

One run on one machine, on the same generated speech (espeak-ng, so every clip has its exact script) and
the same model and decoding settings (configs/local.yaml's transcriber args), measures:

1. the faster-whisper library called directly in this process, sequentially: the reference limit;
2. the naive design from the incident: a new WhisperModel for every request;
3. the service (``local_app``, the config as ``serve run`` deploys it), one client at a time;
4. the service under 2, 4, 8 and 16 concurrent clients;
5. one long file: directly, through the service with one Transcriber replica, and through a second app
   whose Transcriber has ``--fanout-replicas`` replicas sharing the same cores (the file's windows fan out);
6. a YouTube mix (half the videos captioned) through ``/v1/transcripts`` against a local YouTube double:
   the audio that captions answered, never downloaded or decoded, is counted.

Each row has audio hours per wall hour, the real-time factor, p50/p95 latency, the peak RSS of each
process, model loads, 503 retries and the WER against the script. Writes ``<machine>-<date>.json``, the
table as ``.md`` and a PNG of throughput against concurrency under ``--out``, and prints the table.

The package: ``workload`` (the clips and each mode's runs), ``probes`` (what the app's ``/stats`` says of
stages, batches and audio sources), ``report`` (rows, comparisons, targets, the table and plots) and
``run`` (the command line, the run and its files).
"""
