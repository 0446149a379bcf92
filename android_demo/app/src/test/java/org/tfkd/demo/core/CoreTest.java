package org.tfkd.demo.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.Test;

public class CoreTest {
    static final String CARD = "{\"labels\": [\"cat\"], \"variants\": {"
        + "  \"student_float32\": {\"file\": \"student_float32.tflite\"},"
        + "  \"student_int8_io_uint8\": {\"file\": \"student_int8_io_uint8.tflite\"}}}";
    /** The model tools/android_export.py bundled: the README digits run's QAD uint8 student. */
    static final String BUNDLED = System.getProperty("tfkd.assets", "src/main/assets")
        + "/student_qad_int8_io_uint8.tflite";

    @Test
    public void jsonReadsNestedValuesAndEscapes() {
        @SuppressWarnings("unchecked")
        Map<String, Object> root = (Map<String, Object>) Json.parse(
            "{\"a\": [1, -2.5e1, true, null, \"x\\n\\u0041\"], \"b\": {}}");
        List<?> a = (List<?>) root.get("a");
        assertEquals(1.0, (Double) a.get(0), 0);
        assertEquals(-25.0, (Double) a.get(1), 0);
        assertEquals(Boolean.TRUE, a.get(2));
        assertEquals(null, a.get(3));
        assertEquals("x\nA", a.get(4));
        assertTrue(((Map<?, ?>) root.get("b")).isEmpty());
    }

    @Test
    public void jsonRejectsBrokenText() {
        for (String bad : new String[] {"{\"a\": }", "[1, 2", "{\"a\" 1}", "\"open", "[1] x"}) {
            try {
                Json.parse(bad);
                fail("accepted " + bad);
            } catch (IllegalArgumentException expected) {
                assertTrue(expected.getMessage().startsWith("Invalid JSON at character"));
            }
        }
    }

    @Test
    public void modelCardVariantChoice() {
        ModelCard card = ModelCard.parse(CARD);
        ModelCard.Variant chosen = card.choose(Arrays.asList("student_float32.tflite",
            "student_int8_io_uint8.tflite"));
        assertEquals("student_int8_io_uint8", chosen.name);
        assertEquals("student_float32",
            card.choose(Arrays.asList("student_float32.tflite")).name);
        try {
            card.choose(Arrays.asList("other.tflite"));
            fail("chose a variant that is not bundled");
        } catch (IllegalArgumentException expected) {
            assertTrue(expected.getMessage().contains("android_export.py"));
        }
    }

    @Test
    public void modelCardErrorsNameTheMissingField() {
        try {
            ModelCard.parse("{\"labels\": []}");
            fail("accepted a card without variants");
        } catch (IllegalArgumentException expected) {
            assertEquals("model card: missing field 'variants'", expected.getMessage());
        }
    }

    @Test
    public void modelInfoReadsTensorsAndMetadataFromTheBundledModel() throws Exception {
        ModelInfo model = ModelInfo.read(ByteBuffer.wrap(Files.readAllBytes(Paths.get(BUNDLED))));
        assertEquals(8, model.height);
        assertEquals(8, model.width);
        assertEquals(1, model.channels);
        assertEquals(Arrays.asList("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"),
            model.labels);
        // digits: (raw / 16 - 0.5) / 0.5 = (raw - 8) / 8, and the uint8 input takes raw values.
        assertArrayEquals(new float[] {8f}, model.mean, 1e-6f);
        assertArrayEquals(new float[] {8f}, model.std, 1e-6f);
        assertEquals("uint8", model.inputDtype);
        assertEquals(0.125f, model.inputScale, 1e-9f);
        assertEquals(8, model.inputZeroPoint);
        assertTrue(model.outputsProbabilities);
        float[] normalized = Preprocessor.normalize(new int[] {0xff101010}, 1, 1, 1, 1, 1,
            model.mean, model.std);
        assertArrayEquals(new byte[] {16}, Preprocessor.quantize(normalized, model.inputScale,
            model.inputZeroPoint, model.inputDtype));
    }

    @Test
    public void modelInfoRefusesAFileWithoutMetadata() throws Exception {
        byte[] model = Files.readAllBytes(Paths.get(BUNDLED));
        // Rename the metadata entry: the file is still a model, without TFLITE_METADATA.
        String text = new String(model, StandardCharsets.ISO_8859_1);
        model[text.indexOf("TFLITE_METADATA")] = 'X';
        try {
            ModelInfo.read(ByteBuffer.wrap(model));
            fail("read a model without metadata");
        } catch (IllegalArgumentException expected) {
            assertTrue(expected.getMessage().startsWith("The model has no TFLite metadata"));
        }
    }

    @Test
    public void normalizeAppliesMeanAndStdPerChannel() {
        int[] argb = new int[6];
        for (int i = 0; i < 6; i++) {
            argb[i] = 0xff000000 | (i * 40 << 16) | (i * 20 << 8) | (255 - i);
        }
        float[] mean = {127.5f, 63.75f, 0f};
        float[] std = {127.5f, 63.75f, 510f};
        float[] got = Preprocessor.normalize(argb, 3, 2, 2, 3, 3, mean, std);
        for (int i = 0; i < 6; i++) {
            float[] raw = {i * 40, i * 20, 255 - i};
            for (int c = 0; c < 3; c++) {
                assertEquals((raw[c] - mean[c]) / std[c], got[3 * i + c], 1e-6f);
            }
        }
    }

    @Test
    public void bilinearResizeUsesHalfPixelCentres() {
        // 1x2 -> 1x4: sample positions -0.25, 0.25, 0.75, 1.25 (clamped), as tf.image.resize.
        float[] got = Preprocessor.resizeBilinear(new float[] {10f, 30f}, 1, 2, 1, 1, 4);
        assertArrayEquals(new float[] {10f, 15f, 25f, 30f}, got, 1e-6f);
        // 4 -> 2: the centres fall between source pixels 0/1 and 2/3.
        float[] down = Preprocessor.resizeBilinear(new float[] {0f, 10f, 20f, 40f}, 1, 4, 1, 1, 2);
        assertArrayEquals(new float[] {5f, 30f}, down, 1e-6f);
    }

    @Test
    public void quantizeRoundsHalfToEvenAndClamps() {
        byte[] q = Preprocessor.quantize(new float[] {0.5f, 1.5f, 2.5f, -1000f, 1000f}, 1f, 0,
            "int8");
        assertArrayEquals(new byte[] {0, 2, 2, -128, 127}, q);
        byte[] u = Preprocessor.quantize(new float[] {0f, 1f, -1f}, 0.0078125f, 128, "uint8");
        assertEquals(128, u[0] & 0xff);
        assertEquals(255, u[1] & 0xff);
        assertEquals(0, u[2] & 0xff);
        float[] back = Preprocessor.dequantize(new byte[] {(byte) 200, 3}, 0.1f, 3, "uint8");
        assertArrayEquals(new float[] {19.7f, 0f}, back, 1e-5f);
    }

    @Test
    public void topKOrdersScoresAndKeepsTiesStable() {
        TopK top = TopK.of(new float[] {0.1f, 0.7f, 0.7f, -1f}, 3);
        assertArrayEquals(new int[] {1, 2, 0}, top.indices);
        float[] p = TopK.softmax(new float[] {0f, (float) Math.log(3)});
        assertArrayEquals(new float[] {0.25f, 0.75f}, p, 1e-6f);
    }

    @Test
    public void latencyPercentilesMatchNumpy() {
        double[] samples = {10, 9, 8, 7, 6, 5, 4, 3, 2, 1};
        LatencyStats stats = LatencyStats.of(samples);
        // numpy.percentile([1..10], [50, 90, 99]) = 5.5, 9.1, 9.91
        assertEquals(5.5, stats.meanMs, 1e-12);
        assertEquals(5.5, stats.p50Ms, 1e-12);
        assertEquals(9.1, stats.p90Ms, 1e-12);
        assertEquals(9.91, stats.p99Ms, 1e-12);
    }

    @Test
    public void benchmarkResultIsJsonWithTheTimedRuns() {
        String json = BenchmarkResult.toJson(new double[] {2.0, 4.0}, 12.5, 7.25,
            "/sdcard/m \"1\".tflite", 4, false, "cpu");
        @SuppressWarnings("unchecked")
        Map<String, Object> parsed = (Map<String, Object>) Json.parse(json);
        assertEquals(Arrays.asList(2.0, 4.0), parsed.get("latency_ms"));
        assertEquals(12.5, (Double) parsed.get("init_ms"), 0);
        assertEquals(7.25, (Double) parsed.get("first_run_ms"), 0);
        assertEquals(3.0, (Double) parsed.get("p50_ms"), 1e-9);
        assertEquals("/sdcard/m \"1\".tflite", parsed.get("model"));
        assertEquals(Boolean.FALSE, parsed.get("xnnpack"));
        try {
            BenchmarkResult.toJson(new double[0], 1, 1, "m", 1, true, "cpu");
            fail("wrote a result without timed runs");
        } catch (IllegalArgumentException expected) {
            assertTrue(expected.getMessage().contains("runs must be >= 1"));
        }
    }
}
