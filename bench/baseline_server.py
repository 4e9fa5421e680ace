"""The baseline recserve is measured against: a plain FastAPI app running ONNX Runtime per request.

Each request is validated by a pydantic model and computed on its own in FastAPI's threadpool
(sync endpoints), with no batching. Paths mirror recserve's so the same load scripts drive both.
Started by ``serve_bench.py`` as

    BASELINE_VERSION_DIR=<repo>/<model>/<version> BASELINE_ORT_THREADS=0 \
        python -m uvicorn --app-dir bench --factory baseline_server:create_app --workers N
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

from modelrepo import Source, read_version


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[int]


class InferRequest(BaseModel):
    inputs: list[Tensor]


class ScoreRequest(BaseModel):
    user_id: str
    item_ids: list[str]


class RecommendRequest(BaseModel):
    user_id: str
    k: int = 10
    candidates: list[str] | None = None


def create_app() -> FastAPI:
    stored = read_version(Path(os.environ["BASELINE_VERSION_DIR"]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("BASELINE_ORT_THREADS", "0"))
    session = ort.InferenceSession(stored.model, options, providers=["CPUExecutionProvider"])
    signature = stored.manifest.signature
    user_ids, item_ids = (
        stored.vocabulary(spec).ids
        for spec in (signature.one_from(Source.USER), signature.one_from(Source.ITEM))
        if spec is not None
    )
    user_rows = {user: row for row, user in enumerate(user_ids, start=1)}  # row 0: unknown id
    item_rows = {item: row for row, item in enumerate(item_ids, start=1)}
    catalog = np.arange(1, len(item_ids) + 1, dtype=np.int64)
    app = FastAPI()

    def scores(user: int, items: np.ndarray) -> np.ndarray:
        feeds = {"user": np.full(len(items), user, dtype=np.int64), "item": items}
        return np.asarray(session.run(["score"], feeds)[0])

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{model}/infer")
    def infer(model: str, request: InferRequest) -> dict[str, Any]:
        feeds = {t.name: np.asarray(t.data, dtype=np.int64) for t in request.inputs}
        (out,) = session.run(["score"], feeds)
        tensor = {"name": "score", "datatype": "FP32", "shape": list(out.shape)}
        return {"model_name": model, "outputs": [{**tensor, "data": out.tolist()}]}

    @app.post("/v1/models/{model}/score")
    def score(model: str, request: ScoreRequest) -> dict[str, Any]:
        rows = np.array([item_rows.get(i, 0) for i in request.item_ids], dtype=np.int64)
        return {"scores": scores(user_rows.get(request.user_id, 0), rows).tolist()}

    @app.post("/v1/models/{model}/recommend")
    def recommend(model: str, request: RecommendRequest) -> dict[str, Any]:
        if request.candidates is None:
            ids, rows = item_ids, catalog
        else:
            ids = request.candidates
            rows = np.array([item_rows.get(i, 0) for i in ids], dtype=np.int64)
        out = scores(user_rows.get(request.user_id, 0), rows)
        k = min(request.k, len(ids))
        top = np.argpartition(out, -k)[-k:]
        best = top[np.argsort(-out[top])]
        return {"items": [{"item_id": ids[i], "score": float(out[i])} for i in best]}

    return app
