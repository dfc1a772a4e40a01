"""seqtag benchmarks: ``python -m bench.run [--smoke] [--only NAME ...]`` writes ``BENCHMARKS.md``.

Each benchmark is a module with ``run(ctx) -> list[Table]`` (see :mod:`bench.run` for the list):

* :mod:`bench.inprocess`  tagging throughput in one process, jieba/LAC side by side, whole-process runs,
  encoder GFLOP/s against this machine's matmul peak, large batches on CUDA;
* :mod:`bench.service`    a real uvicorn process: throughput and latency with batching on and off, memory;
* :mod:`bench.load`       a real uvicorn process under sustained load: errors below capacity, 503 + Retry-After
  when overloaded and recovery, memory growth, model reloads while requests run;
* :mod:`bench.training`   training throughput with the zh-seg recipe, time to the dev target from a run's log.
"""
