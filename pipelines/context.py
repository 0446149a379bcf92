"""What the stages of one run share: its settings, data, run directory and models, the models
loaded from the run directory when a stage needs them."""

import os
from typing import TYPE_CHECKING, Optional

import tensorflow as tf

import tfkd
from pipelines import console, workers
from pipelines.run import RunDirectory
from tfkd import training
from tfkd.evaluate import keras_accuracy
from tfkd.keras import keras

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

    def __init__(self, config: "Config", strategy: Optional[tf.distribute.Strategy] = None):
        self.config = config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.chief = workers.is_chief(self.strategy)
        # The data and the teacher file first: either fails before the run directory is read.
        self.splits = tfkd.data.load(config.dataset, data_dir=config.data_dir, seed=config.seed)
        self.teacher_file = None
        if config.teacher_is_file:
            self.teacher_file = tfkd.teachers.load(config.teacher)
            try:
                self.splits.check_model(self.teacher_file, role="teacher")
            except ValueError as error:
                raise ValueError(f"--teacher={config.teacher}: {error}") from error
        self.directory = RunDirectory(config.out_dir, config.results_settings(),
                                      config.overwrite, writable=self.chief)
        prep = self.splits.preprocessing
        self.validation = tfkd.distribute.shard_by_data(
            tfkd.data.batches(self.splits.validation, prep, config.batch_size))
        self.test = tfkd.data.batches(self.splits.test, prep, max(config.batch_size, 256))
        self._models: dict[str, keras.Model] = {}
        self._teacher_cache = None

    # Models ---------------------------------------------------------------------------------

    def build(self, architecture: str) -> keras.Model:
        return tfkd.models.build(architecture, self.splits.preprocessing.input_shape,
                                 self.splits.num_classes)

    def model(self, name: str) -> keras.Model:
        if name in self._models:
            return self._models[name]
        source = (self.directory.metrics("teacher").get("source")
                  if name == "teacher" and self.directory.done("teacher") else None)
        if source:
            model = self._load_foreign_teacher(source)
        else:
            model = self.directory.load_model(name, lambda: self.build(self.config.student))
        self._models[name] = model
        return model

    def _load_foreign_teacher(self, source: str) -> keras.Model:
        """A SavedModel or Keras 3 teacher, used from where it is (it has no tf_keras copy):
        the one this run already loaded to check it, or the recorded source."""
        same_file = (self.teacher_file is not None
                     and os.path.abspath(self.config.teacher) == source)
        teacher = self.teacher_file if same_file else tfkd.teachers.load(source)
        if tfkd.teachers.fingerprint(teacher) != self.directory.metrics("teacher")["fingerprint"]:
            raise ValueError(f"The teacher {source} changed since this run's teacher stage, so "
                             "the stages after it are stale. Rerun with --stages=all "
                             "--overwrite, or point --out_dir to a new run.")
        return teacher

    def use(self, name: str, model: keras.Model) -> None:
        """Makes `model` the run's `name` without saving it (a teacher used where it is)."""
        self._models[name] = model

    def keep(self, name: str, model: keras.Model) -> str:
        """Saves `model` (a float32 copy if it trained in mixed precision) as the run's `name`;
        returns its path relative to the run directory.

        Non-chief workers save too (saving may synchronise replicas) but into their scratch
        directory, which is removed at the end."""
        model = training.float32_copy(model)
        root = None if self.chief else workers.scratch_dir(self.directory.path, self.strategy)
        relative = self.directory.save_model(name, model, root)
        self._models[name] = model
        return relative

    def drop_models(self) -> None:
        """Forgets loaded models, so the next use reads them from the run directory."""
        self._models.clear()

    def fresh_student(self) -> keras.Model:
        # Seeded, so the baseline and the distilled student start from the same weights.
        keras.utils.set_random_seed(self.config.seed + 1)
        return self.build(self.config.student)

    def accuracies(self, model: keras.Model) -> dict:
        return {"accuracy": keras_accuracy(model, self.test),
                "val_accuracy": keras_accuracy(model, self.validation)}

    # Training -------------------------------------------------------------------------------

    def train_batches(self, seed_offset: int, distilled: bool = False) -> tf.data.Dataset:
        """Training batches seeded with `seed + seed_offset`; with the teacher's cached logits
        when `distilled` and --teacher_cache is on."""
        config = self.config
        seed = config.seed + seed_offset
        if distilled and config.teacher_cache != "off":
            batches = tfkd.teacher_cache.batches(self.teacher_cache(), self.splits.train,
                                                 self.splits.preprocessing, config.batch_size,
                                                 shuffle=True, seed=seed)
        else:
            batches = tfkd.data.batches(self.splits.train, self.splits.preprocessing,
                                        config.batch_size, shuffle=True,
                                        augmentation=config.augmentation, seed=seed)
        return tfkd.distribute.shard_by_data(batches)

    def teacher_cache(self) -> "tfkd.teacher_cache.TeacherCache":
        """The teacher's logits on the training set, built once (reused from disk if kept)."""
        if self._teacher_cache is None:
            config = self.config
            self._teacher_cache = tfkd.teacher_cache.build(
                self.model("teacher"), self.splits.train, self.splits.preprocessing,
                augmentation=config.augmentation, views=config.teacher_cache_views,
                seed=config.seed,
                directory=self.directory.file("teacher_cache") if config.teacher_cache == "disk"
                else None, writable=self.chief)
        return self._teacher_cache

    def fit_options(self, stage: str) -> dict:
        """How a training stage fits: resumable from its backup, logged for TensorBoard, with
        early stopping when asked, and one progress line (a bar in a terminal)."""
        return dict(
            validation=self.validation, optimizer_name=self.config.optimizer,
            jit_compile=self.config.use_xla, verbose=0,
            callbacks=training.callbacks(
                backup_dir=self.directory.file("checkpoints", stage),
                log_dir=self.directory.file("logs", stage),
                early_stopping_patience=self.config.early_stopping_patience)
            + [console.EpochProgress(stage)])
