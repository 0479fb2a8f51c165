"""The same command with the same seed gives a byte-identical results.json on the same machine.

Two fresh processes with different hash seeds, so that any dependence on set or dict
iteration order of strings, or on state left in the process, would show.
"""

from __future__ import annotations

import subprocess

import pytest

from test_resume_kill import assert_same_outputs, cli_env, compare_cmd, reference_run, workspace


@pytest.mark.slow
def test_same_seed_gives_identical_results(tmp_path_factory: pytest.TempPathFactory) -> None:
    ws, ref = workspace(tmp_path_factory), reference_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("again")
    done = subprocess.run(compare_cmd(ws, out), env=cli_env(PYTHONHASHSEED="2"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_outputs(ref, out)


def test_in_process_rerun_is_identical(tmp_path_factory: pytest.TempPathFactory, tmp_path) -> None:
    """No state carried between runs in one process (global RNGs, caches)."""
    from circuitdiff.compare import CompareOptions, compare
    from circuitdiff.interventions.ablation import Ablation
    from circuitdiff.results import RESULTS_JSON

    ws = workspace(tmp_path_factory)
    options = CompareOptions(ablation=Ablation.RESAMPLE, n_boot=20, circuits=False, seed=7)
    tasks = [str(ws / "task0.jsonl")]
    for name in ("a", "b"):
        compare(str(ws / "teacher"), str(ws / "student"), tasks, options, tmp_path / name, resume=False)
    assert (tmp_path / "a" / RESULTS_JSON).read_bytes() == (tmp_path / "b" / RESULTS_JSON).read_bytes()
