"""LiteRT, the runtime apps use, loading and running `.tflite` files with float inputs and
outputs whatever the model's own input and output types."""

import os

import numpy as np


def load_interpreter(model: str | bytes, num_threads: int | None = None, **kwargs):
    """A LiteRT interpreter for a `.tflite` path or flatbuffer, with a clear error if invalid."""
    from ai_edge_litert.interpreter import Interpreter

    where = model if isinstance(model, str) else "the given flatbuffer"
    if isinstance(model, str) and not os.path.exists(model):
        raise FileNotFoundError(f"No .tflite file at {model}.")
    try:
        source = {"model_path": model} if isinstance(model, str) else {"model_content": model}
        interpreter = Interpreter(**source, num_threads=num_threads, **kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ValueError(
            f"{where} is not a valid .tflite model ({error}). It may be truncated or corrupt; "
            "re-export it."
        ) from error
    return interpreter


class TFLiteClassifier:
    """Runs a `.tflite` classifier on batches of *normalised* float images.

    Quantized (int8/uint8) inputs are quantized with the model's own scale and zero point and
    outputs dequantized, so callers always pass and get float values.
    """

    def __init__(self, model: str | bytes, num_threads: int | None = None, **kwargs):
        self.interpreter = load_interpreter(model, num_threads, **kwargs)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch = int(self._input["shape"][0])
        self._resizable = int(self._input["shape_signature"][0]) == -1

    def quantize(self, images: np.ndarray) -> np.ndarray:
        """Normalised float images in the model's input dtype (quantized with its own scale and
        zero point)."""
        dtype = self._input["dtype"]
        if dtype == np.float32:
            return images.astype(np.float32)
        scale, zero_point = self._input["quantization"]
        info = np.iinfo(dtype)
        q = np.round(images / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, outputs: np.ndarray) -> np.ndarray:
        if self._output["dtype"] == np.float32:
            return outputs
        scale, zero_point = self._output["quantization"]
        return (outputs.astype(np.float32) - zero_point) * scale

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
            self.interpreter.allocate_tensors()
            self._batch = batch.shape[0]
        self.interpreter.set_tensor(self._input["index"], self.quantize(batch))
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self._output["index"]))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Float logits for a batch of normalised images."""
        images = np.asarray(images, np.float32)
        if self._resizable:
            return self._run(images)
        return np.concatenate([self._run(images[i : i + 1]) for i in range(len(images))])
