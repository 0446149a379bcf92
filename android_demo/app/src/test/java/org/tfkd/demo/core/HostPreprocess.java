package org.tfkd.demo.core;

import java.awt.image.BufferedImage;
import java.io.DataOutputStream;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import javax.imageio.ImageIO;

/**
 * Host harness for the Python cross-check: the app's preprocessing of an image file, written as
 * little-endian float32 (and, for a quantized variant, the input bytes).
 *
 * <p>Usage: {@code HostPreprocess IMAGE MODEL_CARD VARIANT OUT_FLOATS [OUT_BYTES]}
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

    public static void main(String[] args) throws IOException {
        BufferedImage image = ImageIO.read(new File(args[0]));
        if (image == null) {
            throw new IOException("Cannot decode " + args[0]);
        }
        int w = image.getWidth();
        int h = image.getHeight();
        int[] argb = pixels(image);
        ModelCard card = ModelCard.parse(
            new String(Files.readAllBytes(new File(args[1]).toPath()), StandardCharsets.UTF_8));
        float[] input = Preprocessor.normalize(argb, w, h, card);
        try (DataOutputStream out = new DataOutputStream(new FileOutputStream(args[3]))) {
            for (float v : input) {
                out.writeInt(Integer.reverseBytes(Float.floatToIntBits(v)));
            }
        }
        ModelCard.Variant variant = card.variants.get(args[2]);
        if (args.length > 4 && variant.quantizedInput()) {
            byte[] q = Preprocessor.quantize(input, variant.inputScale, variant.inputZeroPoint,
                variant.inputDtype);
            Files.write(new File(args[4]).toPath(), q);
        }
    }
}
