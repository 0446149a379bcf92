package org.tfkd.demo;

import java.io.IOException;
import java.io.InputStream;
import java.util.Locale;
import org.tfkd.demo.core.ModelCard;
import org.tfkd.demo.core.ModelInfo;
import org.tfkd.demo.core.Preprocessor;
import org.tfkd.demo.core.TopK;

import android.app.Activity;
import android.content.Intent;
import android.graphics.Bitmap;
import android.graphics.BitmapFactory;
import android.os.Bundle;
import android.provider.MediaStore;
import android.view.View;
import android.widget.Button;
import android.widget.ImageView;
import android.widget.TextView;

/** Classifies the bundled sample, a gallery image or a camera snapshot with the bundled model. */
public class MainActivity extends Activity {
    private static final int PICK_IMAGE = 1;
    private static final int TAKE_PHOTO = 2;
    private static final int TOP_K = 3;

    private ModelCard.Variant variant;
    private Classifier classifier;
    private ImageView imageView;
    private TextView resultView;

    @Override
    protected void onCreate(Bundle state) {
        super.onCreate(state);
        setContentView(R.layout.activity_main);
        imageView = (ImageView) findViewById(R.id.image);
        resultView = (TextView) findViewById(R.id.result);
        try {
            variant = Assets.card(getAssets()).choose(Assets.files(getAssets()));
            // Labels, normalisation and quantization come from the model file's metadata.
            classifier = new Classifier(Runtime.mapAsset(getAssets().openFd(variant.file)), 2,
                true, "cpu");
        } catch (IOException | RuntimeException e) {
            resultView.setText(getString(R.string.no_model, e.getMessage()));
            return;
        }
        ((Button) findViewById(R.id.sample)).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View view) {
                classifySample();
            }
        });
        ((Button) findViewById(R.id.gallery)).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View view) {
                Intent pick = new Intent(Intent.ACTION_GET_CONTENT).setType("image/*");
                startActivityForResult(pick, PICK_IMAGE);
            }
        });
        ((Button) findViewById(R.id.camera)).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View view) {
                // Without EXTRA_OUTPUT the camera returns a thumbnail: no storage permission.
                startActivityForResult(new Intent(MediaStore.ACTION_IMAGE_CAPTURE), TAKE_PHOTO);
            }
        });
        classifySample();
    }

    private void classifySample() {
        try {
            InputStream in = getAssets().open(Assets.SAMPLE);
            try {
                classify(BitmapFactory.decodeStream(in));
            } finally {
                in.close();
            }
        } catch (IOException e) {
            resultView.setText(getString(R.string.no_sample, e.getMessage()));
        }
    }

    @Override
    protected void onActivityResult(int requestCode, int resultCode, Intent data) {
        super.onActivityResult(requestCode, resultCode, data);
        if (resultCode != RESULT_OK || data == null) {
            return;
        }
        try {
            if (requestCode == PICK_IMAGE && data.getData() != null) {
                InputStream in = getContentResolver().openInputStream(data.getData());
                try {
                    classify(BitmapFactory.decodeStream(in));
                } finally {
                    in.close();
                }
            } else if (requestCode == TAKE_PHOTO && data.getExtras() != null) {
                classify((Bitmap) data.getExtras().get("data"));
            }
        } catch (IOException e) {
            resultView.setText(getString(R.string.unreadable, e.getMessage()));
        }
    }

    private void classify(final Bitmap bitmap) {
        if (bitmap == null) {
            resultView.setText(getString(R.string.unreadable, "not an image"));
            return;
        }
        imageView.setImageBitmap(bitmap);
        new Thread(new Runnable() {
            @Override
            public void run() {
                int w = bitmap.getWidth();
                int h = bitmap.getHeight();
                int[] argb = new int[w * h];
                bitmap.getPixels(argb, 0, w, 0, 0, w, h);
                long start = System.nanoTime();
                float[] input = Preprocessor.normalize(argb, w, h, classifier.model);
                long preprocessed = System.nanoTime();
                final float[] outputs;
                synchronized (MainActivity.this) {
                    outputs = classifier.outputs(input);
                }
                long done = System.nanoTime();
                final String text = describe(outputs, (preprocessed - start) / 1e6,
                    (done - preprocessed) / 1e6);
                runOnUiThread(new Runnable() {
                    @Override
                    public void run() {
                        resultView.setText(text);
                    }
                });
            }
        }).start();
    }

    private String describe(float[] outputs, double preprocessMs, double inferenceMs) {
        ModelInfo model = classifier.model;
        float[] probabilities = model.outputsProbabilities ? outputs : TopK.softmax(outputs);
        TopK top = TopK.of(probabilities, TOP_K);
        StringBuilder text = new StringBuilder();
        for (int i = 0; i < top.indices.length; i++) {
            text.append(String.format(Locale.ROOT, "%s  %.1f%%\n", model.labels.get(top.indices[i]),
                100 * top.scores[i]));
        }
        text.append(String.format(Locale.ROOT,
            "\n%s\npreprocess %.2f ms, inference %.2f ms (single run, 2 threads; use "
                + "BenchmarkActivity for latency statistics)", variant.file, preprocessMs,
            inferenceMs));
        return text.toString();
    }

    @Override
    protected void onDestroy() {
        if (classifier != null) {
            classifier.close();
        }
        super.onDestroy();
    }
}
