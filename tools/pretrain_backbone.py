"""Pretrains a `keras.applications` backbone on an image folder and saves its weights (no head)
as an `.h5` file that `--teacher_weights=PATH` loads by layer name.

For when ImageNet weights are not an option (no network, another domain, a licence): pretrain
on a large related folder, then distil on your own photos:

    python -m tools.pretrain_backbone --dataset=folder:/data/related \
        --model=keras_applications:EfficientNetV2B0 --image_size=96,96 --epochs=12 \
        --out=backbone.h5
"""

from pipelines import console  # noqa: F401, I001  (first: imports TensorFlow quietly)

from absl import app, flags

import tfkd
from tfkd import files
from tfkd.models import pretrained
from tfkd.distill import training
from tfkd.keras import keras

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", None, "folder:PATH (or any tfkd dataset) to pretrain on.")
flags.DEFINE_string("model", "keras_applications:EfficientNetV2B0", "Backbone to pretrain.")
flags.DEFINE_list("image_size", ["96", "96"], "H,W of the pretraining images.")
flags.DEFINE_integer("epochs", 12, "Training epochs.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate (Adam, cosine decay).")
flags.DEFINE_string("out", None, "The .h5 weights file to write.")
flags.DEFINE_integer("seed", 0, "Seed.")


def main(argv):
    del argv
    splits = tfkd.data.load(FLAGS.dataset, image_size=FLAGS.image_size, seed=FLAGS.seed)
    keras.utils.set_random_seed(FLAGS.seed)
    model = pretrained.build(
        FLAGS.model, splits.preprocessing.input_shape, splits.num_classes, splits.preprocessing
    )
    batches = tfkd.data.batches(
        splits.train,
        splits.preprocessing,
        FLAGS.batch_size,
        shuffle=True,
        augmentation=tfkd.data.Augmentation(),
        seed=FLAGS.seed,
    )
    validation = tfkd.data.batches(splits.validation, splits.preprocessing, FLAGS.batch_size)
    training.train_classifier(
        model,
        batches,
        epochs=FLAGS.epochs,
        learning_rate=FLAGS.learning_rate,
        validation=validation,
        verbose=0,
        callbacks=[tfkd.progress.TrainingProgress("pretrain", batch_size=FLAGS.batch_size)],
    )
    accuracy = tfkd.tasks.classification.keras_accuracy(model, validation)
    backbone = keras.Model(model.input, model.get_layer(pretrained.HEAD_LAYERS[0]).input)
    with files.atomic_path(FLAGS.out) as tmp:  # keeps the .h5 extension: HDF5 weights
        backbone.save_weights(tmp)
    print(
        f"{FLAGS.model}: validation accuracy {accuracy:.4f} on {splits.name}; backbone "
        f"weights written to {FLAGS.out}"
    )


if __name__ == "__main__":
    flags.mark_flags_as_required(["dataset", "out"])
    app.run(main)
