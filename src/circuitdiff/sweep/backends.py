"""Where jobs run: ``local`` (this process, one after another) or ``ray`` (a Ray cluster).

Both hand each finished job's outcome to ``on_done`` as it arrives. With Ray, every
worker writes its job's files itself, so on a multi-node cluster the output folder (and
the models and task files) must be on storage all nodes share; on one machine it just
works. ``--address`` picks the cluster (``auto``, ``ray://head:10001``); without it a
local Ray instance is started and stopped again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from circuitdiff.errors import CircuitDiffError
from circuitdiff.sweep.jobs import RunSettings, run_job

OnDone = Callable[[int, dict[str, Any]], None]
Work = Callable[[Any, str, RunSettings], dict[str, Any]]
"""What runs one job: ``run_job`` for a sweep, ``compare_checkpoint`` for a trajectory."""
BACKENDS = ("local", "ray")


class BackendError(CircuitDiffError):
    """A backend is unknown, not installed, or cannot be reached."""


def check_backend(name: str) -> None:
    """A named error for a backend this module does not have (before any job or model)."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")


def check_settings(backend: str, device: str, dtype: str, device_map: str | None) -> None:
    """Backend, dtype and (for the local backend, whose device is this machine's) device, before any model."""
    from circuitdiff.resources import check_device, parse_dtype

    check_backend(backend)
    parse_dtype(dtype)
    if backend == "local":
        check_device(device, device_map)


def run_local(todo: Sequence[tuple[int, Any]], out: str, settings: RunSettings, on_done: OnDone,
              work: Work = run_job) -> None:
    for index, job in todo:
        on_done(index, work(job, out, settings))


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BackendError("the ray backend needs Ray: pip install 'circuitdiff[ray]'") from None
    return ray


def run_ray(todo: Sequence[tuple[int, Any]], out: str, settings: RunSettings, on_done: OnDone, *,
            address: str | None = None, cpus_per_job: float = 1, gpus_per_job: float = 0,
            num_cpus: int | None = None, work: Work = run_job) -> None:
    """Submit every job at once; Ray schedules them by the CPUs and GPUs each one asks for."""
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if address is None and num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendError(f"cannot start or reach Ray at {address or 'a local instance'}: {first}") from None
    remote = ray.remote(num_cpus=cpus_per_job, num_gpus=gpus_per_job, max_retries=0)(work)
    pending = {remote.remote(job, out, settings): index for index, job in todo}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                index = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayTaskError:
                    raise  # a bug in circuitdiff: keep the worker's traceback
                except ray.exceptions.RayError as exc:  # worker killed (e.g. out of memory), node lost
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    outcome = {"ok": False, "error": f"Ray worker failed: {first}", "seconds": 0.0}
                on_done(index, outcome)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
