r"""The main job: data -> teacher -> student alone -> distilled student -> quantization-aware
distillation -> TFLite export -> verification (parity gate) -> latency -> report.

    python -m pipelines.distill --flagfile=pipelines/configs/digits.flags --out_dir=runs/digits

Every flag is validated before any training. Each stage writes into the run directory and
records its files (with hashes) in `manifest.json`; rerunning with the same `--out_dir` skips
finished stages and resumes an interrupted training from its last finished epoch.
"""

import dataclasses
import json
import os
import sys
import time
from typing import Callable, Optional

from absl import app, flags, logging

import tensorflow as tf

import tfkd
from pipelines.rundir import RunDir
from tfkd import benchmark, device, evaluate, export, files, quantize, report
from tfkd.evaluate import keras_accuracy
from tfkd.keras import keras

STAGES = ("teacher", "baseline", "student", "select", "qad", "export", "verify", "benchmark",
          "device", "report")
# What each stage reads from earlier ones.
NEEDS = {"teacher": (), "baseline": (), "student": ("teacher",), "select": ("student",),
         "qad": ("teacher", "select"), "export": ("teacher", "select"), "verify": ("export",),
         "benchmark": ("export",), "device": ("export",), "report": ("verify",)}
OPTIMIZERS = ("adam", "sgd")
TEACHER_CACHES = ("off", "memory", "disk")
AUTO_CHOICES = ("auto", "on", "off")
# The settings that take one of a fixed set of values.
CHOICES = {"optimizer": OPTIMIZERS, "teacher_cache": TEACHER_CACHES,
           "strategy": tfkd.distribute.STRATEGIES, "mixed_precision": AUTO_CHOICES,
           "jit_compile": AUTO_CHOICES, "select": evaluate.SELECTIONS}

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "digits", "digits, folder:PATH or tfds:NAME.")
flags.DEFINE_string("data_dir", None, "Where tfds datasets live.")
flags.DEFINE_string("teacher", "cnn_large",
                    "Teacher: a registered model name to train, or a trained teacher to load: a "
                    ".keras file (tf_keras or Keras 3), an .h5 file or a SavedModel directory.")
flags.DEFINE_enum("teacher_cache", "off", TEACHER_CACHES,
                  "Run the teacher once and train on its stored logits (tfkd.teacher_cache): "
                  "memory, or disk (kept in the run directory and reused by reruns).")
flags.DEFINE_integer("teacher_cache_views", 1,
                     "Augmented views cached per training image when --flip/--pad_crop are on "
                     "(one teacher pass each); must be 1 without augmentation.")
flags.DEFINE_string("student", "cnn_small", "Student: a registered model name.")
flags.DEFINE_integer("teacher_epochs", 30, "Epochs of teacher training.")
flags.DEFINE_integer("student_epochs", 30, "Epochs of the baseline and of distillation.")
flags.DEFINE_integer("batch_size", 64, "Global batch size.")
flags.DEFINE_enum("optimizer", "adam", OPTIMIZERS, "Optimizer of every training stage.")
flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate (cosine decay to 0).")
flags.DEFINE_string("loss", "kd", "Distillation loss: kd, dkd, dist or logit_mse "
                    "(tfkd.losses.available()); other parameters keep the paper's defaults.")
flags.DEFINE_list("loss_params", [], "Other parameters of --loss as key=value, e.g. "
                  "alpha=1,beta=8 for dkd or beta=1,gamma=2 for dist.")
flags.DEFINE_float("temperature", 4.0, "Temperature of the distillation loss (> 0).")
flags.DEFINE_list("features", [],
                  "Feature distillation pairs teacher_layer:student_layer:loss:weight with a "
                  "feature loss (hint, attention, rkd), e.g. stage1_block0_out:stage1_block0_out:"
                  "attention:1000.")
flags.DEFINE_float("student_loss_weight", 0.9,
                   "Weight of the hard-label loss, in [0, 1] (default measured in "
                   "benchmarks/kd_defaults_cifar10.py).")
flags.DEFINE_integer("distillation_warmup_epochs", 0,
                     "Ramp the distillation term up from 0 over this many epochs (0 = none).")
flags.DEFINE_integer("early_stopping_patience", 0,
                     "Stop a training stage after this many epochs without a better validation "
                     "accuracy and keep its best weights (0 = off).")
flags.DEFINE_bool("flip", False, "Random horizontal flip in training (natural images only).")
flags.DEFINE_integer("pad_crop", 0, "Random pad-and-crop by this many pixels in training; 0 = off.")
flags.DEFINE_integer("seed", 0, "Seed of data splits, shuffling and initialisation.")
flags.DEFINE_string("out_dir", "runs/default", "Run directory.")
flags.DEFINE_bool("overwrite", False, "Replace a run directory made with different settings.")
flags.DEFINE_list("stages", ["all"], f"Stages to run, from {list(STAGES)}, or 'all' (which "
                  "skips finished stages; named stages always run again).")
flags.DEFINE_enum("strategy", "default", tfkd.distribute.STRATEGIES,
                  "tf.distribute strategy of the training stages: mirrored = every local "
                  "GPU, multi_worker = the cluster in TF_CONFIG (run the same command on every "
                  "worker), tpu. --batch_size stays the global batch.")
flags.DEFINE_integer("collective_timeout", 600,
                     "Multi-worker: seconds a worker waits for the others before failing (so a "
                     "dead worker stops the run, which then resumes from its backup when "
                     "restarted).")
flags.DEFINE_enum("mixed_precision", "auto", AUTO_CHOICES,
                  "Train the teacher, the baseline and the distilled student in mixed_float16: "
                  "auto = only when a GPU is visible. Saved and exported models are float32; "
                  "QAD always trains in float32 (TF-MOT's fake-quant layers are float32).")
flags.DEFINE_enum("jit_compile", "auto", AUTO_CHOICES,
                  "Compile training steps with XLA: auto = only when a GPU is visible (on 2 CPU "
                  "cores XLA made distillation 3x slower, benchmarks/train_speed.py).")
flags.DEFINE_integer("qat_epochs", 5, "Epochs of quantization-aware distillation; 0 skips it.")
flags.DEFINE_float("qat_learning_rate", 1e-4,
                   "Peak learning rate of quantization-aware distillation.")
flags.DEFINE_list("modes", ["float32", "float16", "dynamic", "int8", "int8_io_uint8"],
                  f"Export modes of the float student, from {list(export.MODES)}; the QAD student "
                  "is exported in the integer ones among them.")
flags.DEFINE_enum("select", "best", evaluate.SELECTIONS,
                  "Which student to quantize and ship: the better of the distilled student and the "
                  "student alone on validation (best), or always one of them.")
flags.DEFINE_float("teacher_margin_points", 1.0,
                   "Warn when the teacher is not this many points better than the student alone.")
flags.DEFINE_integer("representative_size", 200, "Calibration images for post-training int8.")
flags.DEFINE_float("max_drop_points", 1.0,
                   "Largest accuracy drop (points) allowed from the float student to a .tflite.")
flags.DEFINE_list("threads", ["1"], "Thread counts of the latency benchmark.")
flags.DEFINE_integer("benchmark_runs", 50, "Timed runs of the latency benchmark.")
flags.DEFINE_string("serial", None, "adb serial of a phone for the device stage.")
flags.DEFINE_string("benchmark_binary", None, "Host path of Android benchmark_model.")
flags.DEFINE_string("android_assets", None,
                    "After the run, copy the preferred student variant, labels, model card and a "
                    "sample test image here (android_demo/app/src/main/assets), ready for "
                    "./gradlew installDebug.")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on; written to the run directory."""

    dataset: str = "digits"
    data_dir: Optional[str] = None
    teacher: str = "cnn_large"
    teacher_cache: str = "off"
    teacher_cache_views: int = 1
    student: str = "cnn_small"
    teacher_epochs: int = 30
    student_epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    loss: str = "kd"
    loss_params: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    temperature: float = 4.0
    student_loss_weight: float = 0.9
    distillation_warmup_epochs: int = 0
    early_stopping_patience: int = 0
    flip: bool = False
    pad_crop: int = 0
    seed: int = 0
    out_dir: str = "runs/default"
    overwrite: bool = False
    stages: tuple[str, ...] = ("all",)
    strategy: str = "default"
    collective_timeout: int = 600
    mixed_precision: str = "auto"
    jit_compile: str = "auto"
    qat_epochs: int = 5
    qat_learning_rate: float = 1e-4
    modes: tuple[str, ...] = ("float32", "float16", "dynamic", "int8", "int8_io_uint8")
    select: str = "best"
    teacher_margin_points: float = 1.0
    representative_size: int = 200
    max_drop_points: float = 1.0
    threads: tuple[int, ...] = (1,)
    benchmark_runs: int = 50
    serial: Optional[str] = None
    benchmark_binary: Optional[str] = None
    android_assets: Optional[str] = None

    @property
    def teacher_is_file(self) -> bool:
        return self.teacher.endswith((".keras", ".h5", ".tflite")) or os.path.sep in self.teacher

    @staticmethod
    def _on(setting: str) -> bool:
        """An auto/on/off setting: auto means on only where it helps, with a GPU."""
        if setting == "auto":
            return bool(tf.config.list_physical_devices("GPU"))
        return setting == "on"

    @property
    def use_mixed_precision(self) -> bool:
        return self._on(self.mixed_precision)

    @property
    def use_xla(self) -> bool:
        return self._on(self.jit_compile)

    @property
    def augmentation(self) -> Optional[tfkd.data.Augmentation]:
        if not (self.flip or self.pad_crop):
            return None
        return tfkd.data.Augmentation(flip=self.flip, pad_crop=self.pad_crop)

    def results_settings(self) -> dict:
        """The settings that change results (a run directory is tied to them)."""
        # A run may resume on another cluster: the strategy changes speed, not the result.
        ignored = {"out_dir", "overwrite", "stages", "serial", "benchmark_binary", "threads",
                   "benchmark_runs", "strategy", "collective_timeout", "android_assets"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ignored}

    def selected_stages(self) -> list[str]:
        if tuple(self.stages) == ("all",):
            return [s for s in STAGES if s != "device" or self.serial]
        return [s for s in STAGES if s in self.stages]

    def distillation_loss(self) -> tfkd.losses.LogitLoss:
        """The --loss with --temperature when it has one (its paper's defaults otherwise)."""
        kwargs = ({"temperature": self.temperature}
                  if tfkd.losses.takes(self.loss, "temperature") else {})
        for item in self.loss_params:
            key, _, value = item.partition("=")
            if not value or key == "temperature" or not tfkd.losses.takes(self.loss, key):
                raise ValueError(
                    f"--loss_params={item} is not a key=value parameter of --loss={self.loss} "
                    "(temperature has its own flag).")
            try:
                kwargs[key] = float(value)
            except ValueError as error:
                raise ValueError(f"--loss_params={item}: {value!r} is not a number.") from error
        return tfkd.losses.get(self.loss, **kwargs)

    def feature_pairs(self) -> list:
        """--features parsed into `tfkd.features.FeaturePair`s (layer names checked later)."""
        pairs = []
        for item in self.features:
            parts = item.split(":")
            if len(parts) != 4:
                raise ValueError(f"--features={item}: expected teacher_layer:student_layer:"
                                 "loss:weight.")
            teacher_layer, student_layer, loss_name, weight = parts
            loss = tfkd.losses.get(loss_name)
            if not isinstance(loss, tfkd.losses.FeatureLoss):
                raise ValueError(f"--features={item}: '{loss_name}' is a logit loss; use one of "
                                 "the feature losses hint, attention, rkd.")
            try:
                weight = float(weight)
            except ValueError as error:
                raise ValueError(f"--features={item}: weight {weight!r} is not a number.") \
                    from error
            pairs.append(tfkd.features.FeaturePair(teacher_layer, student_layer, loss, weight))
        return pairs

    def validate(self) -> None:
        """Raises `ValueError` naming the first bad setting and its fix."""
        if self.teacher_is_file:
            if not os.path.exists(self.teacher):
                raise ValueError(f"--teacher={self.teacher} does not exist. Give a .keras/.h5 "
                                 "file, a SavedModel directory or a registered model name.")
            if self.teacher.endswith(".tflite"):
                raise ValueError(
                    f"--teacher={self.teacher}: a .tflite teacher can only teach through the "
                    "teacher cache of the library (tfkd.teacher_cache with teacher=None); the "
                    "pipeline also evaluates and exports its teacher, which needs a model. Give "
                    "the .keras/.h5/SavedModel it was converted from.")
        elif self.teacher not in tfkd.models.available():
            raise ValueError(f"--teacher={self.teacher} is not a registered model nor a .keras "
                             f"file. Available models: {tfkd.models.available()}")
        if self.student not in tfkd.models.available():
            raise ValueError(f"--student={self.student} is not a registered model. "
                             f"Available: {tfkd.models.available()}")
        for name in ("teacher_epochs", "student_epochs", "batch_size", "benchmark_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1. Received: {getattr(self, name)}")
        if self.pad_crop < 0:
            raise ValueError(f"--pad_crop must be >= 0 (0 turns it off). Received: {self.pad_crop}")
        for name in ("learning_rate", "qat_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0. Received: {getattr(self, name)}")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"--{name}={getattr(self, name)} is unknown. Available: "
                                 f"{list(choices)}")
        for name in ("distillation_warmup_epochs", "early_stopping_patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0 (0 turns it off). "
                                 f"Received: {getattr(self, name)}")
        if self.collective_timeout < 1:
            raise ValueError(f"--collective_timeout must be >= 1 second. Received: "
                             f"{self.collective_timeout}")
        if self.strategy == "tpu" and self.qat_epochs:
            raise ValueError("Quantization-aware training (TF-MOT) does not run on TPU: pass "
                             "--qat_epochs=0 on TPU and run the qad stage on CPU/GPU (--stages="
                             "qad,export,... --strategy=default with the same --out_dir).")
        if self.teacher_cache_views < 1:
            raise ValueError(f"--teacher_cache_views must be >= 1. Received: "
                             f"{self.teacher_cache_views}")
        if self.teacher_cache != "off":
            if self.augmentation is None and self.teacher_cache_views != 1:
                raise ValueError(f"--teacher_cache_views={self.teacher_cache_views} without "
                                 "--flip/--pad_crop would cache the same image repeatedly; use 1.")
            if self.features:
                raise ValueError("--features needs the teacher's forward pass every step; the "
                                 "teacher cache stores logits only. Drop --teacher_cache or "
                                 "--features.")
        if self.qat_epochs < 0:
            raise ValueError(
                f"--qat_epochs must be >= 0 (0 skips QAD). Received: {self.qat_epochs}")
        # The losses validate their own arguments; building them here fails fast.
        self.distillation_loss()
        self.feature_pairs()
        if not 0.0 <= self.student_loss_weight <= 1.0:
            raise ValueError("--student_loss_weight must be in [0, 1]. "
                             f"Received: {self.student_loss_weight}")
        if not self.modes:
            raise ValueError(f"--modes is empty. Choose from {list(export.MODES)}")
        for mode in self.modes:
            export.check_mode(mode)
        if not self.max_drop_points >= 0:
            raise ValueError(f"--max_drop_points must be >= 0. Received: {self.max_drop_points}")
        if not self.teacher_margin_points >= 0:
            raise ValueError("--teacher_margin_points must be >= 0. "
                             f"Received: {self.teacher_margin_points}")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"--threads must list thread counts >= 1. Received: {self.threads}")
        unknown = [s for s in self.stages if s not in STAGES and s != "all"]
        if unknown or ("all" in self.stages and len(self.stages) > 1):
            raise ValueError(f"--stages={','.join(self.stages)}: give 'all' or stages from "
                             f"{list(STAGES)}.")
        if "device" in self.stages and not self.serial:
            raise ValueError("--stages includes device but no --serial was given.")


def _optimizer(config: Config, learning_rate: float, steps: int) -> keras.optimizers.Optimizer:
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    return keras.optimizers.Adam(schedule)


class Run:
    """The data, the run directory and the models of one run, loaded when a stage needs them."""

    def __init__(self, config: Config, strategy: Optional[tf.distribute.Strategy] = None):
        self.config = config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.chief = tfkd.distribute.is_chief(self.strategy)
        self.dir = RunDir(config.out_dir, config.results_settings(), config.overwrite,
                          writable=self.chief)
        self.splits = tfkd.data.load(config.dataset, data_dir=config.data_dir, seed=config.seed)
        prep = self.splits.preprocessing
        self.validation = tfkd.distribute.shard_by_data(
            tfkd.data.batches(self.splits.validation, prep, config.batch_size))
        self.test = tfkd.data.batches(self.splits.test, prep, max(config.batch_size, 256))
        self._models: dict[str, keras.Model] = {}
        self._teacher_cache = None

    @staticmethod
    def _relative(name: str) -> str:
        # QAT wrappers do not survive the .keras format: the QAD student is kept as weights.
        return os.path.join(name, f"{name}_weights.h5" if name == "student_qad" else
                            f"{name}.keras")

    def model(self, name: str) -> keras.Model:
        if name == "teacher" and name not in self._models and self.dir.done("teacher"):
            source = self.dir.metrics("teacher").get("source")
            if source:
                self._models[name] = _load_foreign_teacher(source, self.dir.metrics("teacher"))
        if name not in self._models:
            path = self.dir.file(self._relative(name))
            self._models[name] = (quantize.load_quantized(self.model("student"), path)
                                  if name == "student_qad" else
                                  keras.models.load_model(path, safe_mode=True))
        return self._models[name]

    def keep(self, name: str, model: keras.Model) -> str:
        """Saves `model` as the run's `name`; returns the path relative to the run directory.

        Non-chief workers save too (saving may synchronise replicas) but into their scratch
        directory, which is removed at the end."""
        relative = self._relative(name)
        model = self._float32(name, model)
        root = (self.dir.path if self.chief
                else tfkd.distribute.scratch_dir(self.dir.path, self.strategy))
        with files.atomic_path(os.path.join(root, relative)) as tmp:
            model.save_weights(tmp) if name == "student_qad" else model.save(tmp)
        self._models[name] = model
        return relative

    def _float32(self, name: str, model: keras.Model) -> keras.Model:
        """`model` itself, or a float32 copy of a mixed-precision one (same weights: mixed
        precision keeps its variables in float32), so nothing saved or exported is float16."""
        if model.dtype_policy.name == "float32" or name not in ("teacher", "baseline", "student"):
            return model
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("float32")
        try:
            architecture = self.config.teacher if name == "teacher" else self.config.student
            copy = tfkd.models.build(architecture, self.splits.preprocessing.input_shape,
                                     self.splits.num_classes)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        copy.set_weights(model.get_weights())
        return copy

    def drop_models(self) -> None:
        """Forgets loaded models, so the next use reads them from the run directory."""
        self._models.clear()

    def train(self, stage: str) -> tf.data.Dataset:
        """Training batches whose order and augmentation depend only on the seed and the stage,
        so a stage gives the same result whether earlier stages ran in this process or not.
        The baseline and the distilled student see the same order, isolating distillation."""
        config = self.config
        offset = {"teacher": 0, "baseline": 1, "student": 1, "student_qad": 2}[stage]
        if stage in ("student", "student_qad") and config.teacher_cache != "off":
            batches = tfkd.teacher_cache.batches(self.teacher_cache(), self.splits.train,
                                                 self.splits.preprocessing, config.batch_size,
                                                 shuffle=True, seed=config.seed + offset)
        else:
            batches = tfkd.data.batches(self.splits.train, self.splits.preprocessing,
                                        config.batch_size, shuffle=True,
                                        augmentation=config.augmentation,
                                        seed=config.seed + offset)
        return tfkd.distribute.shard_by_data(batches)

    def teacher_cache(self) -> "tfkd.teacher_cache.TeacherCache":
        """The teacher's logits on the training set, built once (reused from disk if kept)."""
        if self._teacher_cache is None:
            config = self.config
            self._teacher_cache = tfkd.teacher_cache.build(
                self.model("teacher"), self.splits.train, self.splits.preprocessing,
                augmentation=config.augmentation, views=config.teacher_cache_views,
                seed=config.seed,
                directory=self.dir.file("teacher_cache") if config.teacher_cache == "disk"
                else None, writable=self.chief)
        return self._teacher_cache

    def fresh_student(self) -> keras.Model:
        # Seeded, so the baseline and the distilled student start from the same weights.
        keras.utils.set_random_seed(self.config.seed + 1)
        return tfkd.models.build(self.config.student, self.splits.preprocessing.input_shape,
                                 self.splits.num_classes)

    def fit(self, model: keras.Model, stage: str, epochs: int) -> None:
        """`model.fit` with TensorBoard logs and a backup that resumes an interrupted stage."""
        callbacks = [
            keras.callbacks.BackupAndRestore(self.dir.file("checkpoints", stage)),
            keras.callbacks.TensorBoard(self.dir.file("logs", stage)),
        ]
        if self.config.early_stopping_patience:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=self.config.early_stopping_patience,
                restore_best_weights=True))
        verbose = 1 if sys.stdout.isatty() else 2
        model.fit(self.train(stage), validation_data=self.validation, epochs=epochs,
                  callbacks=callbacks,
                  verbose=verbose)


def train_classifier(run: Run, model: keras.Model, stage: str, epochs: int) -> keras.Model:
    """Trains `model` on hard labels alone (the teacher, and the student baseline)."""
    steps = epochs * int(run.train(stage).cardinality())
    model.compile(optimizer=_optimizer(run.config, run.config.learning_rate, steps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=run.config.use_xla)
    run.fit(model, stage, epochs)
    return model


def distill(run: Run, student: keras.Model, stage: str, epochs: int, learning_rate: float,
            student_loss_weight: Optional[float] = None, warmup_epochs: int = 0) -> keras.Model:
    """Trains `student` (float or QAT) against the frozen teacher; returns the student."""
    config = run.config
    weight = config.student_loss_weight if student_loss_weight is None else student_loss_weight
    steps_per_epoch = int(run.train(stage).cardinality())
    distiller = tfkd.Distiller(
        student=student, teacher=run.model("teacher"),
        loss=config.distillation_loss(),
        features=config.feature_pairs() if stage == "student" else (),
        student_loss_weight=weight,
        distillation_warmup_steps=warmup_epochs * steps_per_epoch)
    steps = epochs * steps_per_epoch
    keras.utils.set_random_seed(config.seed + 2)
    distiller.compile(optimizer=_optimizer(config, learning_rate, steps), metrics=["accuracy"],
                      jit_compile=config.use_xla)
    run.fit(distiller, stage, epochs)
    return distiller.student


def _load_foreign_teacher(source: str, recorded: dict) -> keras.Model:
    """A SavedModel or Keras 3 teacher, loaded from where it is (it has no tf_keras copy)."""
    teacher = tfkd.teachers.load(source)
    if tfkd.teachers.fingerprint(teacher) != recorded["fingerprint"]:
        raise ValueError(f"The teacher {source} changed since this run's teacher stage, so the "
                         "stages after it are stale. Rerun with --stages=all --overwrite, or "
                         "point --out_dir to a new run.")
    return teacher


def stage_teacher(run: Run) -> tuple[list[str], dict]:
    config = run.config
    if config.teacher_is_file:
        teacher = tfkd.teachers.load(config.teacher)
        run.splits.check_model(teacher, role="teacher")
        if tfkd.teachers.is_foreign(teacher):
            # A SavedModel or Keras 3 model cannot be re-saved as tf_keras: record where it is.
            run._models["teacher"] = teacher
            metrics = _accuracies(run, teacher)
            metrics.update(source=os.path.abspath(config.teacher),
                           fingerprint=tfkd.teachers.fingerprint(teacher))
            return [], metrics
    else:
        keras.utils.set_random_seed(config.seed)
        teacher = tfkd.models.build(config.teacher, run.splits.preprocessing.input_shape,
                                    run.splits.num_classes)
        train_classifier(run, teacher, "teacher", config.teacher_epochs)
    # Accuracies of what was kept: the float32 copy when training used mixed precision.
    kept = run.keep("teacher", teacher)
    return [kept], _accuracies(run, run.model("teacher"))


def _accuracies(run: Run, model: keras.Model) -> dict:
    return {"accuracy": keras_accuracy(model, run.test),
            "val_accuracy": keras_accuracy(model, run.validation)}


def stage_baseline(run: Run) -> tuple[list[str], dict]:
    baseline = train_classifier(run, run.fresh_student(), "baseline", run.config.student_epochs)
    kept = run.keep("baseline", baseline)
    return [kept], _accuracies(run, run.model("baseline"))


def stage_student(run: Run) -> tuple[list[str], dict]:
    check = None
    if run.dir.done("baseline"):
        check = evaluate.check_teachers(run.model("teacher"),
                                        run.dir.metrics("baseline")["val_accuracy"],
                                        run.validation, run.config.teacher_margin_points)
        (logging.info if check.ok else logging.warning)("%s", check.message())
    student = distill(run, run.fresh_student(), "student", run.config.student_epochs,
                      run.config.learning_rate,
                      warmup_epochs=run.config.distillation_warmup_epochs)
    kept = run.keep("student", student)
    metrics = _accuracies(run, run.model("student"))
    metrics["teacher_check"] = check.to_dict() if check else None
    return [kept], metrics


def stage_select(run: Run) -> tuple[list[str], dict]:
    """Chooses the student that is quantized and shipped (--select)."""
    baseline = (run.dir.metrics("baseline")["val_accuracy"] if run.dir.done("baseline")
                else None)
    shipped, reason = evaluate.select_student(
        run.config.select, run.dir.metrics("student")["val_accuracy"], baseline)
    logging.info("Shipping the %s: %s.", "distilled student" if shipped == "student" else
                 "student alone (baseline)", reason)
    return [], {"shipped": shipped, "reason": reason, "policy": run.config.select}


def stage_qad(run: Run) -> tuple[list[str], dict]:
    """A QAT copy of the distilled student, fine-tuned while the float teacher still teaches."""
    if not run.config.qat_epochs:
        return [], {"skipped": "--qat_epochs=0"}
    shipped = run.dir.metrics("select")["shipped"]
    student = run.model(shipped)
    logging.info("%s", quantize.doctor(student))
    start = keras.models.clone_model(student)
    start.set_weights(student.get_weights())
    # A student shipped because distillation did not help is fine-tuned on labels alone.
    weight = None if shipped == "student" else 1.0
    qad = distill(run, quantize.quantize_student(start), "student_qad", run.config.qat_epochs,
                  run.config.qat_learning_rate, student_loss_weight=weight)
    metrics = _accuracies(run, qad)
    metrics["from"] = shipped
    return [run.keep("student_qad", qad)], metrics


def _has_qad_student(run: Run) -> bool:
    """The qad stage finished and produced a student (it records no accuracy when skipped)."""
    return run.dir.done("qad") and run.dir.metrics("qad").get("accuracy") is not None


def stage_export(run: Run) -> tuple[list[str], dict]:
    config, splits = run.config, run.splits
    out = run.dir.file("tflite")
    representative = None
    if any(m in export.INTEGER_MODES for m in config.modes):
        representative = export.representative_set(splits, config.representative_size)
    common = dict(preprocessing=splits.preprocessing, class_names=splits.class_names,
                  source_run=os.path.abspath(config.out_dir))
    export.export(run.model("teacher"), out, ["float32"], name="teacher", **common)
    # The `student_*` files hold the shipped student (distilled, or alone if it was better).
    shipped = run.dir.metrics("select")
    card = export.export(run.model(shipped["shipped"]), out, config.modes,
                         representative=representative, name="student", **common)
    integer_modes = [m for m in config.modes if m in export.INTEGER_MODES]
    if _has_qad_student(run) and integer_modes:
        card = export.export(run.model("student_qad"), out, integer_modes, name="student_qad",
                             **common)
    card["shipped"] = {"model": shipped["shipped"], "reason": shipped["reason"]}
    files.write_text(os.path.join(out, "model_card.json"), json.dumps(card, indent=2,
                                                                      sort_keys=True))
    # The model card is the verify stage's output: it fills in the accuracies.
    return ([os.path.join("tflite", e["file"]) for e in card["variants"].values()]
            + [os.path.join("tflite", "labels.txt")]), {}


def stage_verify(run: Run) -> tuple[list[str], dict]:
    """Accuracy of every `.tflite` (written into the model card) and the parity gate."""
    out = run.dir.file("tflite")
    card = export.read_card(out)
    accuracies = {}
    for name, entry in card["variants"].items():
        accuracy = evaluate.tflite_accuracy(os.path.join(out, entry["file"]),
                                            run.test.as_numpy_iterator())
        entry["accuracy"] = {"split": "test", "value": accuracy}
        accuracies[name] = accuracy
        logging.info("%s: test accuracy %.4f", name, accuracy)
    files.write_text(os.path.join(out, "model_card.json"), json.dumps(card, indent=2,
                                                                      sort_keys=True))
    reference = run.dir.metrics(run.dir.metrics("select")["shipped"])["accuracy"]
    gated = {k: v for k, v in accuracies.items() if not k.startswith("teacher")}
    drops = {k: 100.0 * (reference - v) for k, v in gated.items()}
    failure = None
    try:
        evaluate.parity_gate(reference, gated, run.config.max_drop_points,
                             reference_name="float Keras student")
    except evaluate.ParityError as error:
        failure = str(error)
    return [os.path.join("tflite", "model_card.json")], {
        "accuracy": accuracies, "drops": drops, "failure": failure}


def stage_benchmark(run: Run) -> tuple[list[str], dict]:
    out = run.dir.file("tflite")
    card = export.read_card(out)
    images = next(iter(run.test))[0].numpy()
    results = {}
    for name, entry in card["variants"].items():
        for threads in run.config.threads:
            m = benchmark.measure(os.path.join(out, entry["file"]), threads=threads,
                                  warmup=10, runs=run.config.benchmark_runs, inputs=images)
            results.setdefault(name, {})[str(threads)] = m.to_dict()
            logging.info("%s, %d thread(s): p50 %.3f ms", name, threads, m.latency.p50_ms)
    path = os.path.join("benchmark", "host.json")
    files.write_text(run.dir.file(path), json.dumps(results, indent=2, sort_keys=True))
    return [path], {}


def stage_device(run: Run) -> tuple[list[str], dict]:
    out = run.dir.file("tflite")
    card = export.read_card(out)
    phone = device.connect(run.config.serial)
    info = device.fingerprint(phone)
    results = {"device": info, "variants": {}}
    for name, entry in card["variants"].items():
        for threads in run.config.threads:
            common = dict(threads=threads, runs=run.config.benchmark_runs, info=info)
            path = os.path.join(out, entry["file"])
            m = (device.benchmark_model_on_device(phone, path, run.config.benchmark_binary,
                                                  **common)
                 if run.config.benchmark_binary else
                 device.app_benchmark_on_device(phone, path, **common))
            results["variants"].setdefault(name, {})[str(threads)] = m.to_dict()
    path = os.path.join("benchmark", "device.json")
    files.write_text(run.dir.file(path), json.dumps(results, indent=2, sort_keys=True))
    return [path], {}


def _read_json(run: Run, relative: str) -> Optional[dict]:
    path = run.dir.file(relative)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def stage_report(run: Run) -> tuple[list[str], dict]:
    config = run.config
    card = export.read_card(run.dir.file("tflite"))
    verify = run.dir.metrics("verify")
    host = _read_json(run, os.path.join("benchmark", "host.json")) or {}
    threads = config.threads[0]
    qad_from = run.dir.metrics("qad").get("from") if _has_qad_student(run) else None
    trained = [(name, name) for name in ("teacher", "baseline", "student") if run.dir.done(name)]
    if _has_qad_student(run):
        trained.append(("student_qad", "qad"))
    models = []
    for name, stage in trained:
        model = run.model(name)
        models.append(report.model_entry(
            name, "keras", None, run.dir.metrics(stage)["accuracy"], model.count_params(),
            os.path.getsize(run.dir.file(Run._relative(name))),
            quantization_aware=quantize.is_quantization_aware(model),
            fine_tuned_from=qad_from if name == "student_qad" else None))
    for name, entry in card["variants"].items():
        latency = host.get(name, {}).get(str(threads))
        models.append(report.model_entry(
            name, "tflite", entry["quantization"], verify["accuracy"][name],
            latency["cost"]["params"] if latency else None, entry["size_bytes"],
            latency["latency"] if latency else None, threads if latency else None,
            mode=entry["mode"], quantization_aware=entry["quantization_aware"],
            fine_tuned_from=qad_from if name.startswith("student_qad") else None))
    accuracy = {m["name"]: m["accuracy"] for m in models}
    summary = {
        "kd_gain": (accuracy["student"] - accuracy["baseline"]
                    if {"student", "baseline"} <= set(accuracy) else None),
        "qad_gain_over_ptq": (accuracy["student_qad_int8"] - accuracy["student_int8"]
                              if {"student_qad_int8", "student_int8"} <= set(accuracy) else None),
        "parity": {"max_drop_points": config.max_drop_points, "drops": verify["drops"],
                   "failures": {k: v for k, v in verify["drops"].items()
                                if v > config.max_drop_points}},
        "measured_on": benchmark_machine() if host else None,
        "teacher_check": run.dir.metrics("student").get("teacher_check"),
        "selection": run.dir.metrics("select"),
    }
    headline = []
    selection = summary["selection"]
    if selection["shipped"] == "baseline" and config.select == "best":
        headline.append(f"Distillation did not help: {selection['reason']}; the student alone "
                        "was quantized and exported instead (--select=best).")
    else:
        shipped = ("distilled student" if selection["shipped"] == "student" else
                   "student alone")
        headline.append(f"Shipped the {shipped}: {selection['reason']}.")
    check = summary["teacher_check"]
    if check and not check["ok"]:
        headline.insert(0, f"WARNING: {check['message']}")
    tested = run.splits.sizes["test"]
    summary["test_images"] = tested
    if summary["kd_gain"] is not None:
        p = accuracy["student"]
        # Differences smaller than this are within what the test split can resolve.
        summary["standard_error"] = (p * (1 - p) / tested) ** 0.5
        headline.append(
            f"Distilled student {100 * p:.2f}% vs student alone "
            f"{100 * accuracy['baseline']:.2f}% vs teacher {100 * accuracy['teacher']:.2f}% on "
            f"{tested} test images (one image = {100 / tested:.2f} points; binomial standard "
            f"error of an accuracy here ±{100 * summary['standard_error']:.2f} points).")
    report.write(run.dir.path, run.splits.name, models, summary, headline)
    outputs = ["report.json", "report.md"] + (["pareto.png"] if host else [])
    return outputs, {}


def benchmark_machine() -> str:
    return f"this host's CPU ({os.cpu_count()} cores), LiteRT interpreter with XNNPACK"


STAGE_FUNCTIONS: dict[str, Callable[[Run], tuple[list[str], dict]]] = {
    "teacher": stage_teacher, "baseline": stage_baseline, "student": stage_student,
    "select": stage_select, "qad": stage_qad, "export": stage_export, "verify": stage_verify,
    "benchmark": stage_benchmark, "device": stage_device, "report": stage_report,
}


def _check_feature_layers(run: Run) -> None:
    """Names in --features must exist in the models: checked before any training."""
    pairs = run.config.feature_pairs()
    if not pairs:
        return
    config, prep = run.config, run.splits.preprocessing
    teacher = (tfkd.teachers.load(config.teacher) if config.teacher_is_file
               else tfkd.models.build(config.teacher, prep.input_shape, run.splits.num_classes))
    student = tfkd.models.build(config.student, prep.input_shape, run.splits.num_classes)
    tfkd.features.FeatureTaps(teacher, student, pairs)


TRAINING_STAGES = ("teacher", "baseline", "student", "select", "qad")


def run(config: Config, strategy: Optional[tf.distribute.Strategy] = None) -> dict:
    """Runs the selected stages (skipping finished ones) and returns the report (or metrics).

    Training stages run in `strategy`'s scope (made from --strategy unless given). In a
    multi-worker run, non-chief workers stop after the training stages: the chief exports,
    verifies, benchmarks and reports alone."""
    config.validate()
    # A multi-worker strategy must exist before any other op runs.
    strategy = strategy or tfkd.distribute.make(config.strategy, config.collective_timeout)
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    state = Run(config, strategy)
    _check_feature_layers(state)
    if state.chief:
        files.write_text(state.dir.file("config.json"),
                         json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True))
    distributed = tfkd.distribute.is_distributed(strategy)
    selected = config.selected_stages()
    # Stages named in --stages run again; with --stages=all finished stages are skipped.
    rerun = set() if tuple(config.stages) == ("all",) else set(selected)
    for index, stage in enumerate(STAGES):
        if stage not in selected:
            continue
        if stage not in rerun and state.dir.done(stage):
            logging.info("Stage %s: finished earlier, files unchanged; skipping.", stage)
            continue
        missing = [n for n in NEEDS[stage] if n not in selected and not state.dir.done(n)]
        if missing:
            raise ValueError(f"Stage {stage} needs {missing}: run them first or add them to "
                             "--stages.")
        if stage not in TRAINING_STAGES and distributed:
            if not state.chief:
                logging.info("Worker %s: training stages done; the chief writes the rest.",
                             tfkd.distribute.worker_label(strategy))
                break
            # Export and measurement run on this process alone, on plain (undistributed)
            # copies of the models, read back from the run directory.
            state.drop_models()
            distributed = False
        # A stage that runs again changes the inputs of every later stage.
        state.dir.forget(STAGES[index + 1:])
        logging.info("Stage %s: running.", stage)
        started = time.time()
        if stage in TRAINING_STAGES:
            mixed = config.use_mixed_precision and stage in ("teacher", "baseline", "student")
            keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
            try:
                with strategy.scope():
                    outputs, metrics = STAGE_FUNCTIONS[stage](state)
            finally:
                keras.mixed_precision.set_global_policy("float32")
        else:
            outputs, metrics = STAGE_FUNCTIONS[stage](state)
        metrics["seconds"] = time.time() - started
        state.dir.record(stage, outputs, metrics)
    tfkd.distribute.remove_scratch(config.out_dir, strategy)
    if config.android_assets and state.chief and state.dir.done("export"):
        image, _ = next(iter(state.splits.test))
        variant = tfkd.android_assets.export_assets(state.dir.file("tflite"),
                                                    config.android_assets,
                                                    sample=image.numpy())
        logging.info("Bundled %s into %s.", variant, config.android_assets)
    result = {s: state.dir.metrics(s) for s in STAGES if state.dir.done(s)}
    return result


def _config_from_flags() -> Config:
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(Config)}
    for name in ("modes", "stages", "loss_params", "features"):
        values[name] = tuple(values[name])
    values["threads"] = tuple(int(t) for t in values["threads"])
    return Config(**values)


def format_summary(results: dict, config: Config) -> str:
    """What the run prints at the end."""
    lines = []
    report_md = os.path.join(os.path.abspath(config.out_dir), "report.md")
    if os.path.exists(report_md):
        with open(report_md, encoding="utf-8") as f:
            lines.append(f.read())
    failure = results.get("verify", {}).get("failure")
    if failure:
        lines.append(f"Parity gate failed:\n{failure}")
    lines.append(f"Run directory: {os.path.abspath(config.out_dir)} (report.md, report.json, "
                 "pareto.png, tflite/, manifest.json)")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config = _config_from_flags()
        config.validate()
    except (ValueError, TypeError) as error:
        raise app.UsageError(str(error)) from error
    os.makedirs(config.out_dir, exist_ok=True)
    try:
        strategy = tfkd.distribute.make(config.strategy, config.collective_timeout)
        results = run(config, strategy)
    except (ValueError, OSError, device.DeviceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except tf.errors.OpError as error:
        if not tfkd.distribute.is_distributed(strategy):
            raise
        print(f"error: a worker of the cluster failed or could not be reached ({error.message}"
              f"). Restart every worker with the same command: finished stages are skipped "
              "and the interrupted one resumes from its last backup.", file=sys.stderr)
        return 3
    if not tfkd.distribute.is_chief(strategy):
        print(f"Worker {tfkd.distribute.worker_label(strategy)}: training stages done; the "
              "chief writes the artifacts.")
        return 0
    files.write_text(os.path.join(config.out_dir, "flags.txt"), FLAGS.flags_into_string())
    print(format_summary(results, config))
    return 1 if results.get("verify", {}).get("failure") else 0


if __name__ == "__main__":
    app.run(main)
