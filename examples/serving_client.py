"""Query a flow served by TF Serving over gRPC: log p of points, and samples.

    # serve an export (see the README's "Serving" section), then:
    python examples/serving_client.py --model moons --host localhost --port 8500

Needs the `tensorflow-serving-api` package (`pip install -e ".[serving]"`).
The requests are the real `PredictRequest` protos TF Serving's gRPC API takes;
the signature and tensor names are those `tfp_flows.export_saved_model` writes.
"""

import argparse
import os

# TensorFlow's C++ start-up logs off unless you set TF_CPP_MIN_LOG_LEVEL yourself.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def log_prob_request(model_name, points, context=None):
    """A request for log p(x) of `points`, float32 [N, D] (and `context` [N, C] if conditional)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "log_prob"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(points, np.float32)))
    _add_context(request, context)
    return request


def sample_request(model_name, n, seed, context=None):
    """A request for `n` samples; the same stateless `seed` (two ints) gives the same samples.

    A conditional flow draws `n` per row of `context` [B, C]: samples [n, B, D].
    """
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "sample"
    request.inputs["n"].CopyFrom(tf.make_tensor_proto(n, dtype=tf.int32))
    request.inputs["seed"].CopyFrom(tf.make_tensor_proto(seed, dtype=tf.int32, shape=[2]))
    _add_context(request, context)
    return request


def _add_context(request, context):
    if context is not None:
        request.inputs["context"].CopyFrom(
            tf.make_tensor_proto(np.atleast_2d(np.asarray(context, np.float32)))
        )


def query(address, model_name, points, n, seed, context=None, timeout=10.0):
    """Returns (log_prob [N], samples) from the server at `address`.

    For a conditional model pass `context`: one row for all points (and one
    set of `n` samples), or one row per point.
    """
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        log_prob = stub.Predict(log_prob_request(model_name, points, context), timeout=timeout)
        samples = stub.Predict(sample_request(model_name, n, seed, context), timeout=timeout)
    return (
        tf.make_ndarray(log_prob.outputs["log_prob"]),
        tf.make_ndarray(samples.outputs["samples"]),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="moons", help="the served model's name")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8500, help="TF Serving's gRPC port")
    parser.add_argument("--num-samples", type=int, default=5)
    parser.add_argument("--seed", type=int, nargs=2, default=[1, 2])
    parser.add_argument(
        "--context", type=float, nargs="+", help="the context vector, for a conditional model"
    )
    args = parser.parse_args()
    points = np.array([[0.5, 0.25], [1.0, -0.5]], np.float32)
    log_prob, samples = query(
        f"{args.host}:{args.port}", args.model, points, args.num_samples, args.seed, args.context
    )
    for point, value in zip(points, log_prob):
        print(f"log p({point.tolist()}) = {value:.4f}")
    print(f"{args.num_samples} samples (seed {args.seed}):\n{samples}")


if __name__ == "__main__":
    main()
