"""Beyond one process, on Ray: `serve.py` (a replica fleet behind one OpenAI-compatible endpoint, Ray Serve)
and `ray_run.py` (`evolve --ray N`: the shards of a run as Ray tasks, then merged). Ray is an optional extra
(`pip install 'evolinstruct[ray]'`; the vLLM engine: `[ray-vllm]`) and is imported only when used."""
