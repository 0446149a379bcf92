package org.tfkd.demo.core;

import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The app's view of tfkd's {@code model_card.json}: which exported variants exist and in which
 * files, to choose the one to run. Everything needed to run it (input size, normalisation,
 * quantization, labels, output kind) is read from the model file itself ({@link ModelInfo}); the
 * card keeps the richer record (accuracy, provenance) for people.
 */
public final class ModelCard {
    /** Variants the app prefers when several are bundled: integer I/O first, QAD over PTQ. */
    public static final String[] PREFERENCE = {
        "student_qad_int8_io_uint8", "student_int8_io_uint8", "student_qad_int8_io_int8",
        "student_int8_io_int8", "student_qad_int8", "student_int8", "student_dynamic",
        "student_float16", "student_float32",
    };

    public final Map<String, Variant> variants;

    /** One exported {@code .tflite} file. */
    public static final class Variant {
        public final String name;
        public final String file;

        Variant(String name, Map<String, Object> entry) {
            this.name = name;
            this.file = (String) require(entry, "file", name);
        }
    }

    private ModelCard(Map<String, Object> card) {
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
}
