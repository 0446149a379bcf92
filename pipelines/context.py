"""What the stages of one run share: its settings, data, run directory and models, the models
loaded from the run directory when a stage needs them."""

import os
from typing import TYPE_CHECKING

import tensorflow as tf
from absl import logging

import tfkd
from pipelines import workers
from pipelines.run import RunDirectory
from tfkd.distill import training
from tfkd.keras import keras
from tfkd.tasks.classification import keras_accuracy

if TYPE_CHECKING:
    from pipelines.config import Config

# Offsets of the training data's seed: a stage's batches depend only on the seed and on this,
# so a stage gives the same result whether earlier stages ran in this process or not. The
# baseline and the distilled student see the same batches, isolating distillation.
TEACHER_DATA, STUDENT_DATA, QAD_DATA = 0, 1, 2
# Distillation reseeds after building its student, so its (random) feature adapters and the
# shuffling do not depend on how many random draws building the student took.
DISTILLATION_SEED = 2


class Context:
    """The data, the run directory and the models of one run."""

    def __init__(self, config: "Config", strategy: tf.distribute.Strategy | None = None):
        self.config = config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.chief = workers.is_chief(self.strategy)
        # The data, the teacher file and the starting weights first: each fails before the run
        # directory is read.
        teacher_size = config.teacher_size
        self.splits = tfkd.data.load(
            config.dataset,
            data_dir=config.data_dir,
            validation_fraction=config.validation_fraction,
            seed=config.seed,
            image_size=config.student_size,
            extra_sizes=[teacher_size] if teacher_size else [],
            resize=config.resize,
            cache=config.data_cache,
            progress=tfkd.progress.Progress("decoding images"),
        )
        # Images only the teacher learns from (a pretrained teacher's data): set aside before
        # any label is hidden, so --label_fraction counts the students' share.
        pool = None
        if config.teacher_pool:
            self.splits, pool = tfkd.data.set_aside(
                self.splits, config.teacher_pool, config.seed + TEACHER_DATA
            )
        if config.label_fraction < 1.0:
            self.splits = tfkd.data.hide_labels(self.splits, config.label_fraction, config.seed)
        if config.unlabeled:
            self.splits = tfkd.data.with_unlabeled(
                self.splits,
                config.unlabeled.removeprefix("folder:"),
                cache=config.data_cache,
                progress=tfkd.progress.Progress("decoding unlabeled images"),
            )
        self.teacher_splits = self.splits.at(teacher_size) if teacher_size else self.splits
        self.teacher_pool = pool.at(teacher_size) if pool and teacher_size else pool
        # The teacher sees its own resolution: it gets both images in each batch.
        self.paired = self.teacher_splits is not self.splits
        student_size = tuple(self.splits.preprocessing.image_size)
        if teacher_size and self.paired and min(teacher_size) < min(student_size):
            logging.warning(
                "--teacher_image_size=%s is smaller than the student's %s: the "
                "teacher sees less detail than the student. Usually the teacher "
                "gets the higher resolution.",
                "x".join(map(str, teacher_size)),
                "x".join(map(str, student_size)),
            )
        self.teacher_file = None
        self.teacher_input: dict | None = None
        if config.teacher_is_file:
            self.teacher_file, self.teacher_input = self._load_teacher_file(config.teacher)
        self._check_weights()
        self.representative_size = self._representative_size()
        self.directory = RunDirectory(config.out_dir, writable=self.chief)
        # Evaluation in training-sized batches: a large model at photo resolution holds a whole
        # batch of activations (and a .tflite interpreter sizes its arena for one), so a batch of
        # 256 was a run's memory peak.
        batch = config.batch_size
        self.validation = self._sharded(
            tfkd.data.batches(self.splits.validation, self.splits.preprocessing, batch)
        )
        self.test = tfkd.data.batches(self.splits.test, self.splits.preprocessing, batch)
        self.teacher_validation, self.teacher_test = self.validation, self.test
        self.distill_validation = self.validation
        if self.paired:
            self.teacher_validation = self._sharded(
                tfkd.data.batches(
                    self.teacher_splits.validation, self.teacher_splits.preprocessing, batch
                )
            )
            self.teacher_test = tfkd.data.batches(
                self.teacher_splits.test, self.teacher_splits.preprocessing, batch
            )
            self.distill_validation = self._sharded(
                tfkd.data.paired_batches(self.splits, self.teacher_splits, "validation", batch)
            )
        self._models: dict[str, keras.Model] = {}
        self._teacher_cache: tfkd.distill.teacher_cache.TeacherCache | None = None

    def _load_teacher_file(self, path: str) -> tuple[keras.Model, dict]:
        """The teacher file behind the adapter for its input convention (--teacher_input, or
        measured on validation), and what was chosen and measured."""
        config, prep = self.config, self.teacher_splits.preprocessing
        teacher = tfkd.distill.teachers.load(path)
        try:
            self.teacher_splits.check_model(teacher, role="teacher")
        except ValueError as error:
            raise ValueError(f"--teacher={path}: {error}") from error
        if config.teacher_input != tfkd.distill.teacher_input.AUTO:
            convention = config.teacher_input
            chosen = {
                "convention": convention,
                "message": f"Teacher input: '{convention}' (--teacher_input).",
            }
        else:
            choice = tfkd.distill.teacher_input.choose(
                teacher,
                prep,
                tfkd.data.batches(self.teacher_splits.validation, prep, config.batch_size),
            )
            convention, chosen = choice.convention, choice.to_dict()
        return tfkd.distill.teacher_input.with_input(teacher, convention, prep), chosen

    def _representative_size(self) -> int:
        """--representative_size, checked against the training split before any training; the
        default shrinks to what a small split can fill, an explicit value that cannot fit is an
        error."""
        config = self.config
        wanted = config.representative_size
        if not any(m in tfkd.export.INTEGER_MODES for m in config.modes):
            return wanted
        largest = tfkd.export.largest_representative_size(
            tfkd.data.train_labels(self.splits), self.splits.num_classes
        )
        if wanted <= largest:
            return wanted
        if largest == 0:
            raise ValueError(
                f"--modes={','.join(config.modes)}: integer modes calibrate on at "
                "least one training image per class, and some class has none."
            )
        if wanted != tfkd.export.DEFAULT_REPRESENTATIVE_SIZE:
            raise ValueError(
                f"--representative_size={wanted}: the training split can fill a "
                f"class-balanced representative set of at most {largest} images. "
                f"Fix: --representative_size={largest} or fewer."
            )
        logging.warning(
            "--representative_size: the training split fills at most %d of the "
            "default %d class-balanced images; using %d.",
            largest,
            wanted,
            largest,
        )
        return largest

    @staticmethod
    def _sharded(batches: tf.data.Dataset) -> tf.data.Dataset:
        return tfkd.distill.distribute.shard_by_data(batches)

    def _check_weights(self) -> None:
        """Builds the models that start from weights once, so a missing download or a file of
        the wrong shapes is named before any training."""
        config = self.config
        if config.teacher_weights and not config.teacher_is_file:
            try:
                self.build_teacher()
            except ValueError as error:
                raise ValueError(f"--teacher_weights={config.teacher_weights}: {error}") from error
        if config.student_weights:
            try:
                self.build(config.student)
            except ValueError as error:
                raise ValueError(f"--student_weights={config.student_weights}: {error}") from error
        if config.student_is_file:
            self._check_student_file()

    def _check_student_file(self) -> None:
        """A student file loads, fits the data and, when QAD runs, quantizes: all named before
        any training."""
        config = self.config
        try:
            student = self.build(config.student)
            self.splits.check_model(student, role="student")
            last = student.layers[-1]
            if (
                isinstance(last, keras.layers.Softmax)
                or last.get_config().get("activation") == "softmax"
            ):
                raise ValueError(
                    f"its last layer '{last.name}' applies a softmax; tfkd trains "
                    "on logits and adds the softmax at export. Fix: save the "
                    "student without the final softmax."
                )
            if config.qat_epochs:
                tfkd.quantize.doctor(student).raise_if_blocked()
        except (ValueError, OSError) as error:
            raise ValueError(f"--student={config.student}: {error}") from error

    # Models ---------------------------------------------------------------------------------

    def build(self, architecture: str) -> keras.Model:
        """The student `architecture` with --student_weights, or loaded from its file."""
        if tfkd.models.is_model_file(architecture):
            return tfkd.models.load(architecture)
        return tfkd.models.build(
            architecture,
            self.splits.preprocessing.input_shape,
            self.splits.num_classes,
            weights=self.config.student_weights or None,
        )

    def build_teacher(self) -> keras.Model:
        """The teacher built by name, at its resolution, with --teacher_weights."""
        config, prep = self.config, self.teacher_splits.preprocessing
        weights = config.teacher_weights or None
        if tfkd.models.pretrained.is_application(config.teacher):
            return tfkd.models.pretrained.build(
                config.teacher, prep.input_shape, self.splits.num_classes, prep, weights=weights
            )
        return tfkd.models.build(
            config.teacher, prep.input_shape, self.splits.num_classes, weights=weights
        )

    def teacher_fit_options(self, stage: str) -> dict:
        return dict(self.fit_options(stage), validation=self.teacher_validation)

    def model(self, name: str) -> keras.Model:
        if name in self._models:
            return self._models[name]
        source = (
            self.directory.metrics("teacher").get("source")
            if name == "teacher" and self.directory.done("teacher")
            else None
        )
        if source:
            model = self._load_foreign_teacher(source)
        else:
            model = self.directory.load_model(name, lambda: self.build(self.config.student))
        self._models[name] = model
        return model

    def _load_foreign_teacher(self, source: str) -> keras.Model:
        """A SavedModel or Keras 3 teacher, used from where it is (it has no tf_keras copy):
        the one this run already loaded to check it, or the recorded source."""
        same_file = self.teacher_file is not None and os.path.abspath(self.config.teacher) == source
        convention = self.directory.metrics("teacher")["input"]["convention"]
        teacher = (
            self.teacher_file
            if same_file
            else tfkd.distill.teacher_input.with_input(
                tfkd.distill.teachers.load(source), convention, self.teacher_splits.preprocessing
            )
        )
        if (
            tfkd.distill.teachers.fingerprint(teacher)
            != self.directory.metrics("teacher")["fingerprint"]
        ):
            raise ValueError(
                f"The teacher {source} changed while this run used it. Rerun the same "
                "command: the teacher stage and the stages after it run again."
            )
        return teacher

    def use(self, name: str, model: keras.Model) -> None:
        """Makes `model` the run's `name` without saving it (a teacher used where it is)."""
        self._models[name] = model

    def keep(self, name: str, model: keras.Model) -> str:
        """Saves `model` as the run's `name` (`keep_model`); returns its path relative to the run
        directory. `model(name)` is then what was saved."""
        relative, self._models[name] = keep_model(
            self.directory, self.strategy, self.chief, name, model
        )
        return relative

    def drop_models(self) -> None:
        """Forgets loaded models, so the next use reads them from the run directory."""
        self._models.clear()

    def fresh_student(self) -> keras.Model:
        # Seeded, so the baseline and the distilled student start from the same weights.
        keras.utils.set_random_seed(self.config.seed + 1)
        return self.build(self.config.student)

    def at_teacher_size(self, model) -> bool:
        """Whether `model` (a Keras model or a .tflite input shape) takes the teacher's size."""
        shape = model if isinstance(model, tuple) else tuple(model.input_shape[1:3])
        return self.paired and shape == tuple(self.teacher_splits.preprocessing.image_size)

    def accuracies(self, model: keras.Model) -> dict:
        teacher = self.at_teacher_size(model)
        return {
            "accuracy": keras_accuracy(model, self.teacher_test if teacher else self.test),
            "val_accuracy": keras_accuracy(
                model, self.teacher_validation if teacher else self.validation
            ),
        }

    # Training -------------------------------------------------------------------------------

    def train_batches(self, seed_offset: int, distilled: bool = False) -> tf.data.Dataset:
        """Training batches seeded with `seed + seed_offset`; with the teacher's cached logits
        when `distilled` and --teacher_cache is on."""
        config = self.config
        seed = config.seed + seed_offset
        # Drawn for the student's size and scaled, so each student batch matches the views
        # the teacher sees at its own resolution.
        base_size = self.splits.preprocessing.image_size if self.paired else None
        if distilled and config.teacher_cache != "off":
            batches = tfkd.distill.teacher_cache.batches(
                self.teacher_cache(),
                self.splits.train,
                self.splits.preprocessing,
                config.batch_size,
                shuffle=True,
                seed=seed,
            )
        elif distilled and self.paired:
            batches = tfkd.data.paired_batches(
                self.splits,
                self.teacher_splits,
                "train",
                config.batch_size,
                shuffle=True,
                augmentation=config.augmentation,
                seed=seed,
                mixing=config.mixing,
            )
        else:
            # Without the teacher only labels teach: the labeled images, as many steps an epoch.
            train = tfkd.data.labeled_train(self.splits) if not distilled else self.splits.train
            batches = tfkd.data.batches(
                train,
                self.splits.preprocessing,
                config.batch_size,
                shuffle=True,
                augmentation=config.augmentation,
                seed=seed,
                base_size=base_size,
                mixing=config.mixing if distilled else None,
            )
        return tfkd.distill.distribute.shard_by_data(batches)

    def teacher_batches(self) -> tf.data.Dataset:
        """The teacher's training batches, at its resolution."""
        config = self.config
        return tfkd.distill.distribute.shard_by_data(
            tfkd.data.batches(
                tfkd.data.labeled_train(self.teacher_pool or self.teacher_splits),
                self.teacher_splits.preprocessing,
                config.batch_size,
                shuffle=True,
                augmentation=config.augmentation,
                seed=config.seed + TEACHER_DATA,
            )
        )

    def teacher_cache(self) -> "tfkd.distill.teacher_cache.TeacherCache":
        """The teacher's logits on the training set, built once (reused from disk if kept)."""
        if self._teacher_cache is None:
            config = self.config
            self._teacher_cache = tfkd.distill.teacher_cache.build(
                self.model("teacher"),
                self.teacher_splits.train,
                self.teacher_splits.preprocessing,
                augmentation=config.augmentation,
                views=config.teacher_cache_views,
                seed=config.seed,
                mixing=config.mixing,
                batch_size=config.batch_size,
                base_size=self.splits.preprocessing.image_size if self.paired else None,
                progress=tfkd.progress.Progress("teacher logits"),
                directory=self.teacher_cache_dir if config.teacher_cache == "disk" else None,
                writable=self.chief,
            )
        return self._teacher_cache

    @property
    def teacher_cache_dir(self) -> str:
        return self.config.teacher_cache_dir or self.directory.file("teacher_cache")

    def fit_options(self, stage: str, distilled: bool = False, backup: str = "") -> dict:
        """How a training stage fits: its validation batches, optimizer and callbacks
        (`stage_callbacks`)."""
        return dict(
            validation=self.distill_validation if distilled else self.validation,
            optimizer_name=self.config.optimizer,
            jit_compile=self.config.use_xla,
            verbose=0,
            callbacks=stage_callbacks(
                self.directory,
                stage,
                self.config.batch_size,
                backup,
                self.config.early_stopping_patience,
            ),
        )


def keep_model(
    directory: RunDirectory, strategy: tf.distribute.Strategy, chief: bool, name: str, model
) -> tuple[str, keras.Model]:
    """Saves a trained `model` as the run's `name`, as every task keeps one; returns (its path
    relative to the run directory, the model saved).

    Under a distribution strategy each replica's batch-norm statistics are first settled to
    their mean, so the scores a stage records are its saved copy's. A model trained in mixed
    precision is saved as a float32 copy. Non-chief workers save too (saving may synchronise
    replicas) but into their scratch directory, which is removed at the end."""
    if tfkd.distill.distribute.is_distributed(strategy):
        tfkd.distill.distribute.settle_replica_statistics(model)
    model = training.float32_copy(model)
    root = None if chief else workers.scratch_dir(directory.path, strategy)
    return directory.save_model(name, model, root), model


def stage_callbacks(
    directory: RunDirectory,
    stage: str,
    batch_size: int,
    backup: str = "",
    early_stopping_patience: int = 0,
) -> list:
    """The callbacks of a training stage, whatever the task: resumable from its backup
    (`checkpoints/<backup or stage>`), logged for TensorBoard, early stopping when asked, and
    one progress line (a bar in a terminal)."""
    return training.callbacks(
        backup_dir=directory.checkpoints(*(backup or stage).split("/")),
        log_dir=directory.logs(stage),
        early_stopping_patience=early_stopping_patience,
    ) + [tfkd.progress.TrainingProgress(stage, batch_size=batch_size)]
