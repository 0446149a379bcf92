package org.tfkd.demo;

import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import org.tfkd.demo.core.ModelCard;
import org.tfkd.demo.core.Preprocessor;

/** The exported student on normalised images: quantizes inputs and dequantizes outputs. */
final class Classifier {
    private final Runtime runtime;
    private final ModelCard.Variant variant;
    private final ByteBuffer input;
    private final ByteBuffer output;
    private final int classes;

    Classifier(MappedByteBuffer model, ModelCard card, ModelCard.Variant variant, int threads,
               boolean xnnpack, String delegate) {
        this.runtime = new Runtime(model, threads, xnnpack, delegate);
        this.variant = variant;
        this.input = Runtime.buffer(runtime.interpreter.getInputTensor(0));
        this.output = Runtime.buffer(runtime.interpreter.getOutputTensor(0));
        int[] shape = runtime.interpreter.getOutputTensor(0).shape();
        this.classes = shape[shape.length - 1];
        if (classes != card.labels.size()) {
            throw new IllegalStateException("The model emits " + classes + " scores but the model"
                + " card has " + card.labels.size() + " labels: they come from different runs.");
        }
    }

    /** Logits for one normalised HWC image. */
    float[] logits(float[] normalized) {
        input.rewind();
        if (variant.quantizedInput()) {
            input.put(Preprocessor.quantize(normalized, variant.inputScale,
                variant.inputZeroPoint, variant.inputDtype));
        } else {
            for (float v : normalized) {
                input.putFloat(v);
            }
        }
        output.rewind();
        runtime.interpreter.run(input, output);
        output.rewind();
        if ("float32".equals(variant.outputDtype)) {
            float[] logits = new float[classes];
            output.asFloatBuffer().get(logits);
            return logits;
        }
        byte[] raw = new byte[classes];
        output.get(raw);
        return Preprocessor.dequantize(raw, variant.outputScale, variant.outputZeroPoint,
            variant.outputDtype);
    }

    void close() {
        runtime.close();
    }
}
