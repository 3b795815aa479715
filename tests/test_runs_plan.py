"""repana.runs without training: seeds and names of a plan, plan files, reuse checks, bad input, GPU slots."""

import json
import shlex

import pytest

from repana.errors import ConfigError, InputError
from repana.meta.config import TrainConfig, load_config, to_toml
from repana.runs import (SEED_STRIDE, Job, JobsFailedError, expand_jobs, parse_setting, read_plan, run_jobs,
                         seed_for, write_plan)
from repana.runs import executors

TINY = {"dataset": "glyphs", "hidden": 8, "meta_batch_size": 2, "queries_train": 2, "queries_test": 2,
        "iterations": 4, "val_every": 0, "checkpoint_every": 2}


def base_configs(seeds=(("maml", "maml", 0), ("anil", "anil", 1), ("multiclass", "pretrain", 2))):
    return {name: load_config(overrides={**TINY, "name": name, "algorithm": algorithm, "seed": seed})
            for name, algorithm, seed in seeds}


def test_expand_jobs_names_folders_and_seeds(tmp_path):
    jobs = expand_jobs(base_configs(), seeds=3, settings=["5way-1shot", "omniglot-20way-5shot"], runs_dir=tmp_path)
    assert len(jobs) == 2 * 3 * 3
    assert jobs[0].name == "5way-1shot/maml/seed0" and jobs[-1].name == "20way-5shot/multiclass/seed2"
    assert jobs[4].run_dir == tmp_path / "5way-1shot" / "anil" / "seed1"
    assert all(job.config.name == job.name and job.device == "cpu" for job in jobs)
    assert {(j.config.ways, j.config.shots) for j in jobs if j.name.startswith("20way-5shot")} == {(20, 5)}
    # Seed 0 keeps each network's own seed (today's runs); every network and seed differs within a setting.
    first = {j.name.split("/")[1]: j.config.seed for j in jobs if j.name.endswith("seed0")}
    assert first == {"maml": 0, "anil": 1, "multiclass": 2}
    one_setting = [j.config.seed for j in jobs if j.name.startswith("5way-1shot")]
    assert sorted(one_setting) == [0, 1, 2, 1000, 1001, 1002, 2000, 2001, 2002]
    assert seed_for(4, 2) == 4 + 2 * SEED_STRIDE
    # Everything else of the base config is kept.
    assert jobs[0].config.replace(name="maml", seed=0) == base_configs()["maml"]


def test_expand_jobs_refuses_bad_input():
    with pytest.raises(ConfigError, match=r"^seeds = 0: train at least 1 seed per network \(the paper uses 3\)$"):
        expand_jobs(base_configs(), seeds=0, settings=["5way-1shot"])
    with pytest.raises(ConfigError, match=r"^unknown setting '7way-1shot' for glyphs: choose from 5way-1shot, "
                                          r"5way-5shot, 20way-1shot, 20way-5shot$"):
        expand_jobs(base_configs(), seeds=1, settings=["7way-1shot"])
    with pytest.raises(ConfigError, match="would share seeds"):
        expand_jobs(base_configs((("maml", "maml", 0), ("anil", "anil", 1000))), seeds=2, settings=["5way-1shot"])
    with pytest.raises(ConfigError, match="would share seeds"):
        expand_jobs(base_configs((("maml", "maml", 3), ("anil", "anil", 3))), seeds=1, settings=["5way-1shot"])
    with pytest.raises(ConfigError, match="given twice"):
        expand_jobs(base_configs(), seeds=1, settings=["5way-1shot", "omniglot-5way-1shot"])


def test_parse_setting_per_dataset():
    assert parse_setting("5way-1shot", "miniimagenet") == ("5way-1shot", 5, 1)
    assert parse_setting("Omniglot-20way-1shot", "glyphs") == ("20way-1shot", 20, 1)
    with pytest.raises(ConfigError, match="unknown setting '20way-1shot' for miniimagenet: choose from "
                                          "5way-1shot, 5way-5shot"):
        parse_setting("20way-1shot", "miniimagenet")
    with pytest.raises(ConfigError, match="unknown setting 'miniimagenet-5way-1shot' for omniglot"):
        parse_setting("miniimagenet-5way-1shot", "omniglot")


def test_job_command_is_what_repana_train_accepts(tmp_path):
    from repana.cli import build_parser
    from repana.cli.train import resolve_config

    job = expand_jobs(base_configs(), seeds=1, settings=["5way-1shot"], runs_dir=tmp_path, device="cuda")[1]
    executors.write_job_config(job)
    args = build_parser().parse_args(job.command(threads=2)[1:])  # [0] is the program
    assert (args.command, args.out, args.resume, args.device) == ("train", job.run_dir, True, "cuda")
    assert resolve_config(args) == job.config.replace(threads=2)


def test_write_and_read_plan(tmp_path):
    jobs = expand_jobs(base_configs(), seeds=2, settings=["5way-1shot"], runs_dir=tmp_path / "runs")
    path = write_plan(jobs, tmp_path / "plan", cpus_per_job=2)
    assert path == tmp_path / "plan" / "plan.jsonl"
    again = read_plan(tmp_path / "plan")
    assert [(j.name, j.config, j.run_dir, j.device) for j in again] == [
        (j.name, j.config, j.run_dir.resolve(), j.device) for j in jobs]
    first = json.loads(path.read_text().splitlines()[0])
    assert first["command"].startswith("repana train --config ") and first["command"].endswith("--resume --device cpu")
    # Each job's config file (in the plan folder, so run folders may be deleted) holds exactly its config.
    assert first["config_path"] == str(tmp_path / "plan" / "configs" / "5way-1shot" / "maml" / "seed0.toml")
    assert all(load_config(path=j.plan_config_path(tmp_path / "plan")) == j.config for j in again)
    assert not any(j.run_dir.exists() for j in again)
    commands = [line for line in (tmp_path / "plan" / "commands.sh").read_text().splitlines()
                if not line.startswith("#")]
    assert len(commands) == 6
    test, _, command = commands[3].partition(" || ")
    assert shlex.split(test) == ["[", "-e", str(again[3].final_checkpoint), "]"]
    assert shlex.split(command) == again[3].command(config_path=again[3].plan_config_path(tmp_path / "plan"))
    slurm = (tmp_path / "plan" / "slurm.sh").read_text()
    assert "#SBATCH --array=0-5\n" in slurm and "#SBATCH --cpus-per-task=2\n" in slurm and "gres" not in slurm
    gpu_plan = write_plan([Job(j.name, j.config, j.run_dir, "cuda") for j in jobs], tmp_path / "gpu")
    assert "#SBATCH --gres=gpu:1\n" in (gpu_plan.parent / "slurm.sh").read_text()
    with pytest.raises(ConfigError, match="does not exist"):
        read_plan(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"name": "x"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: a job lacks the key 'config'"):
        read_plan(tmp_path / "bad.jsonl")


def _finished(job: Job, saved: TrainConfig | None = None) -> None:
    """Fake a finished run folder: config.toml and the final checkpoint file."""
    job.final_checkpoint.parent.mkdir(parents=True)
    (job.run_dir / "config.toml").write_text(to_toml(saved or job.config))
    job.final_checkpoint.write_bytes(b"")


def test_finished_runs_are_reused_and_other_settings_refused(tmp_path):
    jobs = expand_jobs(base_configs(), seeds=1, settings=["5way-1shot"], runs_dir=tmp_path)
    _finished(jobs[0])
    _finished(jobs[1], saved=jobs[1].config.replace(threads=3))          # a resumable key may differ
    _finished(jobs[2], saved=jobs[2].config.replace(outer_lr=0.01))      # trained with other settings
    lines = []
    with pytest.raises(JobsFailedError) as failure:
        run_jobs(jobs, log=lines.append)
    assert [r.status for r in failure.value.results] == ["reused", "reused", "failed"]
    assert "outer_lr = 0.001 (run has 0.01)" in failure.value.results[2].error
    assert str(failure.value).startswith("1 of 3 training jobs failed (5way-1shot/multiclass/seed0: ")
    assert "\n" not in str(failure.value)
    assert lines[0] == f"[train 1/3] 5way-1shot/maml/seed0: reusing {jobs[0].final_checkpoint}"
    assert lines[-1] == "[train] 2 reused, 1 failed of 3 jobs"
    assert run_jobs(jobs[:2], log=lines.append)[1].status == "reused"


def test_executor_errors_are_one_clear_line(tmp_path, monkeypatch):
    jobs = expand_jobs(base_configs(), seeds=1, settings=["5way-1shot"], runs_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^executor 'slurm' is not one of local, ray, inline$"):
        run_jobs(jobs, executor="slurm")
    with pytest.raises(InputError, match=r"^device 'gpu' is not a device: use cpu, cuda, cuda:N$"):
        run_jobs(jobs, device="gpu")
    # a job's device is only named here (its node may have GPUs this one lacks), and jobs train on cpu or cuda
    with pytest.raises(InputError, match=r"^device 'mps' is not a device here: use cpu, cuda, cuda:N$"):
        run_jobs(jobs, device="mps")

    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError("No module named 'ray'", name="ray")
        return real_import(name, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "__import__", no_ray)
        with pytest.raises(ConfigError, match=r"^executor ray needs Ray, which is not installed here: "
                                              r"pip install 'repana\[ray\]'$"):
            run_jobs(jobs, executor="ray")

    class NoCluster:  # stands in for the ray module: nothing is initialised, init must not be reached
        @staticmethod
        def is_initialized():
            return False

        @staticmethod
        def init(**kwargs):
            raise AssertionError("ray.init called although the address does not answer")

    monkeypatch.setattr(executors, "_import_ray", lambda: NoCluster)
    with pytest.raises(ConfigError, match=r"^--address 127\.0\.0\.1:9: no Ray cluster answers there \(.+\); "
                                          r"start one with `ray start --head` or give its address$"):
        run_jobs(jobs, executor="ray", address="127.0.0.1:9")
    with pytest.raises(ConfigError, match=r"^--address 'nowhere' is not HOST:PORT"):
        run_jobs(jobs, executor="ray", address="nowhere")
    assert not any(job.run_dir.exists() for job in jobs)  # nothing started


def test_local_executor_spreads_jobs_over_gpus_and_splits_cores(tmp_path, monkeypatch):
    jobs = expand_jobs(base_configs(), seeds=2, settings=["5way-1shot"], runs_dir=tmp_path, device="cuda")
    calls = []

    def fake_job(values, threads=None, env=None, on_start=None):
        calls.append((values["name"], values["device"], threads, env))
        return {"returncode": 0, "error": None, "wall_s": 0.01, "host": "here", "final_exists": True}

    monkeypatch.setattr(executors, "execute_job", fake_job)
    monkeypatch.setattr(executors, "visible_gpus", lambda: ["3", "5"])
    monkeypatch.setattr(executors, "usable_cores", lambda: 16)
    results = run_jobs(jobs, log=lambda line: None)
    assert [r.status for r in results] == ["trained"] * 6
    assert {device for _, device, _, _ in calls} == {"cuda"}
    assert {threads for _, _, threads, _ in calls} == {8}                 # 2 workers x 8 threads = 16 cores
    assert sorted(env["CUDA_VISIBLE_DEVICES"] for *_, env in calls) == ["3", "3", "3", "5", "5", "5"]
    calls.clear()
    run_jobs(jobs, device="cpu", max_workers=4, log=lambda line: None)   # --device reaches every job
    assert {(device, threads, tuple(env)) for _, device, threads, env in calls} == {("cpu", 4, ())}
    monkeypatch.setattr(executors, "visible_gpus", lambda: [])
    with pytest.raises(ConfigError, match=r"^device cuda: no CUDA GPU is visible here; use --device cpu$"):
        run_jobs(jobs, log=lambda line: None)


def test_error_line_of_a_failed_process():
    output = "Traceback (most recent call last):\n  File x\nrepana train: error: ways = 200 is too many\n"
    assert executors._error_line(output, 1) == "ways = 200 is too many"
    assert executors._error_line("Traceback ...\nRuntimeError: boom\n", 1) == "RuntimeError: boom"
    assert executors._error_line("step 3\n", -9) == "killed by SIGKILL"
    assert executors._error_line("", 2) == "exited with status 2 and no output"


# ----- RL jobs (repana.rl): the same Job, plan files and command -----

def rl_base_configs():
    from repana.rl.config import RLConfig

    tiny = RLConfig(meta_batch_size=2, fast_batch_size=2, horizon=10, hidden_sizes=[8, 8], dtype="float64",
                    iterations=3, checkpoint_every=1)
    return {"2d-navigation": {"maml": tiny.replace(algorithm="maml", seed=0),
                              "anil": tiny.replace(algorithm="anil", seed=1)}}


def test_rl_jobs_names_seeds_and_plan_files(tmp_path):
    from repana.rl.config import RLConfig
    from repana.runs import expand_rl_jobs

    jobs = expand_rl_jobs(rl_base_configs(), seeds=2, runs_dir=tmp_path / "runs")
    assert [j.name for j in jobs] == ["rl-2d-navigation/maml/seed0", "rl-2d-navigation/maml/seed1",
                                      "rl-2d-navigation/anil/seed0", "rl-2d-navigation/anil/seed1"]
    assert [j.config.seed for j in jobs] == [0, 1000, 1, 1001]   # SEED_STRIDE, as for supervised jobs
    assert {j.kind for j in jobs} == {"rl"} and {j.device for j in jobs} == {"cpu"}
    assert jobs[1].run_dir == tmp_path / "runs" / "rl-2d-navigation" / "maml" / "seed1"
    assert jobs[1].final_checkpoint == jobs[1].run_dir / "checkpoints" / "step_000003.pt"
    assert jobs[0].command(threads=2)[-2:] == ["--set", "threads=2"]
    path = write_plan(jobs, tmp_path / "plan")
    again = read_plan(path)
    assert [(j.name, j.kind, j.config) for j in again] == [(j.name, j.kind, j.config) for j in jobs]
    assert isinstance(again[0].config, RLConfig)
    assert json.loads(path.read_text().splitlines()[0])["kind"] == "rl"
    config_file = again[2].plan_config_path(tmp_path / "plan")
    from repana.rl.config import resolve_config

    assert resolve_config(str(config_file)) == jobs[2].config
    commands = [line for line in (tmp_path / "plan" / "commands.sh").read_text().splitlines() if line[:1] != "#"]
    assert len(commands) == 4 and commands[0].startswith(f"[ -e {again[0].final_checkpoint} ] || repana train --config ")
    with pytest.raises(ConfigError, match="would share seeds"):
        expand_rl_jobs({"2d-navigation": {"maml": jobs[0].config, "anil": jobs[0].config.replace(seed=1000)}}, 1)
    with pytest.raises(ConfigError, match="trains on '2d-navigation', not 'halfcheetah-dir'"):
        expand_rl_jobs({"halfcheetah-dir": rl_base_configs()["2d-navigation"]}, 1)


def test_rl_job_command_goes_through_repana_train(tmp_path, capsys):
    """The plan's command line trains the RL job (repana train dispatches on the config's kind), writes the
    final step file the plan tests for, and a rerun is reused; a run with other settings is refused."""
    import subprocess

    from repana.cli import main
    from repana.runs import expand_rl_jobs

    job = expand_rl_jobs(rl_base_configs(), seeds=1, runs_dir=tmp_path)[1]
    executors.write_job_config(job)
    assert main(job.command(threads=1)[1:]) == 0
    assert "anil 2d-navigation: 3 meta-updates" in capsys.readouterr().out
    assert job.final_checkpoint.exists() and (job.run_dir / "checkpoints" / "latest.pt").exists()
    lines = []
    assert run_jobs([job], log=lines.append)[0].status == "reused"
    saved = job.run_dir / "config.toml"   # the run folder's config with the former RL key names: the same run
    saved.write_text(saved.read_text().replace("inner_lr =", "fast_lr =").replace("threads =", "torch_threads ="))
    assert "fast_lr = 0.1" in saved.read_text() and run_jobs([job], log=lines.append)[0].status == "reused"
    changed = Job(job.name, job.config.replace(inner_lr=0.2), job.run_dir)
    with pytest.raises(JobsFailedError, match=r"inner_lr = 0.2 \(run has 0.1\)"):
        run_jobs([changed], log=lines.append)
    with pytest.raises(ConfigError, match="RL jobs train on the CPU"):
        run_jobs([job], device="cuda", log=lines.append)
    # the shell line of the plan skips the finished job
    shell = job.shell_command()
    assert subprocess.run(["bash", "-c", shell.split(" || ")[0]]).returncode == 0


def test_expand_jobs_refuses_more_seeds_than_the_limit():
    with pytest.raises(ConfigError, match=r"^seeds = 100000 is above the limit of 100 per network"):
        expand_jobs(base_configs(), seeds=100_000, settings=["5way-1shot"])


def test_a_reproduction_plan_carries_threads_and_checks_its_data(tmp_path):
    from repana.analysis.reproduce import Reproduction

    path = Reproduction(out=tmp_path / "out", only=["freezing"], threads=3).write_plan(tmp_path / "plan")
    jobs = read_plan(path)
    assert jobs and {job.config.threads for job in jobs} == {3}
    assert "#SBATCH --cpus-per-task=3" in (tmp_path / "plan" / "slurm.sh").read_text()
    rl = read_plan(Reproduction(out=tmp_path / "out", rl_envs=["2d-navigation"], threads=2).write_plan(tmp_path / "rl-plan"))
    assert {job.config.threads for job in rl} == {2}
    from repana.errors import DataError

    with pytest.raises(DataError, match="Omniglot not found under"):
        Reproduction(dataset="omniglot", data_root=tmp_path / "MISSING", out=tmp_path / "out", only=["freezing"]).write_plan(tmp_path / "missing-plan")
    assert not (tmp_path / "missing-plan").exists()


def test_a_run_written_before_a_setting_existed_has_its_default(tmp_path):
    """config.toml of a run lacking a key (bn_inner_loop) reads as the key's default, not as a difference."""
    from repana.meta.config import load_config, to_toml
    from repana.runs.plan import Job, saved_config_differences

    config = load_config(preset="quick", overrides={"bn_inner_loop": True})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    text = "\n".join(line for line in to_toml(config).splitlines() if not line.startswith("bn_inner_loop"))
    (run_dir / "config.toml").write_text(text + "\n")
    assert saved_config_differences(Job("5way-1shot/maml/seed0", config, run_dir)) == []
    other = config.replace(bn_inner_loop=False)
    assert saved_config_differences(Job("5way-1shot/maml/seed0", other, run_dir)) == [
        "bn_inner_loop = False (run has True)"]
