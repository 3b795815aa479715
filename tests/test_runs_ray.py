"""repana.runs on Ray: a local Ray instance with 2 CPUs runs a tiny plan of 2 glyph jobs (about 30 s)."""

import pytest

from repana.meta.config import load_config
from repana.runs import expand_jobs, run_jobs

TINY = {"dataset": "glyphs", "hidden": 8, "meta_batch_size": 2, "queries_train": 2, "queries_test": 2,
        "iterations": 4, "val_every": 0, "checkpoint_every": 2}


def test_a_tiny_plan_runs_as_ray_tasks(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'repana[ray]'): the Ray "
                                            "executor is not tested here")
    base = {"maml": load_config(overrides={**TINY, "name": "maml", "algorithm": "maml", "seed": 0}),
            "anil": load_config(overrides={**TINY, "name": "anil", "algorithm": "anil", "seed": 1})}
    jobs = expand_jobs(base, seeds=1, settings=["5way-1shot"], runs_dir=tmp_path)
    lines = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        results = run_jobs(jobs, executor="ray", log=lines.append)
        again = run_jobs(jobs, executor="ray", log=lines.append)
        assert ray.is_initialized()  # run_jobs leaves an instance it did not start running
    finally:
        ray.shutdown()
    assert [(r.name, r.status) for r in results] == [("5way-1shot/maml/seed0", "trained"),
                                                     ("5way-1shot/anil/seed0", "trained")]
    assert all(r.wall_s > 0 and r.host for r in results)
    assert all(job.final_checkpoint.exists() and (job.run_dir / "config.toml").exists() for job in jobs)
    assert [r.status for r in again] == ["reused", "reused"]
    assert lines[0] == "[train 1/2] 5way-1shot/maml/seed0: start (maml, 4 iterations; Ray task, 1 CPU)"
    assert "[train] 2 trained of 2 jobs" in lines and lines[-1] == "[train] 2 reused of 2 jobs"
