"""A model's config.json: version policies, overrides merged over the server settings, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ModelLoadError
from service.models.config import (
    DEFAULT_WARMUP_BATCH_SIZES,
    ModelConfig,
    load_model_config,
    parse_model_config,
    resolve,
)
from service.settings import BatchingSettings, Settings


def test_no_config_means_latest_one_and_server_settings(tmp_path: Path) -> None:
    config = load_model_config(tmp_path)
    assert config == ModelConfig()
    assert config.version_policy.candidates([1, 3, 2]) == ([3, 2, 1], 1)
    assert config.version_policy.to_triton() == {"latest": {"num_versions": 1}}
    settings = Settings(batching=BatchingSettings(max_batch_rows=77), ort_intra_op_threads=3)
    effective = resolve(config, settings)
    assert effective.batching.max_batch_rows == 77
    assert effective.intra_op_threads == 3
    assert effective.provider == "auto"
    assert effective.warmup_batch_sizes == DEFAULT_WARMUP_BATCH_SIZES


@pytest.mark.parametrize(
    ("policy", "candidates", "limit"),
    [
        ({"latest": {"num_versions": 2}}, [5, 3, 1], 2),
        ({"latest": {}}, [5, 3, 1], 1),
        ({"all": {}}, [5, 3, 1], None),
        ({"specific": {"versions": [1, 5, 9]}}, [5, 1], None),
    ],
)
def test_version_policies(
    policy: dict[str, object], candidates: list[int], limit: int | None
) -> None:
    config = ModelConfig.model_validate({"version_policy": policy})
    assert config.version_policy.candidates([1, 3, 5]) == (candidates, limit)
    triton_form = {"version_policy": config.version_policy.to_triton()}
    assert ModelConfig.model_validate(triton_form).version_policy == config.version_policy


def test_overrides_replace_only_what_they_name(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        '{"batching": {"max_batch_rows": 256, "max_queue_delay_us": 0},'
        ' "execution": {"provider": "cpu", "intra_op_threads": 1},'
        ' "warmup": {"batch_sizes": [8]}}'
    )
    settings = Settings(batching=BatchingSettings(queue_capacity_rows=999))
    effective = resolve(load_model_config(tmp_path), settings)
    assert effective.batching.max_batch_rows == 256
    assert effective.batching.max_queue_delay_us == 0
    assert effective.batching.queue_capacity_rows == 999
    assert effective.provider == "cpu"
    assert effective.intra_op_threads == 1
    assert effective.warmup_batch_sizes == (8,)
    assert effective.to_dict()["batching"]["max_batch_rows"] == 256
    assert settings.batching.max_batch_rows == 8192  # the server's settings are untouched


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{", "not JSON"),
        ("[]", "JSON object"),
        ('{"batching": {"max_batch_row": 5}}', r"batching\.max_batch_row"),
        ('{"batching": {"max_batch_rows": 0}}', r"batching\.max_batch_rows"),
        ('{"version_policy": {"all": {}, "latest": {}}}', "one version policy"),
        ('{"version_policy": {"specific": {"versions": [0]}}}', r"versions\.0: .*positive"),
        ('{"execution": {"provider": "tpu"}}', r"execution\.provider"),
        ('{"warmup": {"batch_sizes": [8, 0]}}', r"batch_sizes\.1: .*positive"),
    ],
)
def test_invalid_config_gives_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ModelLoadError, match=reason) as error:
        parse_model_config(text)
    assert str(error.value).startswith("invalid config.json")
