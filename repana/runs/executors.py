"""Run a plan's training jobs on an existing engine: local worker processes or a Ray cluster.

Each job runs as its own ``python -m repana train ...`` process (the command of :meth:`Job.command`),
whose output is appended to ``<run_dir>/train.log``. A separate process per job, rather than a
``ProcessPoolExecutor`` calling :func:`repana.meta.train.train`, keeps a killed job from taking the pool
down with it (a dead pool worker fails every pending future) and gives each job its own thread count
and ``CUDA_VISIBLE_DEVICES``.

- ``executor="local"``: up to one job per usable core (:func:`repana.runtime.usable_cores`), or one per visible GPU
  with ``device="cuda"``; each job gets ``cores // workers`` torch threads, so workers x threads <= cores.
- ``executor="inline"``: one job after another in this process (``repana.meta.train.train``, or
  ``repana.rl.train.train_rl`` for RL jobs), the only executor that takes already loaded datasets
  (``data=``): for tests, debugging and one-core machines.
- ``executor="ray"``: each job is a Ray task (``num_cpus=cpus_per_job``, ``num_gpus=1`` on CUDA) on the
  cluster at ``address`` (None: a local Ray instance, stopped again at the end). Run folders must lie on
  a file system every node sees.

Before anything runs, a job whose final checkpoint exists is ``"reused"``, one whose run folder was
trained with other settings fails with that reason, one whose run folder another process is training in
now (its lock is held, :mod:`repana.run_lock`) fails naming that process, and the others are started with ``--resume``
(``"resumed"`` when they already hold a checkpoint). A failing job does not stop the others: once all
have finished, :class:`JobsFailedError` names each failed job with its error line, and rerunning the same
jobs trains only what is still missing.
"""

from __future__ import annotations

import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from repana.devices import parse_device
from repana.errors import ConfigError, RepanaError
from repana.runtime import usable_cores
from repana.run_lock import RunFolderBusy, check_run_folder_free
from repana.runs.plan import Job, check_same_run, newest_checkpoint_step, write_job_config

EXECUTORS = ("local", "ray", "inline")
LOG_FILE = "train.log"
RAY_INSTALL_HINT = "pip install 'repana[ray]'"


class JobsFailedError(RepanaError):
    """Some jobs of a plan failed; ``results`` holds every job's :class:`JobResult`."""

    def __init__(self, message: str, results: list["JobResult"]):
        super().__init__(message)
        self.results = results


@dataclass
class JobResult:
    """What happened to one job. ``status``: ``"reused"``, ``"trained"``, ``"resumed"`` or ``"failed"``;
    ``wall_s``: seconds the job ran (0 when reused); ``error``: its error line when failed."""

    name: str
    status: str
    run_dir: Path
    wall_s: float = 0.0
    error: str | None = None
    host: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE


# ----- one job, in whatever process the engine gives it -----

def _error_line(output: str, returncode: int) -> str:
    """The line that says why a ``repana train`` process failed."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    prefix = "repana train: error: "
    for line in reversed(lines):
        if line.startswith(prefix):
            return line[len(prefix):]
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return lines[-1] if lines else f"exited with status {returncode} and no output"


def execute_job(job_values: dict, threads: int | None = None, env: dict | None = None,
                program: Sequence[str] | None = None, on_start: Callable | None = None) -> dict:
    """Run one job's ``repana train`` process to its end; never raises for a failed job.

    ``job_values``: :meth:`Job.to_dict`. ``threads``: torch threads of the job (also ``OMP_NUM_THREADS``).
    ``env``: extra environment variables (``CUDA_VISIBLE_DEVICES``). ``program``: how to call repana
    (default ``python -m repana`` of this interpreter). Returns ``{"returncode", "error", "wall_s",
    "host", "final_exists"}``. Module-level so Ray can ship it to its workers.
    """
    job = Job.from_dict(job_values)
    command = job.command(program=program or (sys.executable, "-m", "repana"), threads=threads)
    environment = {**os.environ, **(env or {})}
    if threads:
        environment.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    job.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = job.run_dir / LOG_FILE
    start = time.perf_counter()
    with open(log_path, "ab") as log:
        offset = log.tell()
        log.write(f"$ {' '.join(shlex.quote(c) for c in command)}\n".encode())
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                   stdin=subprocess.DEVNULL)
        if on_start is not None:
            on_start(process)
        returncode = process.wait()
    wall_s = time.perf_counter() - start
    with open(log_path, "rb") as log:
        log.seek(offset)
        output = log.read().decode("utf-8", errors="replace")
    final_exists = job.final_checkpoint.exists()
    error = None
    if returncode != 0:
        error = _error_line(output.split("\n", 1)[1] if "\n" in output else "", returncode)
    elif not final_exists:
        error = f"repana train ended without writing {job.final_checkpoint}"
    return {"returncode": returncode, "error": error, "wall_s": wall_s, "host": socket.gethostname(),
            "final_exists": final_exists}


# ----- devices -----

def _check_device(device: str) -> str:
    """A job's device as text: cpu, cuda or cuda:N (:func:`repana.devices.parse_device`). Only the name is
    checked here: the jobs may run on other nodes (Ray, SLURM), whose GPUs this process does not see."""
    return str(parse_device(device, kinds=("cpu", "cuda")))


def visible_gpus() -> list[str]:
    """Ids to put in ``CUDA_VISIBLE_DEVICES``, one per GPU this process sees (``[]`` without CUDA)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if "CUDA_VISIBLE_DEVICES" in os.environ else [str(i) for i in range(count)]


# ----- the common frame: what to run, logging, the final verdict -----

class _Log:
    """Thread-safe log lines with the job's number: ``[train 2/6] 5way-1shot/anil/seed0: ...``."""

    def __init__(self, log: Callable[[str], None], jobs: Sequence[Job]):
        self.log, self.lock = log, threading.Lock()
        self.number = {job.name: i for i, job in enumerate(jobs, start=1)}
        self.total = len(jobs)

    def __call__(self, job: Job | str, message: str) -> None:
        name = job if isinstance(job, str) else job.name
        with self.lock:
            self.log(f"[train {self.number[name]}/{self.total}] {name}: {message}")


def _prepare(jobs: Sequence[Job], say: _Log) -> tuple[list[JobResult], list[tuple[Job, int | None]]]:
    """Reused / refused jobs as results, and the jobs to run with the step they resume from."""
    done, to_run = [], []
    for job in jobs:
        try:
            check_run_folder_free(job.run_dir)   # trained by another process now: neither rewritten nor run twice
            check_same_run(job)
        except (ConfigError, RunFolderBusy) as error:
            say(job, f"FAILED before starting: {error}")
            done.append(JobResult(job.name, "failed", job.run_dir, error=str(error)))
            continue
        if job.final_checkpoint.exists():
            say(job, f"reusing {job.final_checkpoint}")
            done.append(JobResult(job.name, "reused", job.run_dir))
            continue
        write_job_config(job)
        to_run.append((job, newest_checkpoint_step(job)))
    return done, to_run


def _result(job: Job, resume_step: int | None, outcome: dict, say: _Log) -> JobResult:
    wall = float(outcome.get("wall_s", 0.0))
    if outcome.get("error"):
        say(job, f"FAILED after {wall:.1f} s: {outcome['error']} (log: {job.run_dir / LOG_FILE})")
        return JobResult(job.name, "failed", job.run_dir, wall, outcome["error"], outcome.get("host"))
    status = "resumed" if resume_step is not None else "trained"
    say(job, f"{status} in {wall:.1f} s" + (f" on {outcome['host']}" if outcome.get("host") else ""))
    return JobResult(job.name, status, job.run_dir, wall, None, outcome.get("host"))


def _start_message(job: Job, resume_step: int | None, where: str) -> str:
    resume = f", resuming from step {resume_step}" if resume_step is not None else ""
    return (f"start ({job.config.algorithm}, {job.config.iterations} iterations{resume}; {where})")


def run_jobs(jobs: Sequence[Job], executor: str = "local", max_workers: int | None = None,
             address: str | None = None, device: str | None = None, cpus_per_job: int | None = None,
             log: Callable[[str], None] = print, data: Mapping | None = None,
             show_progress: bool | None = None) -> list[JobResult]:
    """Run every job that is not finished; returns one :class:`JobResult` per job, in the jobs' order.

    ``executor``: ``"local"`` (worker processes on this machine), ``"ray"`` (tasks on the Ray cluster
    at ``address``; None starts a local instance) or ``"inline"`` (in this process, one after another;
    ``data``: ``{"train", "val"}`` datasets every job uses instead of loading its config's;
    ``show_progress``: its training bars). ``max_workers``: jobs at a time (local; default one
    per usable core, or per visible GPU on CUDA). ``device``: overrides every job's device (``cpu``,
    ``cuda``, ``cuda:N``). ``cpus_per_job``: torch threads per job (local default ``cores // workers``;
    Ray default 1, also the task's ``num_cpus``). ``log``: receives one line per job start and finish.
    Raises :class:`JobsFailedError` after all jobs ended when any failed; ConfigError before any job
    starts on bad arguments or an engine that cannot start.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if data is not None and executor != "inline":
        raise ConfigError(f"executor {executor!r} runs each job in its own process, which loads its data from "
                          "the job's config: pass data= only with executor 'inline'")
    if max_workers is not None and max_workers < 1:
        raise ConfigError(f"max_workers = {max_workers} must be at least 1")
    if cpus_per_job is not None and cpus_per_job < 1:
        raise ConfigError(f"cpus_per_job = {cpus_per_job} must be at least 1")
    # Absolute run folders: a Ray worker (or a job's process) need not share this process's working folder.
    jobs = [replace(job, run_dir=job.run_dir.resolve(),
                    device=_check_device(device if device is not None else job.device)) for job in jobs]
    on_gpu = [job.name for job in jobs if job.kind == "rl" and job.device != "cpu"]
    if on_gpu:
        raise ConfigError(f"RL jobs train on the CPU (MuJoCo / batched torch sampling): {', '.join(on_gpu)} asked "
                          "for a GPU; use --device cpu")
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ConfigError(f"a job name is given twice: {sorted({n for n in names if names.count(n) > 1})}")
    if not jobs:
        return []
    engine = _ray_engine(address) if executor == "ray" else None  # fails before any job starts
    say = _Log(log, jobs)
    try:
        done, to_run = _prepare(jobs, say)
        if executor == "local":
            ran = _run_local(to_run, max_workers, cpus_per_job, say)
        elif executor == "inline":
            ran = _run_inline(to_run, cpus_per_job, data, show_progress, say)
        else:
            ran = engine.run(to_run, cpus_per_job or 1, say)
    finally:
        if engine is not None:
            engine.close()
    by_name = {result.name: result for result in done + ran}
    results = [by_name[name] for name in names]
    failed = [r for r in results if not r.ok]
    counts = {s: sum(r.status == s for r in results) for s in ("trained", "resumed", "reused", "failed")}
    log("[train] " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" of {len(results)} jobs")
    if failed:
        details = "; ".join(f"{r.name}: {r.error}" for r in failed)
        raise JobsFailedError(f"{len(failed)} of {len(results)} training jobs failed ({details}); the other "
                              "runs are kept: fix the cause and rerun to train only what is missing "
                              f"(each job's output is in <run folder>/{LOG_FILE})", results)
    return results


# ----- in this process -----

def _run_inline(to_run: list[tuple[Job, int | None]], threads: int | None, data: Mapping | None,
                show_progress: bool | None, say: _Log) -> list[JobResult]:
    results = []
    for job, resume_step in to_run:
        say(job, _start_message(job, resume_step, f"in this process, {job.device}"))
        start = time.perf_counter()
        try:
            config = job.config.replace(threads=threads) if threads else job.config
            job.run_kind.train(config, job.run_dir, resume=True, device=job.device,
                               data=data if job.kind == "supervised" else None, show_progress=show_progress)
            error = None if job.final_checkpoint.exists() else f"train ended without writing {job.final_checkpoint}"
        except Exception as exception:  # one job's failure must not stop the others
            lines = str(exception).strip().splitlines()
            error = lines[0] if lines else ""
            if not isinstance(exception, RepanaError):
                error = f"{type(exception).__name__}: {error}".rstrip(": ")
        outcome = {"error": error, "wall_s": time.perf_counter() - start}
        results.append(_result(job, resume_step, outcome, say))
    return results


# ----- local worker processes -----

def _run_local(to_run: list[tuple[Job, int | None]], max_workers: int | None, cpus_per_job: int | None,
               say: _Log) -> list[JobResult]:
    if not to_run:
        return []
    cores = usable_cores()
    spread = any(job.device == "cuda" for job, _ in to_run)
    gpus: list[str] = []
    if any(job.device.startswith("cuda") for job, _ in to_run):
        gpus = visible_gpus()
        if not gpus:
            raise ConfigError("device cuda: no CUDA GPU is visible here; use --device cpu")
    default_workers = len(gpus) if spread else (1 if gpus else cores)
    workers = max(1, min(len(to_run), max_workers or default_workers))
    threads = cpus_per_job or max(1, cores // workers)
    # One slot per worker; on CUDA each slot is pinned to a GPU, round robin over the visible ones.
    slots: queue.Queue = queue.Queue()
    for i in range(workers):
        slots.put(gpus[i % len(gpus)] if spread else None)
    live: set[subprocess.Popen] = set()
    live_lock = threading.Lock()

    def track(process: subprocess.Popen) -> None:
        with live_lock:
            live.add(process)

    def one(job: Job, resume_step: int | None) -> JobResult:
        gpu = slots.get()
        try:
            env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {}
            # a resumed run keeps the thread count its checkpoint records (bit-identical resume)
            job_threads = threads if resume_step is None else None
            where = (f"{job_threads} thread{'s' if job_threads > 1 else ''}" if job_threads
                     else "its recorded threads") + f", {job.device}" + (f" (GPU {gpu})" if gpu else "")
            say(job, _start_message(job, resume_step, where))
            try:
                outcome = execute_job(job.to_dict(), threads=job_threads, env=env, on_start=track)
            except OSError as error:  # the process could not even start
                outcome = {"error": f"could not start repana train: {error}", "wall_s": 0.0}
            return _result(job, resume_step, outcome, say)
        finally:
            slots.put(gpu)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="repana-job")
    futures = []
    try:
        futures = [pool.submit(one, job, step) for job, step in to_run]
        results = [future.result() for future in as_completed(futures)]
    except BaseException:
        for future in futures:
            future.cancel()
        with live_lock:
            for process in live:
                if process.poll() is None:
                    process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


# ----- Ray -----

def _ray_address_reachable(address: str) -> None:
    """ConfigError naming ``address`` when nothing listens at its host:port (checked in <= 5 s)."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as error:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({error.strerror or error}); "
                          "start one with `ray start --head` or give its address") from None


class _RayEngine:
    def __init__(self, ray, started: bool, address: str | None):
        self.ray, self.started, self.address = ray, started, address

    def run(self, to_run: list[tuple[Job, int | None]], cpus: int, say: _Log) -> list[JobResult]:
        ray = self.ray
        if not to_run:
            return []
        needs_gpu = any(job.device.startswith("cuda") for job, _ in to_run)
        if needs_gpu and not ray.cluster_resources().get("GPU", 0):
            raise ConfigError(f"device cuda: the Ray cluster at {self.address or 'this machine'} has no GPU; "
                              "use --device cpu or add GPU nodes")
        remote_cpu = ray.remote(num_cpus=cpus, num_gpus=0, max_retries=1)(execute_job)
        remote_gpu = ray.remote(num_cpus=cpus, num_gpus=1, max_retries=1)(execute_job)
        pending = {}
        for job, resume_step in to_run:
            # Ray gives a GPU task one GPU, visible as cuda:0: "cuda:N" would name a GPU it cannot see.
            task_job = replace(job, device="cuda") if job.device.startswith("cuda") else job
            task = remote_gpu if needs_gpu and job.device.startswith("cuda") else remote_cpu
            ref = task.remote(task_job.to_dict(), cpus if resume_step is None else None)  # see _run_local
            pending[ref] = (job, resume_step)
            say(job, _start_message(job, resume_step, f"Ray task, {cpus} CPU" + (", 1 GPU" if task is remote_gpu else "")))
        results = []
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    job, resume_step = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as error:  # the task itself died (worker killed, node lost)
                        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                        outcome = {"error": f"Ray task failed: {first}", "wall_s": 0.0}
                    results.append(_result(job, resume_step, outcome, say))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return results

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"executor ray needs Ray, which is not installed here: {RAY_INSTALL_HINT}") from None
    return ray


def _ray_engine(address: str | None) -> _RayEngine:
    """Connect to (or start) Ray; ConfigError naming the problem when it cannot."""
    ray = _import_ray()
    if ray.is_initialized():
        return _RayEngine(ray, started=False, address=address)
    if address:
        _ray_address_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except Exception as error:  # ConnectionError, RuntimeError, ValueError depending on the Ray version
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        where = f"at {address}" if address else "on this machine"
        raise ConfigError(f"--executor ray: cannot start or reach a Ray cluster {where} ({first})") from None
    return _RayEngine(ray, started=True, address=address)
