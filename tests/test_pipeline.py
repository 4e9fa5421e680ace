"""A whole run: data -> split -> train -> evaluate -> export -> parity -> publish."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import training.graph_check as graph_check
import training.pipeline as pipeline_module
import training.plot as plot_module
from modelrepo import read_version, two_id_signature
from training.data import SyntheticSpec
from training.models import ModelConfig
from training.pipeline import ParityError, PipelineConfig, run_pipeline, summary
from training.train import TrainConfig

TINY = SyntheticSpec(users=120, items=200, interactions=4000, seed=1)
TINY_MODEL = ModelConfig(kind="neumf", embedding_dim=8, tower=(16, 8), gmf_dim=8)
TINY_TRAIN = TrainConfig(epochs=2, batch_size=512)


def tiny_config(repository: Path, **changes: Any) -> PipelineConfig:
    values: dict[str, Any] = {
        "data": "synthetic",
        "model_name": "demo",
        "repository": repository,
        "synthetic": TINY,
        "model": TINY_MODEL,
        "train": TINY_TRAIN,
        "quiet": True,
    }
    values.update(changes)
    return PipelineConfig(**values)


def test_run_publishes_a_complete_version(tmp_path: Path) -> None:
    import onnxruntime as ort

    result = run_pipeline(tiny_config(tmp_path), log=io.StringIO())
    version = tmp_path / "demo" / "1"
    assert result.published.path == version
    assert sorted(p.name for p in version.iterdir()) == [
        "history.json",
        "history.npz",
        "items.txt",
        "metadata.json",
        "model.onnx",
        "retrieval.npz",
        "training_curve.png",
        "users.txt",
    ]
    # The version reads back through the contract: manifest, vocabularies, every checksum.
    stored = read_version(version)
    manifest = stored.manifest
    assert manifest == result.manifest
    assert json.loads((version / "metadata.json").read_text()) == manifest.model_dump(mode="json")
    assert set(manifest.files) == {p.name for p in version.iterdir()} - {"metadata.json"}
    for name, digest in manifest.files.items():
        assert digest == hashlib.sha256((version / name).read_bytes()).hexdigest(), name
    assert stored.model == (version / "model.onnx").read_bytes()
    assert manifest.kind == "neumf"
    assert manifest.unknown_row == 0
    assert manifest.signature == two_id_signature(121, 201)
    users = stored.vocabulary(manifest.signature.input("user"))
    assert users.ids == (version / "users.txt").read_text().splitlines()
    assert len(users) == 120
    assert stored.vocabularies["items.txt"].n_rows == 201
    assert manifest.created_at is not None and manifest.created_at.endswith("Z")

    records = manifest.records()
    assert records["hyperparameters"]["tower"] == [16, 8]
    assert records["dataset"]["size"] == 4000
    assert len(records["dataset"]["content_hash"]) == 64
    assert 0 <= records["parity_max_abs_error"] <= 1e-5
    test = records["metrics"]["test"]
    assert set(test) == {"model", "popularity", "lift"}
    assert test["lift"]["hr@10"] == pytest.approx(
        test["model"]["hr@10"] - test["popularity"]["hr@10"]
    )
    assert "popularity" in records["metrics"]["validation"]
    training = records["training"]
    assert training["epochs_run"] == 2
    assert {"seed", "optimizer", "lr", "batch_size", "negatives"} <= set(training)

    # Published: a refit on every interaction for the chosen epochs; the test figures are the
    # evaluated model's (tests/test_refit.py shows the refit learned the hold-outs).
    published = records["published_model"]
    assert published["refit"] is True
    assert published["trained_on"] == "all interactions"
    assert published["interactions"] == 4000 - records["dataset"]["split"]["duplicates_removed"]
    assert published["epochs"] == training["best_epoch"]

    history = json.loads((version / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert history["refit"]["epochs"] == published["epochs"] == len(history["refit"]["losses"])
    assert (version / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The published model scores an id by its line in users.txt / items.txt (row = line + 1).
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = np.array([0, 1, 120], dtype=np.int64)
    (scores,) = session.run(["score"], {"user": rows, "item": np.array([5, 0, 200], np.int64)})
    assert scores.shape == (3,)
    assert np.all((scores > 0) & (scores < 1))

    second = run_pipeline(tiny_config(tmp_path), log=io.StringIO())
    assert second.published.version == 2
    # Same data and seed: the same weights, byte for byte.
    assert second.manifest.files["model.onnx"] == manifest.files["model.onnx"]
    report = summary(result)
    assert "published demo version 1" in report
    assert f"training curve: {version / 'training_curve.png'}" in report
    assert "published model: trained on all interactions (4,000)" in report
    assert "test figures describe the evaluated model (without the hold-outs)" in report


def test_the_curve_is_titled_with_the_version_it_is_published_as(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[tuple[int, int, str]] = []
    real_plot = pipeline_module.plot_history

    def recording_plot(history: Any, **kwargs: Any) -> bytes | None:
        drawn.append((kwargs["chosen"], kwargs["labels"].version, kwargs["labels"].title))
        return real_plot(history, **kwargs)

    monkeypatch.setattr(pipeline_module, "plot_history", recording_plot)
    assert pipeline_module.next_version(tmp_path, "demo") == 1
    first = run_pipeline(tiny_config(tmp_path), log=io.StringIO())
    second = run_pipeline(tiny_config(tmp_path), log=io.StringIO())
    best = first.manifest.records()["training"]["best_epoch"]
    assert [(chosen, version) for chosen, version, _ in drawn] == [(best, 1), (best, 2)]
    assert (first.published.version, second.published.version) == (1, 2)
    assert drawn[1][2].startswith("demo version 2 · trained on synthetic(users=120")
    assert pipeline_module.next_version(tmp_path, "demo") == 3


def test_non_finite_figures_are_recorded_as_null(tmp_path: Path) -> None:
    """With two interactions per user nobody is held out for validation: its figures are NaN,
    which the manifest and the history record as null (standard JSON)."""
    path = tmp_path / "pairs.csv"
    rows = [f"user{n // 2},item{n},4,{n}" for n in range(120)]
    path.write_text("\n".join(["user_id,item_id,rating,timestamp", *rows]) + "\n")
    config = tiny_config(tmp_path / "repo", data=str(path), synthetic=None)
    result = run_pipeline(config, log=io.StringIO())
    version = result.published.path
    assert "NaN" not in (version / "metadata.json").read_text()
    assert "NaN" not in (version / "history.json").read_text()
    assert read_version(version).manifest == result.manifest
    history = json.loads((version / "history.json").read_text())
    assert [epoch["val_hr"] for epoch in history["epochs"]] == [None, None]
    assert "model" not in result.manifest.records()["metrics"]["validation"]


def test_failed_parity_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph_check, "onnx_parity", lambda *args: 0.25)
    with pytest.raises(ParityError, match=r"0\.25") as failure:
        run_pipeline(tiny_config(tmp_path), log=io.StringIO())
    assert failure.value.error == 0.25
    assert not (tmp_path / "demo").exists()


def test_missing_matplotlib_skips_the_plot_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    monkeypatch.setattr(plot_module, "_warned", False)
    log = io.StringIO()
    first = run_pipeline(tiny_config(tmp_path), log=log)
    run_pipeline(tiny_config(tmp_path), log=log)
    assert log.getvalue().count("matplotlib is not installed") == 1
    assert not (first.published.path / "training_curve.png").exists()
    assert (first.published.path / "model.onnx").exists()


def test_file_data_with_bad_rows_is_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,rating,timestamp"]
    for n in range(3000):
        lines.append(f"user{rng.integers(60)},item{rng.integers(300)},4,{n}")
    lines.insert(5, "user1,,4,99")
    path = tmp_path / "events.csv"
    path.write_text("\n".join(lines) + "\n")
    log = io.StringIO()
    result = run_pipeline(
        tiny_config(tmp_path / "repo", data=str(path), synthetic=None, quiet=False), log=log
    )
    assert "skipped 1 row(s) with missing or malformed fields (lines 6)" in log.getvalue()
    assert "epoch 1/2" in log.getvalue()
    assert result.manifest.records()["dataset"]["name"] == "events.csv"
    assert result.manifest.records()["dataset"]["skipped_rows"] == 1
    items = (result.published.path / "items.txt").read_text().splitlines()
    assert items[:3] == ["item0", "item1", "item10"]
