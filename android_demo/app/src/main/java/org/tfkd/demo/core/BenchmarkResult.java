package org.tfkd.demo.core;

import java.util.Locale;

/**
 * The {@code result.json} BenchmarkActivity writes and {@code tfkd/measure/device.py} pulls:
 * {@code {"latency_ms": [...], "init_ms": x, "first_run_ms": y, ...}}, written by hand (no
 * org.json in the plain-Java core).
 */
public final class BenchmarkResult {
    private BenchmarkResult() {
    }

    public static String toJson(double[] latencyMs, double initMs, double firstRunMs, String model,
                                int threads, boolean xnnpack, String delegate) {
        LatencyStats stats = LatencyStats.of(latencyMs);
        StringBuilder out = new StringBuilder("{\"latency_ms\": [");
        for (int i = 0; i < latencyMs.length; i++) {
            out.append(i == 0 ? "" : ", ").append(number(latencyMs[i]));
        }
        out.append("], \"init_ms\": ").append(number(initMs))
            .append(", \"first_run_ms\": ").append(number(firstRunMs))
            .append(", \"mean_ms\": ").append(number(stats.meanMs))
            .append(", \"p50_ms\": ").append(number(stats.p50Ms))
            .append(", \"p90_ms\": ").append(number(stats.p90Ms))
            .append(", \"p99_ms\": ").append(number(stats.p99Ms))
            .append(", \"model\": ").append(Json.quote(model))
            .append(", \"threads\": ").append(threads)
            .append(", \"xnnpack\": ").append(xnnpack)
            .append(", \"delegate\": ").append(Json.quote(delegate))
            .append("}");
        return out.toString();
    }

    private static String number(double value) {
        if (Double.isNaN(value) || Double.isInfinite(value)) {
            throw new IllegalArgumentException("Latency " + value + " is not a finite number");
        }
        return String.format(Locale.ROOT, "%.6f", value);
    }
}
