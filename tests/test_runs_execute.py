"""repana.runs end to end: real `repana train` processes on the offline glyphs, a bad config and a
killed job, then a rerun that trains only what is missing (resuming the killed one)."""

import csv
import threading
import time

import pytest

from repana.meta.config import load_config
from repana.runs import JobsFailedError, expand_jobs, run_jobs
from repana.runs import executors

TINY = {"dataset": "glyphs", "hidden": 8, "meta_batch_size": 2, "queries_train": 2, "queries_test": 2,
        "iterations": 4, "val_every": 0, "checkpoint_every": 2, "log_every": 1}


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_failed_and_killed_jobs_leave_the_others_and_a_rerun_finishes_them(tmp_path, monkeypatch):
    base = {"maml": load_config(overrides={**TINY, "name": "maml", "algorithm": "maml", "seed": 0}),
            "anil": load_config(overrides={**TINY, "name": "anil", "algorithm": "anil", "seed": 1,
                                           "iterations": 60}),
            "nil": load_config(overrides={**TINY, "name": "nil", "algorithm": "nil", "seed": 4})}
    good, long, bad = expand_jobs(base, seeds=1, settings=["5way-1shot"], runs_dir=tmp_path)
    # The val split of the glyphs has 100 classes: 200-way episodes fail when the run starts.
    bad_config = bad.config.replace(ways=200)
    jobs = [good, long, type(bad)(bad.name, bad_config, bad.run_dir, bad.device)]

    real_execute = executors.execute_job

    def kill_after_first_checkpoint(values, threads=None, env=None, on_start=None):
        """Run the job for real; SIGKILL the 60-iteration one as soon as its step-2 checkpoint exists."""
        if values["name"] != long.name:
            return real_execute(values, threads=threads, env=env, on_start=on_start)

        def watch(process):
            while process.poll() is None and not (long.run_dir / "checkpoints" / "latest.pt").exists():
                time.sleep(0.005)
            process.kill()

        return real_execute(values, threads=threads, env=env,
                            on_start=lambda p: threading.Thread(target=watch, args=(p,), daemon=True).start())

    monkeypatch.setattr(executors, "execute_job", kill_after_first_checkpoint)
    lines = []
    with pytest.raises(JobsFailedError) as failure:
        run_jobs(jobs, max_workers=3, log=lines.append)  # all at once: process start-up dominates
    statuses = {r.name: (r.status, r.error) for r in failure.value.results}
    assert statuses[good.name] == ("trained", None)
    assert statuses[long.name] == ("failed", "killed by SIGKILL")
    assert statuses[bad.name] == ("failed", "ways = 200 is more than the 100 classes of the 'val' split of 'glyphs'")
    assert str(failure.value).startswith("2 of 3 training jobs failed (")
    assert good.final_checkpoint.exists() and not long.final_checkpoint.exists()
    assert any(line.startswith(f"[train 1/3] {good.name}: trained in ") for line in lines)
    assert any(line.startswith(f"[train 2/3] {long.name}: FAILED after ") for line in lines)
    killed_at = executors.newest_checkpoint_step(long)
    assert killed_at is not None and killed_at < 60
    rows_before = [r for r in _rows(long.run_dir / "metrics.csv") if int(r["step"]) <= killed_at]

    # Rerun with the config fixed: the finished job is reused, the killed one resumes, the bad one trains.
    monkeypatch.setattr(executors, "execute_job", real_execute)
    lines.clear()
    results = run_jobs([good, long, bad], log=lines.append)
    assert [r.status for r in results] == ["reused", "resumed", "trained"]
    assert all(job.final_checkpoint.exists() for job in (good, long, bad))
    assert any(f"resuming from step {killed_at}" in line for line in lines)
    rows_after = _rows(long.run_dir / "metrics.csv")
    assert rows_after[:len(rows_before)] == rows_before      # resumed, not restarted: old rows kept as they were
    assert [int(r["step"]) for r in rows_after] == list(range(1, 61))
    assert lines[-1] == "[train] 1 trained, 1 resumed, 1 reused of 3 jobs"


def test_inline_executor_resumes_reuses_and_isolates_a_failure(tmp_path):
    """The same contract in this process, with datasets already loaded (seconds)."""
    from repana.data.glyphs import load_glyph_splits
    from repana.errors import ConfigError
    from repana.meta.train import StopTraining, train

    data = load_glyph_splits(n_train=40, n_val=8, n_test=20)
    base = {"maml": load_config(overrides={**TINY, "name": "maml", "algorithm": "maml", "seed": 0}),
            "anil": load_config(overrides={**TINY, "name": "anil", "algorithm": "anil", "seed": 1, "iterations": 6})}
    maml, anil = expand_jobs(base, seeds=1, settings=["5way-1shot"], runs_dir=tmp_path)

    def stop_after_3(step, metrics):
        if step == 3:
            raise StopTraining
    train(anil.config, anil.run_dir, data=data, show_progress=False, callback=stop_after_3)  # checkpoint at 2
    bad = type(maml)("5way-1shot/bad/seed0", maml.config.replace(ways=10, name="5way-1shot/bad/seed0"),
                     tmp_path / "bad", "cpu")  # the val split has 8 classes
    lines = []
    with pytest.raises(JobsFailedError) as failure:
        run_jobs([maml, anil, bad], executor="inline", data=data, log=lines.append)
    assert [(r.status, r.error) for r in failure.value.results] == [
        ("trained", None), ("resumed", None),
        ("failed", "ways = 10 is more than the 8 classes of the 'val' split of 'glyphs'")]
    assert f"[train 2/3] {anil.name}: start (anil, 6 iterations, resuming from step 2; in this process, cpu)" in lines
    assert [int(r["step"]) for r in _rows(anil.run_dir / "metrics.csv")] == [1, 2, 3, 4, 5, 6]
    results = run_jobs([maml, anil], executor="inline", data=data, log=lines.append)
    assert [r.status for r in results] == ["reused", "reused"]
    with pytest.raises(ConfigError, match="pass data= only with executor 'inline'"):
        run_jobs([maml], executor="local", data=data)


def test_local_executor_runs_rl_jobs_and_resumes_an_interrupted_one(tmp_path):
    """RL jobs run through the same executor as supervised ones (`repana train --config` processes): an
    interrupted run resumes, bitwise equal to the uninterrupted one, and finished runs are reused."""
    import torch

    from repana.meta.checkpoint import load_checkpoint
    from repana.rl.config import RLConfig
    from repana.rl.train import train_rl
    from repana.runs import expand_rl_jobs

    tiny = RLConfig(meta_batch_size=2, fast_batch_size=2, horizon=10, hidden_sizes=[8, 8], dtype="float64",
                    iterations=3, checkpoint_every=1)
    base = {"2d-navigation": {"maml": tiny.replace(algorithm="maml", seed=0),
                              "anil": tiny.replace(algorithm="anil", seed=1)}}
    maml, anil = expand_rl_jobs(base, seeds=1, runs_dir=tmp_path / "runs")
    train_rl(anil.config.replace(iterations=1), anil.run_dir)   # interrupted after 1 of 3 updates
    lines = []
    results = run_jobs([maml, anil], executor="local", max_workers=2, log=lines.append)
    assert [r.status for r in results] == ["trained", "resumed"], lines
    assert any("resuming from step 1" in line for line in lines)
    for job in (maml, anil):
        final = load_checkpoint(job.final_checkpoint, kind="rl")
        assert final.step == 3 and len(final.history) == 3
    straight = train_rl(anil.config, tmp_path / "straight")
    resumed = load_checkpoint(anil.final_checkpoint, kind="rl")
    assert resumed.history[-1]["return_after"] == straight["return_after"]
    uninterrupted = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt", kind="rl").state_dict
    assert all(torch.equal(resumed.state_dict[k], v) for k, v in uninterrupted.items())
    assert [r.status for r in run_jobs([maml, anil], executor="local", log=lines.append)] == ["reused", "reused"]


def test_a_job_whose_run_folder_another_process_holds_is_reported_not_trained_twice(tmp_path):
    import os

    from repana.data.glyphs import load_glyph_splits
    from repana.run_lock import locked_run_folder

    data = load_glyph_splits(n_train=40, n_val=8, n_test=20)
    (job,) = expand_jobs({"maml": load_config(overrides={**TINY, "name": "maml", "algorithm": "maml", "seed": 0})},
                         seeds=1, settings=["5way-1shot"], runs_dir=tmp_path)
    lines = []
    with locked_run_folder(job.run_dir):   # held as by another process (flock: per open file, not per process)
        with pytest.raises(JobsFailedError) as failure:
            run_jobs([job], executor="inline", data=data, log=lines.append)
    ((status, error),) = [(r.status, r.error) for r in failure.value.results]
    assert status == "failed" and f"is in use: process {os.getpid()} is training in it" in error
    assert sorted(p.name for p in job.run_dir.iterdir()) == [".repana.lock"]   # neither job.toml nor metrics
    assert [r.status for r in run_jobs([job], executor="inline", data=data, log=lines.append)] == ["trained"]
