package org.tfkd.demo.core;

/** The k best classes of a score vector. */
public final class TopK {
    public final int[] indices;
    public final float[] scores;

    private TopK(int[] indices, float[] scores) {
        this.indices = indices;
        this.scores = scores;
    }

    /** The {@code k} highest scores, highest first; ties keep the lower index first. */
    public static TopK of(float[] scores, int k) {
        int n = Math.min(k, scores.length);
        int[] best = new int[n];
        float[] values = new float[n];
        boolean[] taken = new boolean[scores.length];
        for (int rank = 0; rank < n; rank++) {
            int arg = -1;
            for (int i = 0; i < scores.length; i++) {
                if (!taken[i] && (arg < 0 || scores[i] > scores[arg])) {
                    arg = i;
                }
            }
            taken[arg] = true;
            best[rank] = arg;
            values[rank] = scores[arg];
        }
        return new TopK(best, values);
    }

    /** Softmax of logits, for showing confidences (the model outputs logits). */
    public static float[] softmax(float[] logits) {
        float max = Float.NEGATIVE_INFINITY;
        for (float v : logits) {
            max = Math.max(max, v);
        }
        double sum = 0;
        double[] exp = new double[logits.length];
        for (int i = 0; i < logits.length; i++) {
            exp[i] = Math.exp(logits[i] - max);
            sum += exp[i];
        }
        float[] out = new float[logits.length];
        for (int i = 0; i < logits.length; i++) {
            out[i] = (float) (exp[i] / sum);
        }
        return out;
    }
}
