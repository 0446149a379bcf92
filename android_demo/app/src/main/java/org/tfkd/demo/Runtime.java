package org.tfkd.demo;

import java.io.Closeable;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import org.tensorflow.lite.Delegate;
import org.tensorflow.lite.Interpreter;
import org.tensorflow.lite.Tensor;

import android.content.res.AssetFileDescriptor;

/**
 * One LiteRT interpreter with the chosen threads, XNNPACK switch and delegate, on a
 * memory-mapped model (assets are stored uncompressed so they can be mapped).
 */
final class Runtime implements Closeable {
    final Interpreter interpreter;
    private final Delegate delegate;
    final String delegateName;

    Runtime(MappedByteBuffer model, int threads, boolean xnnpack, String delegateName) {
        Interpreter.Options options = new Interpreter.Options();
        options.setNumThreads(threads);
        options.setUseXNNPACK(xnnpack);
        this.delegate = createDelegate(delegateName);
        if (delegate != null) {
            options.addDelegate(delegate);
        }
        this.delegateName = delegateName;
        this.interpreter = new Interpreter(model, options);
    }

    /**
     * GPU and NNAPI delegates are looked up by name: they live in optional artifacts
     * (litert-gpu) or may be absent from a LiteRT build, and a missing one must say so rather
     * than crash the app at class-loading time.
     */
    private static Delegate createDelegate(String name) {
        String className;
        if ("cpu".equals(name)) {
            return null;
        } else if ("gpu".equals(name)) {
            className = "org.tensorflow.lite.gpu.GpuDelegate";
        } else if ("nnapi".equals(name)) {
            className = "org.tensorflow.lite.nnapi.NnApiDelegate";
        } else {
            throw new IllegalArgumentException("Unknown delegate '" + name
                + "': use cpu, gpu or nnapi.");
        }
        try {
            return (Delegate) Class.forName(className).getConstructor().newInstance();
        } catch (ClassNotFoundException e) {
            throw new IllegalStateException("The " + name + " delegate is not in this build ("
                + className + " missing); add its LiteRT artifact or use cpu.", e);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("Cannot create the " + name + " delegate: " + e, e);
        }
    }

    static MappedByteBuffer mapAsset(AssetFileDescriptor descriptor) throws IOException {
        FileInputStream stream = new FileInputStream(descriptor.getFileDescriptor());
        try {
            return stream.getChannel().map(FileChannel.MapMode.READ_ONLY,
                descriptor.getStartOffset(), descriptor.getDeclaredLength());
        } finally {
            stream.close();
        }
    }

    static MappedByteBuffer mapFile(String path) throws IOException {
        RandomAccessFile file = new RandomAccessFile(path, "r");
        try {
            return file.getChannel().map(FileChannel.MapMode.READ_ONLY, 0, file.length());
        } finally {
            file.close();
        }
    }

    static ByteBuffer buffer(Tensor tensor) {
        return ByteBuffer.allocateDirect(tensor.numBytes()).order(ByteOrder.nativeOrder());
    }

    @Override
    public void close() {
        interpreter.close();
        if (delegate instanceof Closeable) {
            try {
                ((Closeable) delegate).close();
            } catch (IOException ignored) {
                // Closing a delegate frees native memory; there is nothing to recover.
            }
        }
    }
}
