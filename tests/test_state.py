"""The explicit state of each (model, version): the transitions the reconciler makes, and the
reason a version at rest gives, in order: unloaded, failed, invalid config, version policy."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from service.errors import ShuttingDown
from service.models.served import ServedVersion
from service.models.state import ModelRecord, ServingStatus, State


def copy(label: str) -> ServedVersion:
    """A stand-in for a served copy: the records only compare copies by identity."""
    return cast(ServedVersion, label)


STAMP = (("model.onnx", 1, 2, 3),)


def model_with(*versions: int) -> ModelRecord:
    model = ModelRecord("m", Path("m"))
    model.track(versions)
    model.settle()
    return model


def test_a_version_goes_from_loading_to_ready_to_unloading_to_rest() -> None:
    model = model_with(1)
    record = model.versions[1]
    assert (record.state, record.reason) == (
        State.NOT_SERVED,
        "not served under the version policy",
    )
    record.begin_load()
    assert (record.state, record.state.shown) == (State.LOADING, "LOADING")
    first = copy("first")
    record.serve(first, STAMP)
    model.settle()
    assert (record.state, record.reason, model.latest) == (State.READY, "", first)
    record.retire(first)
    model.settle()
    assert (record.state, record.serving, model.latest) == (State.UNLOADING, None, None)
    model.drained(record)
    assert (record.state, record.state.shown) == (State.NOT_SERVED, "UNAVAILABLE")


def test_a_failed_load_fails_the_version_or_keeps_the_served_copy() -> None:
    model = model_with(1, 2)
    new, served = model.versions[2], model.versions[1]
    new.begin_load()
    new.fail(STAMP, "model.onnx is missing")
    assert (new.state, new.reason) == (State.FAILED, "model.onnx is missing")
    assert new.state.shown == "UNAVAILABLE"
    old = copy("old")
    served.serve(old, STAMP)
    served.begin_load()  # a reload keeps the served copy ready
    assert served.state is State.READY
    served.fail(STAMP, "onnxruntime cannot load")
    assert (served.state, served.serving) == (State.READY, old)
    assert (
        served.reason == "serving the copy loaded before; reloading failed: onnxruntime cannot load"
    )
    served.forget_failure()
    assert served.reason == "" and served.failure is None
    assert model.why_not_ready() == ": model.onnx is missing"


def test_a_copy_replaced_in_place_drains_while_the_version_stays_ready() -> None:
    model = model_with(1)
    record = model.versions[1]
    old, new = copy("old"), copy("new")
    record.serve(old, STAMP)
    record.serve(new, STAMP)
    record.retire(old)
    model.settle()
    assert (record.state, record.draining) == (State.READY, 1)
    model.drained(record)
    assert (record.state, record.serving, record.draining) == (State.READY, new, 0)


def test_a_load_abandoned_at_shutdown_comes_to_rest() -> None:
    model = model_with(1)
    model.versions[1].begin_load()
    model.settle()  # no load is in progress when the reconciler settles
    assert model.versions[1].state is State.NOT_SERVED


@pytest.mark.parametrize(
    ("unloaded", "failure", "config_error", "reason", "model_reason"),
    [
        (True, "broken", "bad config", "unloaded", ": unloaded"),
        (False, "broken", "bad config", "broken", ": bad config"),
        (False, "broken", "", "broken", ": broken"),
        (False, None, "bad config", "bad config", ": bad config"),
        (False, None, "", "not served under the version policy", ""),
    ],
)
def test_the_reason_of_a_version_at_rest_and_of_a_model_without_one(
    unloaded: bool, failure: str | None, config_error: str, reason: str, model_reason: str
) -> None:
    model = model_with(1)
    model.unloaded, model.config_error = unloaded, config_error
    if failure is not None:
        model.versions[1].fail(STAMP, failure)
    model.settle()
    assert model.versions[1].reason == reason
    assert model.why_not_ready() == model_reason


def test_versions_gone_from_disk_are_forgotten_once_drained() -> None:
    model = model_with(1, 2)
    gone = model.versions[2]
    gone.serve(copy("two"), STAMP)
    gone.fail(STAMP, "reload failed")
    gone.retire(copy("two"))  # not the serving copy: the version still serves it
    model.track([1])
    assert gone.failure is None and not gone.on_disk  # a new directory 2 is a new attempt
    gone.retire(cast(ServedVersion, gone.serving))
    model.settle()
    assert sorted(model.versions) == [1, 2] and gone.state is State.UNLOADING
    model.drained(gone)
    assert sorted(model.versions) == [1, 2]  # one copy still draining
    model.drained(gone)
    assert sorted(model.versions) == [1]


def test_shutdown_is_reported_one_way() -> None:
    status = ServingStatus()
    status.refuse_if_stopping()
    status.stopping = True
    with pytest.raises(ShuttingDown, match="the server is shutting down; send the request"):
        status.refuse_if_stopping()
