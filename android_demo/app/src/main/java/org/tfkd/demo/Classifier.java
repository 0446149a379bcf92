package org.tfkd.demo;

import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import org.tfkd.demo.core.ModelInfo;
import org.tfkd.demo.core.Preprocessor;

/**
 * The exported student on normalised images: quantizes inputs and dequantizes outputs with the
 * model's own tensor parameters ({@link ModelInfo}, read from the file).
 */
final class Classifier {
    private final Runtime runtime;
    final ModelInfo model;
    private final ByteBuffer input;
    private final ByteBuffer output;
    private final int classes;

    Classifier(MappedByteBuffer file, int threads, boolean xnnpack, String delegate) {
        this.model = ModelInfo.read(file);
        this.runtime = new Runtime(file, threads, xnnpack, delegate);
        this.input = Runtime.buffer(runtime.interpreter.getInputTensor(0));
        this.output = Runtime.buffer(runtime.interpreter.getOutputTensor(0));
        int[] shape = runtime.interpreter.getOutputTensor(0).shape();
        this.classes = shape[shape.length - 1];
    }

    /** The model's outputs (probabilities or logits, {@link ModelInfo#outputsProbabilities}) for
     * one normalised HWC image. */
    float[] outputs(float[] normalized) {
        input.rewind();
        if (model.quantizedInput()) {
            input.put(Preprocessor.quantize(normalized, model.inputScale, model.inputZeroPoint,
                model.inputDtype));
        } else {
            for (float v : normalized) {
                input.putFloat(v);
            }
        }
        output.rewind();
        runtime.interpreter.run(input, output);
        output.rewind();
        if ("float32".equals(model.outputDtype)) {
            float[] values = new float[classes];
            output.asFloatBuffer().get(values);
            return values;
        }
        byte[] raw = new byte[classes];
        output.get(raw);
        return Preprocessor.dequantize(raw, model.outputScale, model.outputZeroPoint,
            model.outputDtype);
    }

    void close() {
        runtime.close();
    }
}
