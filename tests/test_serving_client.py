"""The gRPC client example against an in-process PredictionService that runs the export.

TF Serving itself can't run here (no Docker engine); this server answers
`Predict` the way TF Serving does: it looks up the request's signature in the
SavedModel and feeds it the request's named tensors.
"""

import concurrent.futures
import importlib.util
import pathlib

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfp_flows import flows
from tfp_flows.export import export_saved_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _client():
    spec = importlib.util.spec_from_file_location(
        "serving_client", ROOT / "examples" / "serving_client.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SavedModelPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, name, path):
        self.name, self.signatures = name, tf.saved_model.load(path).signatures

    def Predict(self, request, context):  # noqa: N802 - the gRPC method's name
        if request.model_spec.name != self.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_spec.name}")
        signature = self.signatures[request.model_spec.signature_name or "serving_default"]
        expected = signature.structured_input_signature[1]
        inputs = {}
        for key, proto in request.inputs.items():
            value = tf.make_ndarray(proto)
            if (
                key not in expected
                or tf.as_dtype(value.dtype) != expected[key].dtype
                or not expected[key].shape.is_compatible_with(value.shape)
            ):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad input {key}")
            inputs[key] = tf.constant(value)
        response = predict_pb2.PredictResponse()
        for key, value in signature(**inputs).items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = flows.realnvp(2, num_layers=2)
    for weight in model.trainable_weights:
        weight.assign(weight + 0.1)
    path = export_saved_model(model, tmp_path_factory.mktemp("saved_models"), "moons")
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        SavedModelPredictionService("moons", path), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield model, f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_client_gets_log_prob_and_samples(served):
    model, address = served
    points = np.array([[0.5, 0.25], [1.0, -0.5], [0.0, 0.0]], np.float32)
    log_prob, samples = _client().query(address, "moons", points, n=4, seed=[7, 8])
    np.testing.assert_allclose(log_prob, model.log_prob(points), atol=1e-5)
    np.testing.assert_allclose(samples, model.sample(4, seed=[7, 8]), atol=1e-5)


def test_client_requests_match_the_signatures(served):
    client = _client()
    request = client.sample_request("moons", 3, [1, 2])
    assert request.model_spec.signature_name == "sample"
    assert tf.make_ndarray(request.inputs["n"]).shape == ()
    assert tf.make_ndarray(request.inputs["seed"]).dtype == np.int32
    request = client.log_prob_request("moons", [[0.0, 1.0]])
    assert tf.make_ndarray(request.inputs["x"]).dtype == np.float32
    assert "context" not in request.inputs
    request = client.log_prob_request("conditional", [[0.0, 1.0]], context=[1.0, 0.0, 0.0])
    assert tf.make_ndarray(request.inputs["context"]).shape == (1, 3)
    request = client.sample_request("conditional", 3, [1, 2], context=np.eye(3))
    assert tf.make_ndarray(request.inputs["context"]).dtype == np.float32
