"""The preflight: what a config asks for against what a cluster has, on values and on a live cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.support.harness import declared_memory, deployments
from deployments.cuda_stack import Line
from serve_app.preflight import (
    Cluster,
    Need,
    auth_problems,
    check,
    gpu_problems,
    gpu_report,
    needs,
    node_report,
    open_to_network,
    placement_problems,
)
from tests.conftest import ROOT, Service, local_config

GIB = 2**30
pytestmark = pytest.mark.filterwarnings("ignore")


def prod_app() -> dict:
    return yaml.safe_load((ROOT / "configs" / "prod.yaml").read_text())["applications"][0]


def test_needs_count_min_replicas_and_serve_defaults() -> None:
    by_name = {n.deployment: n for n in needs(prod_app())}
    assert by_name["Transcriber"].replicas == 4
    assert by_name["Transcriber"].per_replica == {"CPU": 2.0, "GPU": 0.25, "memory": 8 * GIB}
    assert needs({"deployments": [{"name": "X"}]}) == [Need("X", 1, {"CPU": 1.0, "GPU": 0.0, "memory": 0.0})]


def test_a_cluster_without_gpus_is_told_what_is_missing() -> None:
    problems = placement_problems(needs(prod_app()), [{"CPU": 64, "memory": 256 * GIB}])
    assert any(p.startswith("GPU: the config needs 1.2 ") and "Transcriber 4 × 0.25" in p and "Diarizer 1 × 0.1" in p
               for p in problems)
    assert any(p.startswith("Transcriber: no node has room") for p in problems)


def test_four_whisper_replicas_pack_onto_one_gpu_node() -> None:
    wanted = [Need("Transcriber", 4, {"CPU": 2, "GPU": 0.25, "memory": 8 * GIB})]
    assert placement_problems(wanted, [{"CPU": 16, "GPU": 1, "memory": 45 * GIB}]) == []
    too_small = placement_problems(wanted, [{"CPU": 16, "GPU": 1, "memory": 20 * GIB}])
    assert too_small == ["memory: the config needs 32.0 GiB (Transcriber 4 × 8.0 GiB); the cluster has 20.0 GiB",
                         "Transcriber: no node has room for a replica (CPU 2, GPU 0.25, memory 8.0 GiB)"]


def test_totals_can_fit_while_no_single_node_can_hold_a_replica() -> None:
    wanted = [Need("Transcriber", 1, {"CPU": 1, "GPU": 1, "memory": 0})]
    problems = placement_problems(wanted, [{"CPU": 4, "GPU": 0.5}, {"CPU": 4, "GPU": 0.5}])
    assert problems == ["Transcriber: no node has room for a replica (CPU 1, GPU 1)"]


def test_bad_args_and_missing_files_are_reported(tmp_path) -> None:
    config = {"applications": [local_config()["applications"][0]]}
    config["applications"][0]["args"]["transcriber"]["models"]["mine"] = str(tmp_path / "absent-model")
    config["applications"][0]["args"]["downloader"]["cookies_file"] = str(tmp_path / "cookies.txt")
    problems = check(config, None)
    assert f"transcriber.models.mine: {tmp_path / 'absent-model'} does not exist on this node" in problems
    assert any(p.startswith("downloader.cookies_file") for p in problems)
    config["applications"][0]["args"]["embedder"]["chunk_word"] = 3
    assert any(p.startswith("args.embedder.chunk_word") for p in check(config, None))


def test_a_diarizer_engine_that_does_not_import_is_reported(tmp_path) -> None:
    config = {"applications": [local_config()["applications"][0]]}
    diarizer = config["applications"][0]["args"]["diarizer"]
    assert check(config, None) == []
    diarizer.update(engine="deployments.diarization:PyannoteEngine", model_dir=str(tmp_path / "absent"))
    assert check(config, None) == ["diarizer.engine: deployments.diarization has no 'PyannoteEngine'",
                                   f"diarizer.model_dir: {tmp_path / 'absent'} does not exist on this node"]
    diarizer["engine"] = "not_installed_here:Engine"
    assert check(config, None)[0].startswith("diarizer.engine: not_installed_here does not import")


def test_a_node_without_the_token_or_the_keys_file_is_named(tmp_path, monkeypatch) -> None:
    home = tmp_path / "home"
    assert "RAY_AUTH_MODE=unset" in auth_problems({}, home)[0]
    assert "no token (RAY_AUTH_TOKEN unset" in auth_problems({"RAY_AUTH_MODE": "token"}, home)[0]
    assert auth_problems({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "abc"}, home) == []
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("abc")
    assert auth_problems({"RAY_AUTH_MODE": "token"}, home) == []
    keys = tmp_path / "api-keys"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert node_report({"ingress.api_keys_file": str(keys)}, guarded=False) == [
        f"ingress.api_keys_file: {keys} does not exist on this node"]
    keys.write_text("key\n")
    assert node_report({"ingress.api_keys_file": str(keys)}, guarded=False) == []
    assert node_report({}, guarded=True)[0].startswith("Ray token authentication is off")


def test_prod_listens_on_the_network_and_local_does_not() -> None:
    assert open_to_network(yaml.safe_load((ROOT / "configs" / "prod.yaml").read_text()))
    assert not open_to_network(local_config())


def test_each_nodes_findings_are_reported_under_its_name() -> None:
    config = {"applications": [local_config()["applications"][0]]}
    cluster = Cluster([{"CPU": 8, "memory": 64 * GIB}], {"10.0.0.7": ["ingress.api_keys_file: /x does not exist"]})
    assert check(config, cluster) == ["node 10.0.0.7: ingress.api_keys_file: /x does not exist"]


def test_gpu_lines_become_a_report_and_their_failures_problems() -> None:
    lines = {"10.0.0.8": [Line("ctranslate2 sees the device", True, "1 device(s)"),
                          Line("a tiny encode works", False, "CudaStackBroken: libcublas.so.12 is not found")]}
    assert gpu_report(lines) == ("GPU node 10.0.0.8:\n  ok   ctranslate2 sees the device: 1 device(s)\n"
                                 "  FAIL a tiny encode works: CudaStackBroken: libcublas.so.12 is not found")
    assert gpu_problems(lines) == ["node 10.0.0.8: GPU check 'a tiny encode works' failed: "
                                   "CudaStackBroken: libcublas.so.12 is not found"]
    assert gpu_problems({}) == ["GPU checks: the cluster has no GPU node to run them on"]
    assert gpu_problems(None) == []


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serve_app.cli", "check", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={"RAY_AUTH_MODE": "disabled", "PATH": "/usr/bin:/bin"})


@pytest.mark.serve
def test_check_against_the_running_cluster(service: Service) -> None:
    prod = run_check("configs/prod.yaml", "--address", service.ray_address)
    assert prod.returncode == 1, prod.stdout + prod.stderr
    assert "GPU: the config needs" in prod.stdout and "the cluster has 0" in prod.stdout
    local = run_check("configs/local.yaml", "--address", service.ray_address)
    assert local.returncode == 0, local.stdout + local.stderr
    assert "ok: nothing is missing" in local.stdout and "(1 nodes)" in local.stdout
    assert "Ray token authentication is off" in prod.stdout, "prod listens on 0.0.0.0: every node needs the token"
    assert "api_keys_file: /mnt/secrets/transcribe-serve/api-keys does not exist on this node" in prod.stdout
    gpu = run_check("configs/local.yaml", "--address", service.ray_address, "--gpu")
    assert gpu.returncode == 1 and "the cluster has no GPU node" in gpu.stdout, gpu.stdout + gpu.stderr


@pytest.mark.serve
def test_the_test_cluster_offers_the_memory_its_config_asks_for_whatever_the_machine_has_free(
        service: Service, tmp_path: Path) -> None:
    """Sized from free memory, a head started beside another test's app could not place every replica (CI)."""
    config = local_config()
    declared = declared_memory(config)
    more = deployments(config)["Transcriber"]
    more["ray_actor_options"]["memory"] += GIB
    (tmp_path / "more.yaml").write_text(yaml.safe_dump(config))
    result = run_check(str(tmp_path / "more.yaml"), "--address", service.ray_address)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"memory: the config needs {(declared + GIB) / GIB:.1f} GiB" in result.stdout
    assert f"the cluster has {declared / GIB:.1f} GiB" in result.stdout


def test_the_gpu_checks_run_offline_on_this_machine_and_name_each_failure() -> None:
    result = run_check("configs/local.yaml", "--offline", "--gpu")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "(this machine):\n  FAIL ctranslate2 sees the device" in result.stdout
    assert "GPU check 'torch sees CUDA' failed" in result.stdout
