package org.tfkd.demo.core;

import java.util.Arrays;

/**
 * Summary of timed runs (warm-up runs are never passed in): mean, p50, p90, p99, with the same
 * percentile definition as numpy's default (linear interpolation between closest ranks) that
 * tfkd.benchmark uses on the host.
 */
public final class LatencyStats {
    public final int runs;
    public final double meanMs;
    public final double p50Ms;
    public final double p90Ms;
    public final double p99Ms;

    private LatencyStats(double[] samples) {
        double[] sorted = samples.clone();
        Arrays.sort(sorted);
        double sum = 0;
        for (double v : sorted) {
            sum += v;
        }
        this.runs = sorted.length;
        this.meanMs = sum / sorted.length;
        this.p50Ms = percentile(sorted, 50);
        this.p90Ms = percentile(sorted, 90);
        this.p99Ms = percentile(sorted, 99);
    }

    public static LatencyStats of(double[] samplesMs) {
        if (samplesMs.length == 0) {
            throw new IllegalArgumentException("No timed runs to summarise; runs must be >= 1.");
        }
        return new LatencyStats(samplesMs);
    }

    static double percentile(double[] sorted, double q) {
        double rank = q / 100.0 * (sorted.length - 1);
        int lower = (int) Math.floor(rank);
        int upper = Math.min(lower + 1, sorted.length - 1);
        double fraction = rank - lower;
        return sorted[lower] + (sorted[upper] - sorted[lower]) * fraction;
    }
}
