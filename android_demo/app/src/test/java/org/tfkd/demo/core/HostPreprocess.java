package org.tfkd.demo.core;

import java.awt.image.BufferedImage;
import java.io.DataOutputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import javax.imageio.ImageIO;

/**
 * Host harness for the Python cross-check: what the app reads from a model file (printed as
 * JSON), and its preprocessing of an image file for that model, written as little-endian float32
 * (and, for a quantized input, the input bytes).
 *
 * <p>Usage: {@code HostPreprocess IMAGE MODEL.tflite OUT_FLOATS [OUT_BYTES]}
 */
public final class HostPreprocess {
    /**
     * ARGB pixels as Android's Bitmap.getPixels gives them. For grayscale files, the raster's
     * own values: BufferedImage.getRGB would convert linear gray to sRGB, which Android does not.
     */
    static int[] pixels(BufferedImage image) {
        int w = image.getWidth();
        int h = image.getHeight();
        if (image.getRaster().getNumBands() != 1) {
            return image.getRGB(0, 0, w, h, null, 0, w);
        }
        int[] argb = new int[w * h];
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                int v = image.getRaster().getSample(x, y, 0);
                argb[y * w + x] = 0xff000000 | (v << 16) | (v << 8) | v;
            }
        }
        return argb;
    }

    static String describe(ModelInfo m) {
        StringBuilder labels = new StringBuilder();
        for (String label : m.labels) {
            labels.append(labels.length() == 0 ? "" : ", ").append('"').append(label).append('"');
        }
        return String.format(java.util.Locale.ROOT, "{\"height\": %d, \"width\": %d, "
            + "\"channels\": %d, \"mean\": %s, \"std\": %s, \"labels\": [%s], "
            + "\"input_dtype\": \"%s\", \"input_scale\": %s, \"input_zero_point\": %d, "
            + "\"probabilities\": %b}", m.height, m.width, m.channels,
            java.util.Arrays.toString(m.mean), java.util.Arrays.toString(m.std), labels,
            m.inputDtype, Float.toString(m.inputScale), m.inputZeroPoint, m.outputsProbabilities);
    }

    public static void main(String[] args) throws IOException {
        BufferedImage image = ImageIO.read(new File(args[0]));
        if (image == null) {
            throw new IOException("Cannot decode " + args[0]);
        }
        int w = image.getWidth();
        int h = image.getHeight();
        int[] argb = pixels(image);
        ModelInfo model = ModelInfo.read(ByteBuffer.wrap(Files.readAllBytes(
            new File(args[1]).toPath())));
        System.out.println(describe(model));
        float[] input = Preprocessor.normalize(argb, w, h, model);
        try (DataOutputStream out = new DataOutputStream(new FileOutputStream(args[2]))) {
            for (float v : input) {
                out.writeInt(Integer.reverseBytes(Float.floatToIntBits(v)));
            }
        }
        if (args.length > 3 && model.quantizedInput()) {
            byte[] q = Preprocessor.quantize(input, model.inputScale, model.inputZeroPoint,
                model.inputDtype);
            Files.write(new File(args[3]).toPath(), q);
        }
    }
}
