"""Client of a TF Serving endpoint running an encoder exported by `serving.export`.

Two transports, same inputs and outputs:
  * gRPC (`PredictionService/Predict`, port 8500): needs the optional `tensorflow-serving-api`
    package (`pip install -r requirements-serving.txt`), imported only when gRPC is used;
  * REST (`POST /v1/models/<name>[/versions/<v>]:predict`, port 8501): standard library only.

Inputs are built from image files for either signature: `serving_bytes` gets the file bytes as they
are (preprocessing happens in the server's graph); `serving_default` gets decoded pixels, resized
and centre-cropped here with the evaluation geometry, as float32 in [0, 255]. The request builders
and response parsers are pure functions of their arguments.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request

import numpy as np
import tensorflow as tf

from relicv2_tf.data import eval_preprocess
from relicv2_tf.serving import export

REQUIREMENTS_HINT = "pip install -r requirements-serving.txt"
REST_FORMATS = ("instances", "inputs")


def serving_apis():
    """(predict_pb2, prediction_service_pb2_grpc, grpc), imported lazily with a clear error."""
    try:
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as error:
        raise ImportError(
            "The gRPC client needs the optional `tensorflow-serving-api` package: "
            f"`{REQUIREMENTS_HINT}` (or use the REST protocol, which needs nothing extra)."
        ) from error
    return predict_pb2, prediction_service_pb2_grpc, grpc


# ------------------------------------------------------------------------------ inputs


def check_image_bytes(data: bytes, source: str) -> bytes:
    """`data` if it starts like a JPEG or PNG file; otherwise a ValueError naming `source`."""
    if not any(data.startswith(magic) for magic in export.IMAGE_MAGIC.values()):
        raise ValueError(f"{source} is not a JPEG or PNG file (first bytes {data[:8]!r}); the "
                         "server decodes only those formats: convert it first.")
    return data


def read_image_files(paths) -> list[bytes]:
    if not paths:
        raise ValueError("No image files given: pass at least one JPEG or PNG path.")
    encoded = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image file {path} not found.")
        with open(path, "rb") as f:
            encoded.append(check_image_bytes(f.read(), path))
    return encoded


def decode_for_images_signature(encoded: bytes, image_size: int = 224,
                                resize_size: int | None = None) -> np.ndarray:
    """Encoded file -> float32 [image_size, image_size, 3] in [0, 255] for `serving_default`.

    The geometry of `preprocess_for_eval` (bicubic shorter side to `resize_size`, default
    `image_size * 256 / 224`, centre crop, clip) without the normalisation, which the exported
    graph applies; so both signatures give the same embedding for a file.
    """
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    image = eval_preprocess.eval_geometry(image, image_size, resize_size)
    return (image * 255.0).numpy().astype(np.float32)


def check_images_array(images) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"`{export.IMAGES_INPUT}` must be float32 [N, H, W, 3] RGB in [0, 255]; "
                         f"got shape {images.shape}. Add the batch axis for a single image.")
    return images


def image_inputs(encoded_images: list[bytes], signature_name: str, image_size: int = 224,
                 resize_size: int | None = None) -> dict:
    """{input name: value} for `signature_name` from encoded image files."""
    if signature_name == export.SERVING_BYTES:
        return {export.BYTES_INPUT: [check_image_bytes(b, f"image {i}")
                                     for i, b in enumerate(encoded_images)]}
    if signature_name == export.SERVING_DEFAULT:
        return {export.IMAGES_INPUT: check_images_array(
            [decode_for_images_signature(b, image_size, resize_size) for b in encoded_images])}
    raise ValueError(f"Unknown signature {signature_name!r}: use {export.SERVING_DEFAULT!r} "
                     f"(pixels) or {export.SERVING_BYTES!r} (encoded files).")


# ------------------------------------------------------------------------------ gRPC


def build_predict_request(model_name: str, signature_name: str, inputs: dict,
                          version: int | None = None):
    """PredictRequest proto: `inputs` maps names to float arrays or lists of bytes."""
    predict_pb2, _, _ = serving_apis()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in inputs.items():
        if _is_bytes_list(value):
            proto = tf.make_tensor_proto(list(value), dtype=tf.string, shape=[len(value)])
        else:
            proto = tf.make_tensor_proto(np.asarray(value, dtype=np.float32))
        request.inputs[name].CopyFrom(proto)
    return request


def parse_predict_response(response) -> dict[str, np.ndarray]:
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def predict_grpc(target: str, model_name: str, signature_name: str, inputs: dict,
                 version: int | None = None, timeout: float = 30.0) -> dict[str, np.ndarray]:
    """Calls `PredictionService/Predict` at `target` ("host:port")."""
    _, prediction_service_pb2_grpc, grpc = serving_apis()
    request = build_predict_request(model_name, signature_name, inputs, version)
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            raise RuntimeError(f"gRPC Predict at {target} failed ({error.code().name}): "
                               f"{error.details()}") from None
    return parse_predict_response(response)


# ------------------------------------------------------------------------------ REST


def rest_predict_url(server: str, model_name: str, version: int | None = None) -> str:
    """`http://host:port/v1/models/<name>[/versions/<v>]:predict`; `server` may have a scheme."""
    base = server if server.startswith(("http://", "https://")) else f"http://{server}"
    path = f"/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{int(version)}"
    return base.rstrip("/") + path + ":predict"


def _is_bytes_list(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, bytes) for v in value)


def _json_value(value):
    """Bytes -> {"b64": ...}; arrays -> nested lists (one list entry per example)."""
    if _is_bytes_list(value):
        return [{"b64": base64.b64encode(v).decode("ascii")} for v in value]
    return np.asarray(value, dtype=np.float32).tolist()


def build_rest_request(signature_name: str, inputs: dict, rest_format: str = "instances") -> dict:
    """JSON body of `:predict`: row format ("instances") or columnar format ("inputs")."""
    if rest_format not in REST_FORMATS:
        raise ValueError(f"rest_format={rest_format!r}: use one of {REST_FORMATS}.")
    columns = {name: _json_value(value) for name, value in inputs.items()}
    if rest_format == "inputs":
        return {"signature_name": signature_name, "inputs": columns}
    sizes = {len(column) for column in columns.values()}
    if len(sizes) != 1:
        raise ValueError("The row format needs the same batch size for every input; use 'inputs'.")
    rows = [{name: column[i] for name, column in columns.items()} for i in range(sizes.pop())]
    return {"signature_name": signature_name, "instances": rows}


def parse_rest_response(body: dict, single_output_name: str = export.EMBEDDING
                        ) -> dict[str, np.ndarray]:
    """`predictions` (row format) or `outputs` (columnar) -> {output name: array}.

    TF Serving drops the output name when a signature has a single output; it is then
    `single_output_name` (the encoder-only export returns only `embedding`).
    """
    if "error" in body:
        raise RuntimeError(f"TF Serving returned an error: {body['error']}")
    if "outputs" in body:
        outputs = body["outputs"]
        if not isinstance(outputs, dict):
            outputs = {single_output_name: outputs}
        return {name: np.asarray(value, dtype=np.float32) for name, value in outputs.items()}
    if "predictions" in body:
        rows = body["predictions"]
        if rows and isinstance(rows[0], dict):
            return {name: np.asarray([row[name] for row in rows], dtype=np.float32)
                    for name in rows[0]}
        return {single_output_name: np.asarray(rows, dtype=np.float32)}
    raise ValueError(f"Unexpected TF Serving response, neither 'predictions' nor 'outputs': "
                     f"keys {sorted(body)}")


def predict_rest(server: str, model_name: str, signature_name: str, inputs: dict,
                 version: int | None = None, rest_format: str = "instances",
                 timeout: float = 30.0) -> dict[str, np.ndarray]:
    url = rest_predict_url(server, model_name, version)
    data = json.dumps(build_rest_request(signature_name, inputs, rest_format)).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        raise RuntimeError(f"REST predict at {url} failed (HTTP {error.code}): {detail}") from None
    except urllib.error.URLError as error:
        raise RuntimeError(f"Cannot reach TF Serving at {url}: {error.reason}") from None
    return parse_rest_response(body)


def predict_files(paths, *, server: str, protocol: str, model_name: str,
                  version: int | None = None, signature: str = "serving_bytes",
                  image_size: int = 224, resize_size: int | None = None,
                  rest_format: str = "instances", timeout: float = 30.0) -> dict[str, np.ndarray]:
    """Reads the image files, calls the server over `protocol` ("grpc" or "rest"), returns
    {output name: array [N, ...]}."""
    inputs = image_inputs(read_image_files(paths), signature, image_size, resize_size)
    if protocol == "grpc":
        return predict_grpc(server, model_name, signature, inputs, version, timeout)
    if protocol == "rest":
        return predict_rest(server, model_name, signature, inputs, version, rest_format, timeout)
    raise ValueError(f"protocol={protocol!r}: use 'grpc' or 'rest'.")


# ------------------------------------------------------------------------------ outputs


def load_class_names(path: str) -> list[str]:
    """One class name per line (line i = class index i)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def top_k(probabilities, k: int = 5, class_names=None) -> list[list[dict]]:
    """Per example, the k most probable classes as {"class", "name", "probability"}, best first."""
    probabilities = np.asarray(probabilities)
    if class_names is not None and len(class_names) != probabilities.shape[-1]:
        raise ValueError(f"{len(class_names)} class names for {probabilities.shape[-1]} classes: "
                         "the class-names file needs one line per class of the exported head.")
    k = min(k, probabilities.shape[-1])
    result = []
    for row in probabilities:
        order = np.argsort(-row, kind="stable")[:k]
        result.append([{"class": int(c),
                        "name": class_names[c] if class_names is not None else str(int(c)),
                        "probability": float(row[c])} for c in order])
    return result


def format_results(paths, outputs: dict, k: int = 5, class_names=None,
                   all_outputs: bool = False) -> list[dict]:
    """One JSON-serialisable dict per image: {"image", "top_k"} when the model returns
    probabilities (and every output too with `all_outputs`), else {"image", <output>: list}."""
    rows = [{"image": path} for path in paths]
    probabilities = outputs.get(export.PROBABILITIES)
    if probabilities is not None:
        for row, classes in zip(rows, top_k(probabilities, k, class_names)):
            row["top_k"] = classes
    if probabilities is None or all_outputs:
        for name, values in outputs.items():
            for row, value in zip(rows, values):
                row[name] = value.tolist()
    return rows
