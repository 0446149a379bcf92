package org.tfkd.demo.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * Everything the app needs to run a classifier, read from the {@code .tflite} file itself: the
 * input size and quantization from the model's tensors, and the labels, normalisation and output
 * kind from its TFLite metadata (as tfkd.metadata writes it and MediaPipe Tasks reads it; the
 * labels file travels in the zip appended to the model).
 *
 * <p>Plain Java over the FlatBuffers wire format, so the core stays testable on the host.
 */
public final class ModelInfo {
    /** Tensor types of the TFLite schema. */
    private static final int FLOAT32 = 0;
    private static final int UINT8 = 3;
    private static final int INT8 = 9;
    private static final int NORMALIZATION_OPTIONS = 1;
    private static final int TENSOR_AXIS_LABELS = 2;

    public final int height;
    public final int width;
    public final int channels;
    /** Per channel, in raw pixel units: the model input is {@code (pixel - mean) / std}. */
    public final float[] mean;
    public final float[] std;
    public final List<String> labels;
    public final String inputDtype;
    public final float inputScale;
    public final int inputZeroPoint;
    public final String outputDtype;
    public final float outputScale;
    public final int outputZeroPoint;
    /** True when the model ends in a softmax; false when it emits logits. */
    public final boolean outputsProbabilities;

    private ModelInfo(Table input, Table output, Table inputMeta, Table outputMeta,
                      List<String> labels) {
        int[] shape = input.ints(0);
        if (shape.length != 4 || (shape[3] != 1 && shape[3] != 3)) {
            throw new IllegalArgumentException("The model's input is not an image (shape "
                + java.util.Arrays.toString(shape) + ")");
        }
        this.height = shape[1];
        this.width = shape[2];
        this.channels = shape[3];
        this.inputDtype = dtype(input.uint8(1));
        this.outputDtype = dtype(output.uint8(1));
        float[] inQ = quantization(input);
        float[] outQ = quantization(output);
        this.inputScale = inQ[0];
        this.inputZeroPoint = (int) inQ[1];
        this.outputScale = outQ[0];
        this.outputZeroPoint = (int) outQ[1];
        float[][] normalization = normalization(inputMeta);
        if (normalization[0].length != channels || normalization[1].length != channels) {
            throw new IllegalArgumentException("The metadata normalises "
                + normalization[0].length + " channel(s); the input has " + channels);
        }
        this.mean = normalization[0];
        this.std = normalization[1];
        this.labels = Collections.unmodifiableList(labels);
        this.outputsProbabilities = "probabilities".equals(outputMeta.string(0));
    }

    public boolean quantizedInput() {
        return !"float32".equals(inputDtype);
    }

    /** Reads a model file's tensors and metadata; {@code IllegalArgumentException} names what is
     * missing. */
    public static ModelInfo read(ByteBuffer file) {
        ByteBuffer model = file.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        model.position(0);
        Table root = Table.root(model, 0);
        Table subgraph = root.tableAt(2, 0);
        Table tensors = subgraph;
        Table input = tensors.tableAt(0, subgraph.ints(1)[0]);
        Table output = tensors.tableAt(0, subgraph.ints(2)[0]);

        int buffer = -1;
        for (int i = 0; i < root.length(6); i++) {
            Table entry = root.tableAt(6, i);
            if ("TFLITE_METADATA".equals(entry.string(0))) {
                buffer = entry.uint32(1);
            }
        }
        if (buffer < 0) {
            throw new IllegalArgumentException("The model has no TFLite metadata: re-export it with"
                + " tfkd (every export writes labels and normalisation into the file).");
        }
        Table data = root.tableAt(4, buffer);
        int start = data.vectorStart(0);
        ByteBuffer metadata = ((ByteBuffer) model.duplicate().position(start)).slice()
            .order(ByteOrder.LITTLE_ENDIAN);
        byte[] identifier = new byte[4];
        ((ByteBuffer) metadata.duplicate().position(4)).get(identifier);
        if (!"M001".equals(new String(identifier, StandardCharsets.US_ASCII))) {
            throw new IllegalArgumentException("The TFLITE_METADATA buffer is not TFLite metadata");
        }
        Table modelMetadata = Table.root(metadata, 0);
        Table subgraphMetadata = modelMetadata.tableAt(3, 0);
        Table inputMeta = subgraphMetadata.tableAt(2, 0);
        Table outputMeta = subgraphMetadata.tableAt(3, 0);
        String labelsFile = null;
        for (int i = 0; i < outputMeta.length(6); i++) {
            Table file2 = outputMeta.tableAt(6, i);
            if (file2.uint8(2) == TENSOR_AXIS_LABELS) {
                labelsFile = file2.string(0);
            }
        }
        if (labelsFile == null) {
            throw new IllegalArgumentException("The metadata attaches no label file to the output");
        }
        List<String> labels = lines(AppendedZip.read(model, labelsFile));
        int classes = output.ints(0)[output.ints(0).length - 1];
        if (labels.size() != classes) {
            throw new IllegalArgumentException("The model emits " + classes + " scores but its "
                + labelsFile + " has " + labels.size() + " labels");
        }
        return new ModelInfo(input, output, inputMeta, outputMeta, labels);
    }

    private static String dtype(int type) {
        switch (type) {
            case FLOAT32:
                return "float32";
            case UINT8:
                return "uint8";
            case INT8:
                return "int8";
            default:
                throw new IllegalArgumentException("Unsupported tensor type " + type
                    + " (the app handles float32, uint8 and int8)");
        }
    }

    /** {scale, zero point} of a tensor, {0, 0} when it is not quantized. */
    private static float[] quantization(Table tensor) {
        Table q = tensor.table(4);
        if (q == null || q.length(2) == 0) {
            return new float[] {0f, 0f};
        }
        return new float[] {q.floats(2)[0], (float) q.longs(3)[0]};
    }

    private static float[][] normalization(Table inputMeta) {
        for (int i = 0; i < inputMeta.length(4); i++) {
            Table unit = inputMeta.tableAt(4, i);
            if (unit.uint8(0) == NORMALIZATION_OPTIONS) {
                Table options = unit.table(1);
                return new float[][] {options.floats(0), options.floats(1)};
            }
        }
        throw new IllegalArgumentException(
            "The metadata has no NormalizationOptions for the input");
    }

    private static List<String> lines(byte[] text) {
        List<String> out = new ArrayList<>();
        for (String line : new String(text, StandardCharsets.UTF_8).split("\n")) {
            if (!line.isEmpty()) {
                out.add(line);
            }
        }
        return out;
    }

    /** A FlatBuffers table: fields by id through its vtable. */
    static final class Table {
        private final ByteBuffer b;
        private final int pos;

        private Table(ByteBuffer b, int pos) {
            this.b = b;
            this.pos = pos;
        }

        static Table root(ByteBuffer b, int offset) {
            return new Table(b, offset + b.getInt(offset));
        }

        private int field(int id) {
            int vtable = pos - b.getInt(pos);
            int size = b.getShort(vtable) & 0xffff;
            int slot = 4 + 2 * id;
            return slot < size ? b.getShort(vtable + slot) & 0xffff : 0;
        }

        private int indirect(int at) {
            return at + b.getInt(at);
        }

        Table table(int id) {
            int o = field(id);
            return o == 0 ? null : new Table(b, indirect(pos + o));
        }

        int length(int id) {
            int o = field(id);
            return o == 0 ? 0 : b.getInt(indirect(pos + o));
        }

        int vectorStart(int id) {
            int o = field(id);
            if (o == 0) {
                throw new IllegalArgumentException("Missing vector field " + id);
            }
            return indirect(pos + o) + 4;
        }

        Table tableAt(int id, int index) {
            if (index >= length(id)) {
                throw new IllegalArgumentException("Field " + id + " has no element " + index);
            }
            return new Table(b, indirect(vectorStart(id) + 4 * index));
        }

        String string(int id) {
            int o = field(id);
            if (o == 0) {
                return null;
            }
            int at = indirect(pos + o);
            byte[] bytes = new byte[b.getInt(at)];
            ((ByteBuffer) b.duplicate().position(at + 4)).get(bytes);
            return new String(bytes, StandardCharsets.UTF_8);
        }

        int uint8(int id) {
            int o = field(id);
            return o == 0 ? 0 : b.get(pos + o) & 0xff;
        }

        int uint32(int id) {
            int o = field(id);
            return o == 0 ? 0 : b.getInt(pos + o);
        }

        int[] ints(int id) {
            int[] out = new int[length(id)];
            for (int i = 0; i < out.length; i++) {
                out[i] = b.getInt(vectorStart(id) + 4 * i);
            }
            return out;
        }

        long[] longs(int id) {
            long[] out = new long[length(id)];
            for (int i = 0; i < out.length; i++) {
                out[i] = b.getLong(vectorStart(id) + 8 * i);
            }
            return out;
        }

        float[] floats(int id) {
            float[] out = new float[length(id)];
            for (int i = 0; i < out.length; i++) {
                out[i] = b.getFloat(vectorStart(id) + 4 * i);
            }
            return out;
        }
    }

    /** Stored (uncompressed) entries of the zip archive appended to a model file. */
    static final class AppendedZip {
        private AppendedZip() {
        }

        static byte[] read(ByteBuffer file, String name) {
            int end = -1;
            for (int at = file.limit() - 22; at >= Math.max(0, file.limit() - 22 - 65535); at--) {
                if (file.getInt(at) == 0x06054b50) {
                    end = at;
                    break;
                }
            }
            if (end < 0) {
                throw new IllegalArgumentException("The model carries no associated files (no zip "
                    + "archive appended); re-export it with tfkd");
            }
            int entries = file.getShort(end + 10) & 0xffff;
            int central = file.getInt(end + 16);
            for (int i = 0, at = central; i < entries; i++) {
                int method = file.getShort(at + 10) & 0xffff;
                int size = file.getInt(at + 20);
                int nameLength = file.getShort(at + 28) & 0xffff;
                int extraLength = file.getShort(at + 30) & 0xffff;
                int commentLength = file.getShort(at + 32) & 0xffff;
                int local = file.getInt(at + 42);
                byte[] entryName = new byte[nameLength];
                ((ByteBuffer) file.duplicate().position(at + 46)).get(entryName);
                if (name.equals(new String(entryName, StandardCharsets.UTF_8))) {
                    if (method != 0) {
                        throw new IllegalArgumentException(name + " is compressed; tfkd stores "
                            + "associated files uncompressed");
                    }
                    int data = local + 30 + (file.getShort(local + 26) & 0xffff)
                        + (file.getShort(local + 28) & 0xffff);
                    byte[] out = new byte[size];
                    ((ByteBuffer) file.duplicate().position(data)).get(out);
                    return out;
                }
                at += 46 + nameLength + extraLength + commentLength;
            }
            throw new IllegalArgumentException("The model's archive has no " + name);
        }
    }
}
