package org.tfkd.demo;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.MappedByteBuffer;
import org.tensorflow.lite.DataType;
import org.tfkd.demo.core.BenchmarkResult;

import android.app.Activity;
import android.content.Intent;
import android.os.Bundle;
import android.util.Log;
import android.widget.TextView;

/**
 * Latency from inside a foreground app, started over adb by tools/android_benchmark.py:
 *
 * <pre>
 * adb shell am start -W -n org.tfkd.demo/.BenchmarkActivity --es model /sdcard/.../m.tflite \
 *     --ei threads 4 --ei warmup 10 --ei runs 50 --ez xnnpack true --es delegate cpu
 * </pre>
 *
 * Writes {@code result.json} (see BenchmarkResult) into the app's external files directory,
 * under a temporary name first so that a poller never reads half a file. Without a model extra
 * it measures the bundled model. Inputs are a fixed pseudo-random pattern: latency does not
 * depend on the pixel values.
 */
public class BenchmarkActivity extends Activity {
    private static final String TAG = "tfkd";

    @Override
    protected void onCreate(Bundle state) {
        super.onCreate(state);
        final TextView status = new TextView(this);
        status.setText(R.string.benchmarking);
        setContentView(status);
        final Intent intent = getIntent();
        new Thread(new Runnable() {
            @Override
            public void run() {
                final String message = measure(intent);
                runOnUiThread(new Runnable() {
                    @Override
                    public void run() {
                        status.setText(message);
                        finish();
                    }
                });
            }
        }).start();
    }

    private String measure(Intent intent) {
        String model = intent.getStringExtra("model");
        int threads = intent.getIntExtra("threads", 1);
        int warmup = intent.getIntExtra("warmup", 10);
        int runs = intent.getIntExtra("runs", 50);
        boolean xnnpack = intent.getBooleanExtra("xnnpack", true);
        String delegate = intent.getStringExtra("delegate");
        if (delegate == null) {
            delegate = "cpu";
        }
        File dir = getExternalFilesDir(null);
        File result = new File(dir, "result.json");
        try {
            if (threads < 1 || runs < 1 || warmup < 0) {
                throw new IllegalArgumentException("threads and runs must be >= 1, warmup >= 0");
            }
            MappedByteBuffer buffer;
            if (model == null) {
                model = Assets.card(getAssets()).choose(Assets.files(getAssets())).file;
                buffer = Runtime.mapAsset(getAssets().openFd(model));
            } else {
                buffer = Runtime.mapFile(model);
            }
            long start = System.nanoTime();
            Runtime runtime = new Runtime(buffer, threads, xnnpack, delegate);
            ByteBuffer input = Runtime.buffer(runtime.interpreter.getInputTensor(0));
            ByteBuffer output = Runtime.buffer(runtime.interpreter.getOutputTensor(0));
            fill(input, runtime.interpreter.getInputTensor(0).dataType() == DataType.FLOAT32);
            double initMs = (System.nanoTime() - start) / 1e6;
            double firstRunMs = timedRun(runtime, input, output);
            for (int i = 0; i < warmup; i++) {
                timedRun(runtime, input, output);
            }
            double[] latency = new double[runs];
            for (int i = 0; i < runs; i++) {
                latency[i] = timedRun(runtime, input, output);
            }
            runtime.close();
            String json = BenchmarkResult.toJson(latency, initMs, firstRunMs, model, threads,
                xnnpack, delegate);
            File tmp = new File(dir, "result.json.tmp");
            FileOutputStream out = new FileOutputStream(tmp);
            try {
                out.write(json.getBytes("UTF-8"));
            } finally {
                out.close();
            }
            if (!tmp.renameTo(result)) {
                throw new IOException("cannot rename " + tmp + " to " + result);
            }
            Log.i(TAG, "wrote " + result);
            return json;
        } catch (IOException | RuntimeException e) {
            Log.e(TAG, "benchmark failed", e);
            return "Benchmark failed: " + e;
        }
    }

    /** Pseudo-random bytes, or floats in [-1, 1) (random bit patterns could be NaN). */
    private static void fill(ByteBuffer input, boolean floats) {
        long state = 42;
        input.rewind();
        while (input.remaining() >= (floats ? 4 : 1)) {
            state = state * 6364136223846793005L + 1442695040888963407L;
            if (floats) {
                input.putFloat((state >>> 40) / (float) (1L << 23) - 1f);
            } else {
                input.put((byte) (state >>> 56));
            }
        }
        input.rewind();
    }

    private static double timedRun(Runtime runtime, ByteBuffer input, ByteBuffer output) {
        input.rewind();
        output.rewind();
        long start = System.nanoTime();
        runtime.interpreter.run(input, output);
        return (System.nanoTime() - start) / 1e6;
    }
}
