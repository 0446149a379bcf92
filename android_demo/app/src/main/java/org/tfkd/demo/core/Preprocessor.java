package org.tfkd.demo.core;

/**
 * Pixels to model input, exactly as tfkd's Python side does it: bilinear resize with half-pixel
 * centres (TensorFlow's {@code tf.image.resize}, no antialiasing) rounded half to even back to
 * 0..255 (as tfkd.data stores resized images), then {@code (pixel - mean) / std} per channel with
 * the model metadata's normalisation, then, for int8/uint8 inputs, quantization with the input
 * tensor's own scale and zero point (round half to even, as numpy). For a uint8 model exported by
 * tfkd that quantization gives back the pixel bytes themselves.
 */
public final class Preprocessor {
    private Preprocessor() {
    }

    /** {@link #normalize(int[], int, int, int, int, int, float[], float[])} for {@code model}. */
    public static float[] normalize(int[] argb, int srcWidth, int srcHeight, ModelInfo model) {
        return normalize(argb, srcWidth, srcHeight, model.height, model.width, model.channels,
            model.mean, model.std);
    }

    /**
     * Normalised HWC floats for an ARGB image ({@code Bitmap.getPixels} or
     * {@code BufferedImage.getRGB} order: row by row); {@code mean} and {@code std} per channel in
     * raw pixel units.
     *
     * <p>One-channel models take the luma {@code 0.299 R + 0.587 G + 0.114 B}; a JPEG decoded to
     * grayscale by libjpeg may differ from it by one level.
     */
    public static float[] normalize(int[] argb, int srcWidth, int srcHeight, int height, int width,
                                    int channels, float[] mean, float[] std) {
        if (argb.length != srcWidth * srcHeight) {
            throw new IllegalArgumentException("Image has " + argb.length + " pixels, expected "
                + srcWidth + "x" + srcHeight);
        }
        float[] raw = channels(argb, channels);
        float[] resized = resizeBilinear(raw, srcHeight, srcWidth, channels, height, width);
        for (int i = 0; i < resized.length; i++) {
            int c = i % channels;
            float pixel = (float) Math.max(0, Math.min(255, Math.rint(resized[i])));
            resized[i] = (pixel - mean[c]) / std[c];
        }
        return resized;
    }

    static float[] channels(int[] argb, int channels) {
        float[] out = new float[argb.length * channels];
        for (int p = 0; p < argb.length; p++) {
            int r = (argb[p] >> 16) & 0xff;
            int g = (argb[p] >> 8) & 0xff;
            int b = argb[p] & 0xff;
            if (channels == 3) {
                out[3 * p] = r;
                out[3 * p + 1] = g;
                out[3 * p + 2] = b;
            } else if (channels == 1) {
                out[p] = Math.round(0.299f * r + 0.587f * g + 0.114f * b);
            } else {
                throw new IllegalArgumentException("Models with " + channels
                    + " channels are not images the app can feed (1 or 3).");
            }
        }
        return out;
    }

    /** TensorFlow's bilinear resize (half-pixel centres) of an HWC float image. */
    public static float[] resizeBilinear(float[] in, int inH, int inW, int channels, int outH,
                                         int outW) {
        if (inH == outH && inW == outW) {
            return in.clone();
        }
        float scaleY = (float) inH / outH;
        float scaleX = (float) inW / outW;
        int[] x0 = new int[outW];
        int[] x1 = new int[outW];
        float[] xLerp = new float[outW];
        for (int x = 0; x < outW; x++) {
            float source = (x + 0.5f) * scaleX - 0.5f;
            float floor = (float) Math.floor(source);
            x0[x] = Math.max((int) floor, 0);
            x1[x] = Math.min((int) Math.ceil(source), inW - 1);
            xLerp[x] = source - floor;
        }
        float[] out = new float[outH * outW * channels];
        for (int y = 0; y < outH; y++) {
            float source = (y + 0.5f) * scaleY - 0.5f;
            float floor = (float) Math.floor(source);
            int y0 = Math.max((int) floor, 0);
            int y1 = Math.min((int) Math.ceil(source), inH - 1);
            float yLerp = source - floor;
            for (int x = 0; x < outW; x++) {
                for (int c = 0; c < channels; c++) {
                    float topLeft = in[(y0 * inW + x0[x]) * channels + c];
                    float topRight = in[(y0 * inW + x1[x]) * channels + c];
                    float bottomLeft = in[(y1 * inW + x0[x]) * channels + c];
                    float bottomRight = in[(y1 * inW + x1[x]) * channels + c];
                    float top = topLeft + (topRight - topLeft) * xLerp[x];
                    float bottom = bottomLeft + (bottomRight - bottomLeft) * xLerp[x];
                    out[(y * outW + x) * channels + c] = top + (bottom - top) * yLerp;
                }
            }
        }
        return out;
    }

    /**
     * {@code clamp(rint(x / scale + zeroPoint))} as int8 or uint8 bytes (uint8 values 128..255
     * are stored as the same bit pattern, as the interpreter reads them).
     */
    public static byte[] quantize(float[] values, float scale, int zeroPoint, String dtype) {
        if (!(scale > 0)) {
            throw new IllegalArgumentException("Quantization scale must be > 0, got " + scale);
        }
        int lo;
        int hi;
        if ("int8".equals(dtype)) {
            lo = -128;
            hi = 127;
        } else if ("uint8".equals(dtype)) {
            lo = 0;
            hi = 255;
        } else {
            throw new IllegalArgumentException("quantize: dtype must be int8 or uint8, got " + dtype);
        }
        byte[] out = new byte[values.length];
        for (int i = 0; i < values.length; i++) {
            double q = Math.rint(values[i] / scale + zeroPoint);
            out[i] = (byte) (int) Math.max(lo, Math.min(hi, q));
        }
        return out;
    }

    /** Float values of quantized output bytes: {@code (q - zeroPoint) * scale}. */
    public static float[] dequantize(byte[] values, float scale, int zeroPoint, String dtype) {
        float[] out = new float[values.length];
        boolean unsigned = "uint8".equals(dtype);
        for (int i = 0; i < values.length; i++) {
            int q = unsigned ? values[i] & 0xff : values[i];
            out[i] = (q - zeroPoint) * scale;
        }
        return out;
    }
}
