"""TF Serving client (relicv2_tf/serving/client.py) against local stand-ins for TF Serving.

The TF Serving binary is not installable here, so the test starts on 127.0.0.1 (ephemeral ports) a
gRPC `PredictionService` and an HTTP server that implement the parts of TF Serving's protocol the
client uses, written from its documentation independently of the client, and answer by running
the exported SavedModel. gRPC tests need the optional tensorflow-serving-api package.
"""

import base64
import http.server
import json
import re
import sys
import threading
import types
from concurrent import futures

import keras
import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf.models import encoder_io
from relicv2_tf.serving import client, export

MODEL_NAME = "demo"
IMAGE_SIZE = 32
RESIZE_SIZE = 40  # not the default 37: both sides must pass it along
NUM_CLASSES = 4
GRPC_REASON = ("gRPC client tests need tensorflow-serving-api: "
               "pip install -r requirements-serving.txt")


def smooth_image(rng, height, width):
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], -1) * 200
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving_client")
    keras.utils.set_random_seed(0)
    encoder = encoder_io.build_encoder({"depth": 18, "width_multiplier": 0.25})
    head = keras.Sequential([keras.Input((128,)),
                             keras.layers.Dense(NUM_CLASSES, name="linear_head")])
    path = export.export_encoder(encoder, str(root / "models"), MODEL_NAME, head=head,
                                 image_size=IMAGE_SIZE, resize_size=RESIZE_SIZE)
    rng = np.random.default_rng(0)
    files = []
    for i, (height, width, fmt) in enumerate([(40, 56, "png"), (48, 36, "jpeg"), (32, 32, "png")]):
        image = smooth_image(rng, height, width)
        data = tf.io.encode_png(image) if fmt == "png" else tf.io.encode_jpeg(image, quality=95)
        files.append(root / f"image_{i}.{fmt}")
        files[-1].write_bytes(data.numpy())
    (root / "not_an_image.png").write_bytes(b"hello, not a png")
    return {"root": root, "loaded": tf.saved_model.load(path),
            "files": [str(f) for f in files]}


def run_signature(loaded, signature_name, inputs):
    """What TF Serving does with a request: feed the named inputs to the signature."""
    fn = loaded.signatures[signature_name or "serving_default"]
    outputs = fn(**{name: tf.constant(value) for name, value in inputs.items()})
    return {name: value.numpy() for name, value in outputs.items()}


# ------------------------------------------------------------------------------ stand-in servers


@pytest.fixture(scope="module")
def grpc_server(served_model):
    grpc = pytest.importorskip("grpc", reason=GRPC_REASON)
    pytest.importorskip("tensorflow_serving.apis.predict_pb2", reason=GRPC_REASON)
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    received = []

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            received.append(request)
            if request.model_spec.name != MODEL_NAME:
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"Servable not found: {request.model_spec.name}")
            inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
            try:
                outputs = run_signature(served_model["loaded"], request.model_spec.signature_name,
                                        inputs)
            except tf.errors.InvalidArgumentError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield {"target": f"127.0.0.1:{port}", "received": received}
    server.stop(grace=None)


def decode_json_value(value):
    """TF Serving's JSON mapping: {"b64": ...} is binary, lists are tensors."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [decode_json_value(v) for v in value]
    return value


def to_array(values):
    if values and isinstance(values[0], bytes):
        return np.array(values, dtype=object)
    return np.asarray(values, dtype=np.float32)


class RestHandler(http.server.BaseHTTPRequestHandler):
    loaded = None
    received = None

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append({"path": self.path, "body": body})
        match = re.fullmatch(r"/v1/models/([\w.-]+)(?:/versions/(\d+))?:predict", self.path)
        if not match or match.group(1) != MODEL_NAME:
            return self.reply(404, {"error": f"Servable not found for request: {self.path}"})
        if "instances" in body:
            rows = body["instances"]
            names = list(rows[0]) if isinstance(rows[0], dict) and "b64" not in rows[0] else None
            if names is None:
                return self.reply(400, {"error": "this stand-in expects named instances"})
            inputs = {n: to_array([decode_json_value(row[n]) for row in rows]) for n in names}
        else:
            inputs = {n: to_array(decode_json_value(v)) for n, v in body["inputs"].items()}
        try:
            outputs = run_signature(self.loaded, body.get("signature_name"), inputs)
        except tf.errors.InvalidArgumentError as error:
            return self.reply(400, {"error": error.message})
        outputs = {name: value.tolist() for name, value in outputs.items()}
        if "instances" in body:
            if len(outputs) == 1:  # TF Serving omits the name of a single output
                return self.reply(200, {"predictions": next(iter(outputs.values()))})
            size = len(next(iter(outputs.values())))
            return self.reply(200, {"predictions": [{n: v[i] for n, v in outputs.items()}
                                                    for i in range(size)]})
        return self.reply(200, {"outputs": outputs})


@pytest.fixture(scope="module")
def rest_server(served_model):
    handler = type("Handler", (RestHandler,), {"loaded": served_model["loaded"], "received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"server": f"127.0.0.1:{server.server_address[1]}", "received": handler.received}
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------------------ pure builders


def test_predict_request_proto_for_both_signatures():
    pytest.importorskip("tensorflow_serving.apis.predict_pb2", reason=GRPC_REASON)
    encoded = [b"\x89PNG\r\n\x1a\n-one", b"\xff\xd8\xff-two\x00"]
    request = client.build_predict_request(MODEL_NAME, "serving_bytes", {"image_bytes": encoded},
                                           version=3)
    assert request.model_spec.name == MODEL_NAME
    assert request.model_spec.signature_name == "serving_bytes"
    assert request.model_spec.version.value == 3
    proto = request.inputs["image_bytes"]
    assert proto.dtype == tf.string.as_datatype_enum
    assert [d.size for d in proto.tensor_shape.dim] == [2]
    assert list(proto.string_val) == encoded  # bytes kept exactly, trailing NUL included

    images = np.random.default_rng(0).uniform(0, 255, (2, 5, 6, 3)).astype(np.float32)
    request = client.build_predict_request(MODEL_NAME, "serving_default", {"images": images})
    assert not request.model_spec.HasField("version")  # latest version
    proto = request.inputs["images"]
    assert proto.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in proto.tensor_shape.dim] == [2, 5, 6, 3]
    np.testing.assert_array_equal(tf.make_ndarray(proto), images)


def test_rest_request_json_row_and_columnar():
    encoded = [b"\x89PNG\r\n\x1a\n-one", b"\xff\xd8\xff-two"]
    body = client.build_rest_request("serving_bytes", {"image_bytes": encoded})
    body = json.loads(json.dumps(body))  # JSON-serialisable
    assert body["signature_name"] == "serving_bytes"
    assert [base64.b64decode(row["image_bytes"]["b64"]) for row in body["instances"]] == encoded
    images = np.arange(2 * 2 * 1 * 3, dtype=np.float32).reshape(2, 2, 1, 3)
    body = client.build_rest_request("serving_default", {"images": images}, rest_format="inputs")
    assert body == {"signature_name": "serving_default", "inputs": {"images": images.tolist()}}
    with pytest.raises(ValueError, match="rest_format"):
        client.build_rest_request("serving_default", {"images": images}, rest_format="rows")


def test_rest_url():
    assert (client.rest_predict_url("localhost:8501", "relicv2")
            == "http://localhost:8501/v1/models/relicv2:predict")
    assert (client.rest_predict_url("https://host:443/", "relicv2", version=7)
            == "https://host:443/v1/models/relicv2/versions/7:predict")


def test_parse_rest_response_formats():
    rows = client.parse_rest_response({"predictions": [{"embedding": [1, 2], "logits": [3]},
                                                       {"embedding": [4, 5], "logits": [6]}]})
    np.testing.assert_array_equal(rows["embedding"], [[1, 2], [4, 5]])
    np.testing.assert_array_equal(rows["logits"], [[3], [6]])
    single = client.parse_rest_response({"predictions": [[1, 2], [3, 4]]})
    assert list(single) == ["embedding"] and single["embedding"].shape == (2, 2)
    columns = client.parse_rest_response({"outputs": {"embedding": [[1.5]], "logits": [[2.5]]}})
    assert columns["logits"][0, 0] == 2.5
    assert client.parse_rest_response({"outputs": [[7.0]]})["embedding"][0, 0] == 7.0
    with pytest.raises(RuntimeError, match="bad things"):
        client.parse_rest_response({"error": "bad things"})


def test_top_k_against_numpy():
    probabilities = np.random.default_rng(1).dirichlet(np.ones(6), size=3)
    result = client.top_k(probabilities, k=3, class_names=list("abcdef"))
    for row, classes in zip(probabilities, result):
        expected = np.argsort(-row)[:3]
        assert [c["class"] for c in classes] == expected.tolist()
        assert [c["name"] for c in classes] == ["abcdef"[i] for i in expected]
        np.testing.assert_allclose([c["probability"] for c in classes], row[expected])
    assert len(client.top_k(probabilities, k=10)[0]) == 6
    with pytest.raises(ValueError, match="one line per class"):
        client.top_k(probabilities, class_names=["a", "b"])


def test_bad_client_inputs_have_clear_errors(served_model):
    with pytest.raises(ValueError, match=r"not_an_image\.png is not a JPEG or PNG"):
        client.read_image_files([served_model["files"][0],
                                 str(served_model["root"] / "not_an_image.png")])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        client.read_image_files([str(served_model["root"] / "missing.jpg")])
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\].*shape \(8, 8, 3\)"):
        client.check_images_array(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="Unknown signature"):
        client.image_inputs([], "serving_pixels")


def test_missing_serving_api_names_the_requirements_file(monkeypatch):
    for name in ["tensorflow_serving", "tensorflow_serving.apis",
                 "tensorflow_serving.apis.predict_pb2",
                 "tensorflow_serving.apis.prediction_service_pb2_grpc"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match="pip install -r requirements-serving.txt"):
        client.build_predict_request(MODEL_NAME, "serving_default",
                                     {"images": np.zeros((1, 2, 2, 3))})


# ------------------------------------------------------------------------------ round trips


def expected_outputs(served_model, signature):
    encoded = client.read_image_files(served_model["files"])
    inputs = client.image_inputs(encoded, signature, IMAGE_SIZE, RESIZE_SIZE)
    return inputs, run_signature(served_model["loaded"], signature, inputs)


@pytest.mark.parametrize("signature", ["serving_bytes", "serving_default"])
def test_grpc_round_trip(served_model, grpc_server, signature):
    inputs, expected = expected_outputs(served_model, signature)
    outputs = client.predict_grpc(grpc_server["target"], MODEL_NAME, signature, inputs, version=1)
    request = grpc_server["received"][-1]
    assert request.model_spec.signature_name == signature and request.model_spec.version.value == 1
    assert set(outputs) == {"embedding", "logits", "probabilities"}
    for name, value in expected.items():
        np.testing.assert_array_equal(outputs[name], value)
    assert outputs["embedding"].shape == (3, 128)


@pytest.mark.parametrize("rest_format", ["instances", "inputs"])
def test_rest_round_trip(served_model, rest_server, rest_format):
    for signature in ("serving_bytes", "serving_default"):
        inputs, expected = expected_outputs(served_model, signature)
        outputs = client.predict_rest(rest_server["server"], MODEL_NAME, signature, inputs,
                                      version=2, rest_format=rest_format)
        assert rest_server["received"][-1]["path"] == f"/v1/models/{MODEL_NAME}/versions/2:predict"
        assert rest_server["received"][-1]["body"]["signature_name"] == signature
        for name, value in expected.items():
            np.testing.assert_array_equal(outputs[name], value)


def test_pixels_and_bytes_signatures_agree(served_model):
    """The client's crop for `serving_default` is the server's crop for `serving_bytes`."""
    _, from_bytes = expected_outputs(served_model, "serving_bytes")
    _, from_pixels = expected_outputs(served_model, "serving_default")
    np.testing.assert_allclose(from_pixels["embedding"], from_bytes["embedding"], atol=1e-5, rtol=0)


def test_server_side_errors_reach_the_user_grpc(served_model, grpc_server):
    bad = {"image_bytes": [b"\xff\xd8\xff but not really a jpeg"]}  # JPEG magic, corrupt data
    with pytest.raises(RuntimeError, match="INVALID_ARGUMENT"):
        client.predict_grpc(grpc_server["target"], MODEL_NAME, "serving_bytes", bad)
    with pytest.raises(RuntimeError, match="NOT_FOUND"):
        client.predict_grpc(grpc_server["target"], "other", "serving_bytes", bad)


def test_server_side_errors_reach_the_user_rest(served_model, rest_server):
    bad = {"image_bytes": [b"plain text"]}
    with pytest.raises(RuntimeError, match="HTTP 400.*not a JPEG or PNG"):
        client.predict_rest(rest_server["server"], MODEL_NAME, "serving_bytes", bad)
    with pytest.raises(RuntimeError, match="HTTP 404"):
        client.predict_rest(rest_server["server"], "other", "serving_bytes", bad)
    images = {"images": np.zeros((1, 8, 8, 4), np.float32)}  # 4 channels
    with pytest.raises(RuntimeError, match=r"HTTP 400.*Shape of tensor images \[1,8,8,4\]"):
        client.predict_rest(rest_server["server"], MODEL_NAME, "serving_default", images,
                            rest_format="inputs")


def test_client_prints_top_k(served_model, rest_server, tmp_path, capsys):
    names = ["cat", "dog", "car", "tree"]
    outputs = client.predict_files(
        served_model["files"], server=rest_server["server"], protocol="rest",
        model_name=MODEL_NAME, signature="serving_default", image_size=IMAGE_SIZE,
        resize_size=RESIZE_SIZE)
    rows = client.format_results(served_model["files"], outputs, k=2, class_names=names)
    for row, probabilities in zip(rows, outputs["probabilities"]):
        assert "embedding" not in row and len(row["top_k"]) == 2
        best = int(np.argmax(probabilities))
        assert row["top_k"][0]["name"] == names[best]
        assert row["top_k"][0]["probability"] == pytest.approx(float(probabilities[best]))
        json.dumps(row)
    rows = client.format_results(served_model["files"], {"embedding": outputs["embedding"]}, k=2)
    assert rows[0]["embedding"] == outputs["embedding"][0].tolist()

    from relicv2_tf.cli import serving_client  # defines no flags at import

    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    flag_values = {name: types.SimpleNamespace(value=value) for name, value in dict(
        server=rest_server["server"], protocol="rest", model_name=MODEL_NAME, version=None,
        signature="serving_default", image_size=IMAGE_SIZE, resize_size=RESIZE_SIZE,
        rest_format="instances", top_k=2, class_names=str(tmp_path / "classes.txt"),
        all_outputs=False, timeout=30.0).items()}
    serving_client.main(flag_values, ["relicv2-client", *served_model["files"]])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = client.format_results(served_model["files"], outputs, k=2, class_names=names)
    assert printed == json.loads(json.dumps(expected))  # one JSON line per image
