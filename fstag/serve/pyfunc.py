"""The MLflow ``python_function`` face of a bundle: :class:`FstagModel`, its signature and its input example.

``mlflow.pyfunc.load_model(uri).predict(table, params=...)`` and ``mlflow models serve`` call
:meth:`FstagModel.predict` with a table of clips (columns ``audio`` | ``path``, optional ``name``) and the request's
``params`` (``top_k``, ``threshold``, ``errors``). A request that cannot be tagged (a clip that is not audio, is
empty or too long, a malformed row, too many clips) raises ``MlflowException(error_code=INVALID_PARAMETER_VALUE)``:
MLflow's scoring server answers it with HTTP 400 and the message, which names each bad clip and why, and goes on
serving. (Any other exception a pyfunc model raises is answered 400 too, with MLflow's generic "Encountered an
unexpected error while evaluating the model" instead of the reason.)
"""

from __future__ import annotations

import base64
import io
from typing import Any

import mlflow.pyfunc
import pandas as pd  # the table type hint of predict(): MLflow then neither validates nor infers from hints

ARTIFACT = "fstag"  # the bundle folder's artifact key (context.artifacts["fstag"])


class FstagModel(mlflow.pyfunc.PythonModel):
    """A bundle (:mod:`fstag.serve.bundle`) as an MLflow pyfunc model; the work is :class:`fstag.serve.tagger.Tagger`'s."""

    def load_context(self, context) -> None:
        from fstag.serve.tagger import Tagger

        self.tagger = Tagger.load(context.artifacts[ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from fstag.serve.tagger import BadClips, BadRequest

        params = dict(params or {})
        try:
            return self.tagger.tag(model_input, top_k=params.get("top_k"), threshold=params.get("threshold"),
                                   errors=str(params.get("errors") or "raise"))
        except (BadClips, BadRequest) as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


def example_clip_bytes(sample_rate: int = 16000, seconds: float = 0.5) -> bytes:
    """A short WAV (a 440 Hz tone with a 5 Hz tremolo, 16-bit) made here: the input example's clip."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(sample_rate * seconds)) / sample_rate
    y = 0.3 * np.sin(2 * np.pi * 440.0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 5.0 * t))
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def input_example():
    """One clip given as base64 bytes, named: what a request's table looks like."""
    return pd.DataFrame([{"name": "example.wav", "audio": base64.b64encode(example_clip_bytes()).decode("ascii")}])


def signature(multi_label: bool, top_k: int, threshold: float):
    """Inputs: ``name``, ``audio``, ``path`` (strings, each optional: a row has audio or path); params ``top_k``,
    ``threshold``, ``errors``; outputs: :func:`fstag.serve.tagger.result_table`'s columns."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array, Map

    inputs = Schema([ColSpec(DataType.string, "name", required=False),
                     ColSpec(DataType.string, "audio", required=False),
                     ColSpec(DataType.string, "path", required=False)])
    outputs = [ColSpec(DataType.string, "fname"), ColSpec(Array(DataType.string), "top_labels"),
               ColSpec(Array(DataType.double), "top_probs")]
    if multi_label:
        outputs.append(ColSpec(Array(DataType.string), "labels"))
    outputs += [ColSpec(Map(DataType.double), "probs"), ColSpec(DataType.boolean, "flagged"),
                ColSpec(DataType.boolean, "silent"), ColSpec(DataType.string, "error")]
    params = ParamSchema([ParamSpec("top_k", DataType.long, int(top_k)),
                          ParamSpec("threshold", DataType.double, float(threshold)),
                          ParamSpec("errors", DataType.string, "raise")])
    return ModelSignature(inputs=inputs, outputs=Schema(outputs), params=params)
