package org.tfkd.demo.core;

import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The parts of tfkd's {@code model_card.json} the app needs: how to preprocess pixels, the
 * labels, and each exported variant's file and input/output quantization.
 */
public final class ModelCard {
    /** Variants the app prefers when several are bundled: integer I/O first, QAD over PTQ. */
    public static final String[] PREFERENCE = {
        "student_qad_int8_io_uint8", "student_int8_io_uint8", "student_qad_int8_io_int8",
        "student_int8_io_int8", "student_qad_int8", "student_int8", "student_dynamic",
        "student_float16", "student_float32",
    };

    public final int height;
    public final int width;
    public final int channels;
    public final float scale;
    public final float[] mean;
    public final float[] std;
    public final List<String> labels;
    public final Map<String, Variant> variants;

    /** One exported `.tflite` file and its input/output tensors. */
    public static final class Variant {
        public final String name;
        public final String file;
        public final String inputDtype;
        public final float inputScale;
        public final int inputZeroPoint;
        public final String outputDtype;
        public final float outputScale;
        public final int outputZeroPoint;
        /** True when the model ends in a softmax (tfkd's default export); false for logits. */
        public final boolean outputsProbabilities;

        Variant(String name, Map<String, Object> entry) {
            this.name = name;
            this.file = (String) require(entry, "file", name);
            Map<String, Object> input = map(require(entry, "input", name));
            Map<String, Object> output = map(require(entry, "output", name));
            this.inputDtype = (String) require(input, "dtype", name + ".input");
            this.inputScale = floatOr(input.get("scale"), 0f);
            this.inputZeroPoint = (int) floatOr(input.get("zero_point"), 0f);
            this.outputDtype = (String) require(output, "dtype", name + ".output");
            this.outputScale = floatOr(output.get("scale"), 0f);
            this.outputZeroPoint = (int) floatOr(output.get("zero_point"), 0f);
            // Cards written before output kinds existed described logits.
            this.outputsProbabilities = "probabilities".equals(entry.get("output_kind"));
            checkDtype(inputDtype, name + " input");
            checkDtype(outputDtype, name + " output");
        }

        public boolean quantizedInput() {
            return !"float32".equals(inputDtype);
        }
    }

    private ModelCard(Map<String, Object> card) {
        Map<String, Object> prep = map(require(card, "preprocessing", "model card"));
        List<Object> size = list(require(prep, "image_size", "preprocessing"));
        this.height = ((Double) size.get(0)).intValue();
        this.width = ((Double) size.get(1)).intValue();
        this.channels = ((Double) require(prep, "channels", "preprocessing")).intValue();
        this.scale = ((Double) require(prep, "scale", "preprocessing")).floatValue();
        this.mean = floats(list(require(prep, "mean", "preprocessing")));
        this.std = floats(list(require(prep, "std", "preprocessing")));
        if (mean.length != channels && mean.length != 1 || std.length != mean.length) {
            throw new IllegalArgumentException("model card: mean/std have " + mean.length + "/"
                + std.length + " values for " + channels + " channels");
        }
        List<String> names = new ArrayList<String>();
        for (Object label : list(require(card, "labels", "model card"))) {
            names.add((String) label);
        }
        this.labels = Collections.unmodifiableList(names);
        Map<String, Variant> found = new LinkedHashMap<String, Variant>();
        for (Map.Entry<String, Object> e : map(require(card, "variants", "model card")).entrySet()) {
            found.put(e.getKey(), new Variant(e.getKey(), map(e.getValue())));
        }
        this.variants = Collections.unmodifiableMap(found);
    }

    /** Reads a model card; errors name the missing or malformed field. */
    public static ModelCard parse(String json) {
        Object root = Json.parse(json);
        if (!(root instanceof Map)) {
            throw new IllegalArgumentException("model card: expected a JSON object");
        }
        return new ModelCard(map(root));
    }

    /** Per-channel mean (one value may serve every channel). */
    public float meanOf(int channel) {
        return mean[mean.length == 1 ? 0 : channel];
    }

    public float stdOf(int channel) {
        return std[std.length == 1 ? 0 : channel];
    }

    /**
     * The variant to run: the first of {@link #PREFERENCE} whose file is among
     * {@code bundledFiles}, else any bundled student variant.
     */
    public Variant choose(Collection<String> bundledFiles) {
        for (String name : PREFERENCE) {
            Variant v = variants.get(name);
            if (v != null && bundledFiles.contains(v.file)) {
                return v;
            }
        }
        for (Variant v : variants.values()) {
            if (v.name.startsWith("student") && bundledFiles.contains(v.file)) {
                return v;
            }
        }
        throw new IllegalArgumentException("None of the model card's variants " + variants.keySet()
            + " is bundled; copy one with tools/android_export.py.");
    }

    public Variant variantForFile(String file) {
        for (Variant v : variants.values()) {
            if (v.file.equals(file)) {
                return v;
            }
        }
        throw new IllegalArgumentException("The model card has no variant for " + file);
    }

    private static void checkDtype(String dtype, String where) {
        if (!"float32".equals(dtype) && !"int8".equals(dtype) && !"uint8".equals(dtype)) {
            throw new IllegalArgumentException(where + ": unsupported dtype " + dtype);
        }
    }

    private static Object require(Map<String, Object> map, String key, String where) {
        if (!map.containsKey(key) || map.get(key) == null) {
            throw new IllegalArgumentException(where + ": missing field '" + key + "'");
        }
        return map.get(key);
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> map(Object value) {
        return (Map<String, Object>) value;
    }

    @SuppressWarnings("unchecked")
    private static List<Object> list(Object value) {
        return (List<Object>) value;
    }

    private static float floatOr(Object value, float fallback) {
        return value == null ? fallback : ((Double) value).floatValue();
    }

    private static float[] floats(List<Object> values) {
        float[] out = new float[values.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = ((Double) values.get(i)).floatValue();
        }
        return out;
    }
}
