/*
 * COMPILE-ONLY STUB, never packaged into an APK. It declares exactly the part of the LiteRT
 * Java Interpreter API (package org.tensorflow.lite) that android_demo calls, as documented for
 * LiteRT 2.3.0 (Maven com.google.ai.edge.litert:litert:2.3.0, API reference at
 * https://ai.google.dev/edge/api/tflite/java/org/tensorflow/lite/package-summary), so that CI can
 * compile the app without Google Maven. Every body throws: the real classes come from the AAR.
 */
package org.tensorflow.lite;

public enum DataType {
    FLOAT32, INT32, UINT8, INT64, STRING, BOOL, INT16, INT8
}
