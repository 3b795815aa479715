"""Training plans (setting x network x seed) and the engines that run them; see docs/runs.md.

```python
from repana.runs import Job, expand_jobs, write_plan, read_plan, run_jobs
jobs = expand_jobs(training_plan("quick", "glyphs"), seeds=3, settings=["5way-1shot"], runs_dir="out/runs")
write_plan(jobs, "out/plan")                      # plan.jsonl, commands.sh (GNU parallel), slurm.sh
results = run_jobs(jobs, executor="local")        # or executor="ray", address="HOST:6379"
```
"""

from repana.runs.executors import EXECUTORS, JobResult, JobsFailedError, run_jobs
from repana.runs.plan import (SEED_STRIDE, SETTINGS, Job, expand_jobs, expand_rl_jobs, parse_setting, read_plan, seed_for,
                              write_plan)

__all__ = ["EXECUTORS", "Job", "JobResult", "JobsFailedError", "SEED_STRIDE", "SETTINGS", "expand_jobs", "expand_rl_jobs",
           "parse_setting", "read_plan", "run_jobs", "seed_for", "write_plan"]
