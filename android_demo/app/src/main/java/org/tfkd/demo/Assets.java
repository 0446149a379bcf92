package org.tfkd.demo;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.Arrays;
import java.util.List;
import org.tfkd.demo.core.ModelCard;

import android.content.res.AssetManager;

/** What tools/android_export.py put into the app's assets. */
final class Assets {
    static final String CARD = "model_card.json";
    static final String SAMPLE = "sample.png";

    private Assets() {
    }

    static ModelCard card(AssetManager assets) throws IOException {
        InputStream in = assets.open(CARD);
        try {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            byte[] block = new byte[8192];
            for (int n = in.read(block); n > 0; n = in.read(block)) {
                bytes.write(block, 0, n);
            }
            return ModelCard.parse(bytes.toString("UTF-8"));
        } finally {
            in.close();
        }
    }

    static List<String> files(AssetManager assets) throws IOException {
        return Arrays.asList(assets.list(""));
    }
}
