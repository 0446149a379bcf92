/*
 * COMPILE-ONLY STUB, never packaged into an APK. It declares exactly the part of the LiteRT
 * Java Interpreter API (package org.tensorflow.lite) that android_demo calls, as documented for
 * LiteRT 2.3.0 (Maven com.google.ai.edge.litert:litert:2.3.0, API reference at
 * https://ai.google.dev/edge/api/tflite/java/org/tensorflow/lite/package-summary), so that CI can
 * compile the app without Google Maven. Every body throws: the real classes come from the AAR.
 */
package org.tensorflow.lite;

import java.nio.ByteBuffer;

public final class Interpreter implements AutoCloseable {
    public static class Options {
        public Options() {
        }

        public Options setNumThreads(int numThreads) {
            throw new UnsupportedOperationException("compile-only stub");
        }

        public Options setUseXNNPACK(boolean useXNNPACK) {
            throw new UnsupportedOperationException("compile-only stub");
        }

        public Options addDelegate(Delegate delegate) {
            throw new UnsupportedOperationException("compile-only stub");
        }
    }

    public Interpreter(ByteBuffer byteBuffer, Options options) {
        throw new UnsupportedOperationException("compile-only stub");
    }

    public void run(Object input, Object output) {
        throw new UnsupportedOperationException("compile-only stub");
    }

    public Tensor getInputTensor(int inputIndex) {
        throw new UnsupportedOperationException("compile-only stub");
    }

    public Tensor getOutputTensor(int outputIndex) {
        throw new UnsupportedOperationException("compile-only stub");
    }

    @Override
    public void close() {
        throw new UnsupportedOperationException("compile-only stub");
    }
}
