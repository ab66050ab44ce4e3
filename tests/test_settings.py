"""Configuration: the shipped YAML files validate, and a bad key fails with its name."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from benchmarks.support.harness import deployments
from deployments.settings import TranscriberSettings
from serve_app.app import build_app
from serve_app.settings import AppSettings
from tests.conftest import ROOT, local_config

DEPLOYMENTS = {"Ingress", "Downloader", "Transcriber", "Embedder", "JobRunner", "Diarizer"}


@pytest.mark.parametrize("name", ["local.yaml", "prod.yaml"])
def test_config_files_validate_and_name_every_deployment(name: str) -> None:
    config = yaml.safe_load((ROOT / "configs" / name).read_text())
    app = config["applications"][0]
    assert app["import_path"] == "serve_app.app:build_app"
    AppSettings.model_validate(app["args"])
    declared = deployments(config)
    assert set(declared) == DEPLOYMENTS
    for deployment in declared.values():
        assert deployment["ray_actor_options"]["memory"] > 0, deployment["name"]


def test_prod_shares_each_gpu_between_four_whisper_replicas() -> None:
    config = yaml.safe_load((ROOT / "configs" / "prod.yaml").read_text())
    app, declared = config["applications"][0], deployments(config)
    assert declared["Transcriber"]["ray_actor_options"]["num_gpus"] == 0.25
    assert 0 < declared["Embedder"]["ray_actor_options"]["num_gpus"] < 1
    assert 0 < declared["Diarizer"]["ray_actor_options"]["num_gpus"] < 1
    assert app["args"]["diarizer"]["device"] == "cuda" and "autoscaling_config" in declared["Diarizer"]
    assert "num_gpus" not in declared["Downloader"]["ray_actor_options"]
    assert declared["Transcriber"]["autoscaling_config"]["max_replicas"] >= 4
    assert app["args"]["transcriber"]["device"] == "cuda"


def test_diarization_is_off_unless_configured() -> None:
    args = local_config()["applications"][0]["args"]
    assert AppSettings.model_validate(args).diarizer is not None
    del args["diarizer"]
    assert AppSettings.model_validate(args).diarizer is None


def test_unknown_key_is_named_in_the_error() -> None:
    args = local_config()["applications"][0]["args"]
    args["transcriber"]["cpu_thread"] = 4
    with pytest.raises(ValidationError, match=r"transcriber\.cpu_thread"):
        build_app(args)


def test_bad_value_is_named_in_the_error() -> None:
    args = local_config()["applications"][0]["args"]
    args["embedder"]["chunk_words"] = 0
    with pytest.raises(ValidationError, match=r"embedder\.chunk_words"):
        AppSettings.model_validate(args)


def test_default_model_must_be_configured() -> None:
    with pytest.raises(ValidationError, match="default_model 'large-v3' is not a key of models"):
        TranscriberSettings(default_model="large-v3")


def test_model_languages_name_configured_models_and_are_not_empty() -> None:
    with pytest.raises(ValidationError, match="languages.large-v3: 'large-v3' is not a key of models"):
        TranscriberSettings(languages={"large-v3": ["en"]})
    with pytest.raises(ValidationError, match="languages.tiny.en is empty"):
        TranscriberSettings(languages={"tiny.en": []})


def test_prod_serves_distil_large_v3_in_english_without_detection() -> None:
    args = yaml.safe_load((ROOT / "configs" / "prod.yaml").read_text())["applications"][0]["args"]
    assert TranscriberSettings.model_validate(args["transcriber"]).languages["distil-large-v3"] == ["en"]


def test_the_default_takes_a_place_in_the_model_cache() -> None:
    with pytest.raises(ValidationError, match="max_models must be at least 2"):
        TranscriberSettings(models={"tiny.en": "embedded", "other": "embedded"}, max_models=1)
    assert TranscriberSettings(max_models=1).max_models == 1


def test_aliases_resolve_and_unknown_names_do_not() -> None:
    settings = TranscriberSettings()
    assert settings.resolve("whisper-1") == "tiny.en"
    assert settings.resolve(None) == "tiny.en"
    assert settings.resolve("large-v3") is None


def test_cluster_yaml_starts_the_app_with_the_prod_config() -> None:
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert {"head_node_type", "available_node_types", "setup_commands", "head_start_ray_commands"} <= set(cluster)
    gpu_nodes = [t for t in cluster["available_node_types"].values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_nodes, "cluster.yaml declares no GPU worker type"
    commands = "\n".join(cluster["head_start_ray_commands"] + cluster.get("head_setup_commands", []))
    assert "configs/prod.yaml" in commands
    assert any("make -C /home/ubuntu/transcribe-serve install-gpu" in c for c in cluster["setup_commands"])


def test_cluster_yaml_gives_every_node_a_current_gpu_image_the_gpu_stack_and_both_secrets() -> None:
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    for node_type in cluster["available_node_types"].values():
        image = node_type["node_config"]["ImageId"]
        assert image.lower() != "latest_dlami", "Ray 2.60 maps latest_dlami to an Ubuntu 18.04 / CUDA 11 image"
        assert image.startswith("resolve:ssm:") and "ubuntu-22.04" in image
    mounts = cluster["file_mounts"]
    assert mounts["/home/ubuntu/.ray/auth_token"] == "./secrets/ray-auth-token"
    setup = "\n".join(cluster["setup_commands"])
    assert "install-gpu" in setup
    prod = yaml.safe_load((ROOT / "configs" / "prod.yaml").read_text())["applications"][0]["args"]
    keys_file = prod["ingress"]["api_keys_file"]
    copied = next(remote for remote, local in mounts.items() if local == "./secrets/api-keys")
    assert f"{copied} {keys_file}" in setup, "the keys file prod.yaml names is installed on every node"
    starts = cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    makefile = (ROOT / "Makefile").read_text()
    assert "make cluster-secrets" in (ROOT / "cluster.yaml").read_text() and "cluster-secrets:" in makefile
    assert "secrets/ray-auth-token" in makefile and "secrets/api-keys" in makefile
