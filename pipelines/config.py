"""`Config`: every setting of a pipeline run, with its default, its help text and its check.

This is the one place defaults live. Library defaults are the library's own constants, read
here; the absl flags of every pipeline program are generated from the fields (`define_flags`),
and `Config` checks itself when it is made, so a `Config` that exists is valid.
"""

import contextlib
import contextvars
import dataclasses
import functools
import os
import typing
from collections.abc import Iterator

import tensorflow as tf
from absl import flags

import tfkd
from pipelines import policy
from tfkd import export
from tfkd.distill import training
from tfkd.measure import benchmark, parity

AUTO_CHOICES = ("auto", "on", "off")
TEACHER_CACHES = ("off", "memory", "disk")
TEACHER_FILE_SUFFIXES = (".keras", ".h5", ".tflite")


# Which stages read a setting (its `read_by`). A stage's fingerprint holds the settings it reads
# and the files it consumes, so changing a setting reruns the stages that read it and those
# downstream of them (pipelines/run.py); a setting no stage reads changes how or where a run
# happens, not what it computes. The data settings are read where the data is first learned
# from; every later stage is downstream of those.
DATA = ("teacher", "baseline")
TRAINING = ("teacher", "baseline", "student", "qad")
DISTILLING = ("student", "qad")


def setting(
    default,
    help: str,
    *,
    read_by: tuple[str, ...],
    choices: tuple | None = None,
    at_least=None,
    above=None,
    hint: str = "",
):
    """A `Config` field: its default, its flag's help, the range it is checked against, and the
    stages that read it (`read_by`, stage names; `()` for none)."""
    metadata = {
        "help": help,
        "choices": choices,
        "at_least": at_least,
        "above": above,
        "hint": hint,
        "read_by": read_by,
    }
    return dataclasses.field(default=default, metadata=metadata)


# The settings read while a stage runs (`reading`): the scheduler records them in the manifest,
# and the tests hold every stage to the settings it declares (`read_by`).
_READS: contextvars.ContextVar[set | None] = contextvars.ContextVar("config_reads", default=None)


@contextlib.contextmanager
def reading() -> Iterator[set[str]]:
    """Collects the names of the `Config` fields read inside the block, in this thread."""
    reads: set[str] = set()
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on; written to the run directory as config.json."""

    dataset: str = setting(
        "digits",
        "digits, folder:PATH or tfds:NAME (classification); coco:PATH or yolo:PATH (object "
        "detection, docs/detection.md).",
        read_by=DATA,
    )
    data_dir: str | None = setting(None, "Where tfds datasets live.", read_by=DATA)
    image_size: tuple[int, ...] = setting(
        (),
        "H,W of the student's input (e.g. 128,128). Default: the images' own size when they "
        "all share one, else 224,224.",
        read_by=DATA,
    )
    teacher_image_size: tuple[int, ...] = setting(
        (),
        "H,W the teacher sees (the same images at its own, usually higher, resolution). "
        "Default: --image_size.",
        read_by=DATA,
    )
    resize: str = setting(
        "stretch",
        "How images of another aspect ratio reach the input size: stretch, crop (the "
        "centre) or pad (black bars). Recorded in the model card.",
        choices=tfkd.data.RESIZE_POLICIES,
        read_by=DATA,
    )
    data_cache: str = setting(
        "auto",
        "Where decoded images are kept: memory, disk (reused by later runs on the same "
        "files; $TFKD_CACHE or ~/.cache/tfkd) or auto (memory up to 1 GiB).",
        choices=tfkd.data.DATA_CACHES,
        read_by=(),
    )
    label_fraction: float = setting(
        1.0,
        "Keep the labels of this stratified share of the training split and hide the "
        "others (for experiments with few labels): the teacher and the student alone learn from "
        "the labeled images, the distilled student from the teacher on every image.",
        above=0,
        read_by=DATA,
    )
    validation_fraction: float = setting(
        tfkd.data.DEFAULT_VALIDATION_FRACTION,
        "Share of each class held out of the training images for validation where the "
        "dataset has no validation split: the teacher check, the race of --loss=auto and "
        "--select decide on it, so more images resolve smaller differences.",
        read_by=DATA,
    )
    teacher_pool: float = setting(
        0.0,
        "Set this stratified share of the training split aside for the teacher alone, all "
        "labeled: a stand-in for a teacher pretrained on images you do not have. The students "
        "(alone and distilled) never see them; --label_fraction applies to the rest. With a "
        "teacher file nobody trains on them (a search's trials, which share the base run's "
        "teacher, keep the base's student data so). 0: the teacher learns from the students' "
        "labeled images.",
        read_by=DATA,
    )
    unlabeled: str = setting(
        "",
        "folder:PATH of extra images without labels (any layout), e.g. all the photos "
        "nobody labeled: the distilled student learns from the teacher's soft targets on them "
        "(the teacher cache covers them too).",
        read_by=DATA,
    )
    teacher: str = setting(
        "cnn_large",
        "Teacher: a registered model name to train, keras_applications:NAME (a "
        "keras.applications backbone with a new head, fine-tuned), or a trained teacher to "
        "load: a .keras file (tf_keras or Keras 3), an .h5 file or a SavedModel directory.",
        read_by=("teacher",),
    )
    teacher_input: str = setting(
        tfkd.distill.teacher_input.AUTO,
        "The pixel values a teacher file expects: auto (each "
        "convention measured on validation, the best kept), student (tfkd's normalisation), "
        "raw (0-255, e.g. an in-model Rescaling), unit (0-1), symmetric (-1..1) or caffe (BGR, "
        "ImageNet mean subtracted).",
        choices=(tfkd.distill.teacher_input.AUTO, *tfkd.distill.teacher_input.CONVENTIONS),
        read_by=("teacher",),
    )
    teacher_weights: str = setting(
        "",
        "Starting weights of a teacher built by name: imagenet (keras_applications "
        "teachers) or an .h5 weights file, matched by layer name. Empty: random.",
        read_by=("teacher",),
    )
    teacher_head_epochs: int = setting(
        2,
        "With --teacher_weights: epochs training only the new head (backbone frozen) before "
        "--teacher_epochs of fine-tuning the whole network at --finetune_learning_rate.",
        at_least=0,
        hint="0 fine-tunes everything from the start",
        read_by=("teacher",),
    )
    finetune_learning_rate: float = setting(
        1e-4,
        "Peak learning rate when fine-tuning a pretrained teacher's whole network.",
        above=0,
        read_by=("teacher",),
    )
    teacher_cache: str = setting(
        "off",
        "Run the teacher once and train on its stored logits (tfkd.distill.teacher_cache): "
        "memory, or disk (kept in the run directory and reused by reruns).",
        choices=TEACHER_CACHES,
        read_by=DISTILLING,
    )
    teacher_cache_views: int = setting(
        1,
        "Augmented views cached per training image when --flip/--pad_crop are on (one "
        "teacher pass each); must be 1 without augmentation.",
        at_least=1,
        read_by=DISTILLING,
    )
    teacher_cache_dir: str = setting(
        "",
        "Where --teacher_cache=disk keeps the logits; empty: RUN/teacher_cache. Runs may "
        "share one (a search's trials do): the first builds it, the others reuse it.",
        read_by=(),
    )
    student: str = setting(
        "cnn_small",
        "Student: a registered model name, or your own model as a .keras file "
        "(Keras 2 or 3), an .h5 file or a Keras SavedModel directory; its weights are the "
        "starting point of the distilled student and of the student alone.",
        read_by=("baseline",),
    )
    student_weights: str = setting(
        "",
        "Starting weights of the student: imagenet (keras.applications students, e.g. "
        "mobilenet_v3_small) or an .h5 weights file, matched by layer name. Empty: random.",
        read_by=("baseline",),
    )
    teacher_epochs: int = setting(
        30, "Epochs of teacher training.", at_least=1, read_by=("teacher",)
    )
    student_epochs: int = setting(
        30,
        "Epochs of the baseline and of distillation.",
        at_least=1,
        read_by=("baseline", "student"),
    )
    batch_size: int = setting(64, "Global batch size.", at_least=1, read_by=TRAINING)
    optimizer: str = setting(
        training.DEFAULT_OPTIMIZER,
        "Optimizer of every training stage.",
        choices=training.OPTIMIZERS,
        read_by=TRAINING,
    )
    learning_rate: float = setting(
        training.DEFAULT_LEARNING_RATE,
        "Peak learning rate (cosine decay to 0).",
        above=0,
        read_by=("teacher", "baseline", "student"),
    )
    loss: str = setting(
        tfkd.distill.calibration.DEFAULT_LOSS,
        "Distillation loss: kd, dkd, dist, logit_mse "
        "(tfkd.losses.available()) with the settings you give, other parameters at the paper's "
        "defaults; or auto: KD (T=4, --student_loss_weight 0.9) and DIST (weight 0.5) race "
        "over the first fifth of --student_epochs, compared on validation, and the winner "
        "carries on (docs/pipeline.md).",
        read_by=DISTILLING,
    )
    loss_params: tuple[str, ...] = setting(
        (),
        "Other parameters of --loss as key=value, e.g. alpha=1,beta=8 for dkd, "
        "beta=1,gamma=2 for dist, or standardize=true for any logit loss (z-scored logits, "
        "Sun et al. 2024).",
        read_by=DISTILLING,
    )
    temperature: float = setting(
        tfkd.losses.DEFAULT_TEMPERATURE,
        "Temperature of the distillation loss (> 0).",
        read_by=DISTILLING,
    )
    features: tuple[str, ...] = setting(
        (),
        "Feature distillation pairs teacher_layer:student_layer:loss:weight with a feature "
        "loss (hint, attention, rkd), e.g. stage1_block0_out:stage1_block0_out:attention:1000.",
        read_by=DISTILLING,
    )
    student_loss_weight: float = setting(
        tfkd.distill.distiller.DEFAULT_STUDENT_LOSS_WEIGHT,
        "Weight of the hard-label loss, in [0, 1] (default measured in "
        "benchmarks/kd_defaults_cifar10.py).",
        read_by=DISTILLING,
    )
    distillation_warmup_epochs: int = setting(
        0,
        "Ramp the distillation term up from 0 over this many epochs (0 = none).",
        at_least=0,
        hint="0 turns it off",
        read_by=DISTILLING,
    )
    early_stopping_patience: int = setting(
        0,
        "Stop a training stage after this many epochs without a better validation accuracy "
        "and keep its best weights (0 = off).",
        at_least=0,
        hint="0 turns it off",
        read_by=TRAINING,
    )
    flip: bool = setting(
        False, "Random horizontal flip in training (natural images only).", read_by=TRAINING
    )
    pad_crop: int = setting(
        0,
        "Random pad-and-crop by this many pixels in training; 0 = off.",
        at_least=0,
        hint="0 turns it off",
        read_by=TRAINING,
    )
    augment: str = setting(
        "none",
        "Consistent teaching (Beyer et al. 2022): the teacher and the distilled student "
        "see the same mixture of two training images, mixup or cutmix; a mixed image is taught "
        "by the teacher alone. Distillation only; with --teacher_cache the cached views are "
        "mixed (more --teacher_cache_views, more mixtures).",
        choices=("none",) + tfkd.data.mixing.KINDS,
        read_by=DISTILLING,
    )
    mix_fraction: float = setting(
        tfkd.data.mixing.DEFAULT_FRACTION,
        "Share of the distillation examples --augment mixes; the others keep their label.",
        above=0,
        read_by=DISTILLING,
    )
    seed: int = setting(0, "Seed of data splits, shuffling and initialisation.", read_by=DATA)
    out_dir: str = setting("runs/default", "Run directory.", read_by=())
    overwrite: bool = setting(
        False,
        "Run every selected stage again, even those whose settings and inputs are unchanged.",
        read_by=(),
    )
    stages: tuple[str, ...] = setting(
        ("all",),
        "Stages to run, by name (docs/pipeline.md, 'Stages'), or 'all' (which skips finished "
        "stages; named stages always run again).",
        read_by=(),
    )
    # A run may resume on another cluster: the strategy changes speed, not the result.
    strategy: str = setting(
        "default",
        "tf.distribute strategy of the training stages: mirrored = every local GPU, "
        "multi_worker = the cluster in TF_CONFIG (run the same command on every worker), tpu. "
        "--batch_size stays the global batch.",
        choices=tfkd.distill.distribute.STRATEGIES,
        read_by=(),
    )
    collective_timeout: int = setting(
        600,
        "Multi-worker: seconds a worker waits for the others before failing (so a dead "
        "worker stops the run, which then resumes from its backup when restarted).",
        at_least=1,
        read_by=(),
    )
    isolate_stages: bool = setting(
        False,
        "Run each training stage and the export in a fresh process (the program "
        "re-executes itself and skips finished stages): a run's peak memory is then its largest "
        "stage's, not the sum of what earlier stages left behind. For photo-sized data; each "
        "restart costs a TensorFlow import and a data load (use --data_cache=disk and "
        "--teacher_cache=disk).",
        read_by=(),
    )
    mixed_precision: str = setting(
        "auto",
        "Train the teacher, the baseline and the distilled student in mixed_float16: "
        "auto = only when a GPU is visible. Saved and exported models are float32; QAD always "
        "trains in float32 (TF-MOT's fake-quant layers are float32).",
        choices=AUTO_CHOICES,
        read_by=TRAINING,
    )
    jit_compile: str = setting(
        "auto",
        "Compile training steps with XLA: auto = only when a GPU is visible (on 2 CPU "
        "cores XLA made distillation slower: benchmarks/RESULTS.md, distillation speed).",
        choices=AUTO_CHOICES,
        read_by=TRAINING,
    )
    qat_epochs: int = setting(
        5,
        "Epochs of quantization-aware distillation; 0 skips it.",
        at_least=0,
        hint="0 skips QAD",
        read_by=("qad",),
    )
    qat_learning_rate: float = setting(
        1e-4, "Peak learning rate of quantization-aware distillation.", above=0, read_by=("qad",)
    )
    modes: tuple[str, ...] = setting(
        ("float32", "float16", "dynamic", "int8", "int8_io_uint8"),
        f"Export modes of the float student, from {list(export.MODES)}; the QAD student is "
        "exported in the integer ones among them.",
        read_by=("export",),
    )
    export_output: str = setting(
        "probabilities",
        "What exported students output: probabilities (a softmax folded into "
        "the graph, what MediaPipe Tasks and Android apps expect) or logits. The teacher's file "
        "keeps logits.",
        choices=tfkd.export.OUTPUTS,
        read_by=("export",),
    )
    export_teacher: bool = setting(
        True,
        "Export the teacher too (teacher_float32.tflite, logits), verify and time it: the "
        "report's reference, and a .tflite teacher a later run can take. A search's trials leave "
        "it out: they share the base run's teacher.",
        read_by=("export",),
    )
    select: str = setting(
        "best",
        "Which student to quantize and ship: the distilled student unless the "
        "student alone is better beyond noise on validation (best, see --select_alpha), or "
        "always one of them.",
        choices=policy.SELECTIONS,
        read_by=("select",),
    )
    select_alpha: float = setting(
        policy.DEFAULT_SELECT_ALPHA,
        "Significance level of the paired tests (McNemar's exact "
        "test on the same validation images) behind --select=best and the teacher check: the "
        "student alone ships only when it is better at this level.",
        above=0,
        read_by=("student", "select"),
    )
    teacher_margin_points: float = setting(
        policy.DEFAULT_TEACHER_MARGIN_POINTS,
        "Warn when the teacher is not this many points better than the student alone.",
        at_least=0,
        read_by=("student",),
    )
    representative_size: int = setting(
        export.DEFAULT_REPRESENTATIVE_SIZE,
        "Calibration images for post-training int8.",
        at_least=1,
        read_by=("export",),
    )
    max_drop_points: float = setting(
        parity.DEFAULT_MAX_DROP_POINTS,
        "Largest accuracy drop (points) allowed from the float student to a .tflite.",
        at_least=0,
        read_by=("verify",),
    )
    threads: tuple[int, ...] = setting(
        (1,), "Thread counts of the latency benchmark.", read_by=("benchmark", "device")
    )
    benchmark_runs: int = setting(
        benchmark.DEFAULT_RUNS,
        "Timed runs of the latency benchmark.",
        at_least=1,
        read_by=("benchmark", "device"),
    )
    serial: str | None = setting(
        None, "adb serial of a phone for the device stage.", read_by=("device",)
    )
    benchmark_binary: str | None = setting(
        None, "Host path of Android benchmark_model.", read_by=("device",)
    )

    def __getattribute__(self, name: str):
        reads = _READS.get()
        if reads is not None and name in _FIELD_NAMES:
            reads.add(name)
        return object.__getattribute__(self, name)

    def __post_init__(self):
        self._validate()

    @property
    def task(self) -> str:
        """What the run distils: a detector for coco:/yolo: datasets, else a classifier."""
        return DETECTION if self.dataset.startswith(DETECTION_PREFIXES) else CLASSIFICATION

    @property
    def teacher_is_file(self) -> bool:
        return not tfkd.models.pretrained.is_application(self.teacher) and (
            self.teacher.endswith(TEACHER_FILE_SUFFIXES) or os.path.sep in self.teacher
        )

    @property
    def student_is_file(self) -> bool:
        return tfkd.models.is_model_file(self.student)

    @property
    def student_size(self) -> tuple[int, ...] | None:
        return tuple(self.image_size) if self.image_size else None

    @property
    def teacher_size(self) -> tuple[int, ...] | None:
        return tuple(self.teacher_image_size) if self.teacher_image_size else self.student_size

    @staticmethod
    def _on(setting_value: str) -> bool:
        """An auto/on/off setting: auto means on only where it helps, with a GPU."""
        if setting_value == "auto":
            return bool(tf.config.list_physical_devices("GPU"))
        return setting_value == "on"

    @property
    def use_mixed_precision(self) -> bool:
        return self._on(self.mixed_precision)

    @property
    def use_xla(self) -> bool:
        return self._on(self.jit_compile)

    @property
    def augmentation(self) -> tfkd.data.Augmentation | None:
        if not (self.flip or self.pad_crop):
            return None
        return tfkd.data.Augmentation(flip=self.flip, pad_crop=self.pad_crop)

    @property
    def mixing(self) -> tfkd.data.mixing.Mixing | None:
        if self.augment == "none":
            return None
        return tfkd.data.mixing.Mixing(self.augment, self.mix_fraction)

    def read_by(self, stage: str) -> dict:
        """The settings `stage` reads, by field name (its share of the stage's fingerprint)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if stage in f.metadata["read_by"]
        }

    @property
    def calibrated(self) -> bool:
        """Whether the distillation settings are chosen at the student stage (--loss=auto)."""
        return self.loss == tfkd.distill.calibration.AUTO and self.task == CLASSIFICATION

    @functools.cached_property
    def distillation_loss(self) -> tfkd.losses.LogitLoss | None:
        """--loss with --temperature (when it takes one) and --loss_params; None with
        --loss=auto, whose loss the student stage chooses, and for detection, whose losses are
        its own (tfkd.tasks.detection.models.DetectionDistiller)."""
        if self.calibrated or self.task == DETECTION:
            return None
        try:
            return tfkd.losses.from_spec(self.loss, self.loss_params, self.temperature)
        except (ValueError, TypeError) as error:
            params = f" --loss_params={','.join(self.loss_params)}" if self.loss_params else ""
            raise ValueError(f"--loss={self.loss}{params}: {error}") from error

    @functools.cached_property
    def feature_pairs(self) -> tuple:
        """--features as `tfkd.distill.features.FeaturePair`s (layer names are checked on the
        models)."""
        pairs = []
        for item in self.features:
            try:
                pairs.append(tfkd.distill.features.FeaturePair.parse(item))
            except ValueError as error:
                raise ValueError(f"--features: {error}") from error
        return tuple(pairs)

    def _validate(self) -> None:
        """Raises `ValueError` naming the first bad setting and its fix."""
        for field in dataclasses.fields(self):
            _check_range(field, getattr(self, field.name))
        for name in ("image_size", "teacher_image_size"):
            value = getattr(self, name)
            if value:
                try:
                    tfkd.data.check_image_size(value)
                except ValueError as error:
                    raise ValueError(f"--{name}={','.join(map(str, value))}: {error}") from error
        # The checks every task shares, then each task's own.
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(
                f"--validation_fraction must be in (0, 1). Received: {self.validation_fraction}"
            )
        if self.select_alpha >= 1.0:
            raise ValueError(f"--select_alpha must be in (0, 1). Received: {self.select_alpha}")
        if not 0.0 <= self.student_loss_weight <= 1.0:
            raise ValueError(
                f"--student_loss_weight must be in [0, 1]. Received: {self.student_loss_weight}"
            )
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"--threads must list thread counts >= 1. Received: {self.threads}")
        if self.task == DETECTION:
            self._validate_detection()
            return
        if self.label_fraction > 1.0:
            raise ValueError(f"--label_fraction must be in (0, 1]. Received: {self.label_fraction}")
        if not 0.0 <= self.teacher_pool < 1.0:
            raise ValueError(
                f"--teacher_pool must be in [0, 1): the share of the training images only the "
                f"teacher learns from. Received: {self.teacher_pool}"
            )
        if self.unlabeled and not self.unlabeled.startswith("folder:"):
            raise ValueError(
                f"--unlabeled={self.unlabeled}: give folder:PATH, a folder of "
                "images without labels."
            )
        if self.teacher_image_size and not self.image_size:
            raise ValueError(
                "--teacher_image_size needs --image_size too (the student's size), "
                "e.g. --image_size=128,128 --teacher_image_size=224,224."
            )
        self._validate_teacher_and_student()
        if self.strategy == "tpu" and self.qat_epochs:
            raise ValueError(
                "Quantization-aware training (TF-MOT) does not run on TPU: pass "
                "--qat_epochs=0 on TPU and run the qad stage on CPU/GPU (--stages="
                "qad,export,... --strategy=default with the same --out_dir)."
            )
        if self.mix_fraction > 1.0:
            raise ValueError(f"--mix_fraction must be in (0, 1]. Received: {self.mix_fraction}")
        if self.teacher_cache != "off":
            if self.augmentation is None and self.mixing is None and self.teacher_cache_views != 1:
                raise ValueError(
                    f"--teacher_cache_views={self.teacher_cache_views} without "
                    "--flip/--pad_crop/--augment would cache the same image "
                    "repeatedly; use 1."
                )
            if self.features:
                raise ValueError(
                    "--features needs the teacher's forward pass every step; the "
                    "teacher cache stores logits only. Drop --teacher_cache or "
                    "--features."
                )
        # Building them here fails fast; the built objects are kept for the run.
        _ = self.distillation_loss, self.feature_pairs
        if self.calibrated:
            given = [
                f"--{name}={getattr(self, name)}"
                for name, default in (
                    ("temperature", tfkd.losses.DEFAULT_TEMPERATURE),
                    ("student_loss_weight", tfkd.distill.distiller.DEFAULT_STUDENT_LOSS_WEIGHT),
                )
                if getattr(self, name) != default
            ]
            if self.loss_params:
                given.append(f"--loss_params={','.join(self.loss_params)}")
            if given:
                raise ValueError(
                    f"--loss=auto chooses the loss, temperature and hard-label "
                    f"weight itself, so {' '.join(given)} would be ignored. Fix: "
                    "name the loss too (e.g. --loss=kd), or drop them."
                )
        if not self.modes:
            raise ValueError(f"--modes is empty. Choose from {list(export.MODES)}")
        for mode in self.modes:
            export.check_mode(mode)

    def _validate_detection(self) -> None:
        """The settings of a detection run (docs/detection.md): detectors by name, a square
        input the detectors' strides divide, the modes MediaPipe's ObjectDetector runs, and none
        of the classification-only settings."""
        given = [
            f"--{f.name}={_flag_text(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if f.name in CLASSIFICATION_ONLY and getattr(self, f.name) != f.default
        ]
        if given:
            raise ValueError(
                f"--dataset={self.dataset} distils an object detector, which does not take "
                f"{' '.join(given)} (classification only). Fix: drop them; "
                "pipelines/configs/detection.flags has a detection recipe."
            )
        detectors = tfkd.tasks.detection.models.available()
        if self.teacher_is_file and not os.path.exists(self.teacher):
            raise ValueError(
                f"--teacher={self.teacher} does not exist. Give a trained detector's "
                f".keras/.h5 file or a detector name: {detectors}."
            )
        if self.teacher_is_file and self.teacher_weights:
            raise ValueError(
                f"--teacher_weights applies to a teacher built by name; --teacher={self.teacher} "
                "is a trained detector already. Drop --teacher_weights."
            )
        for name in ("teacher", "student") if not self.teacher_is_file else ("student",):
            if getattr(self, name) not in detectors:
                raise ValueError(
                    f"--{name}={getattr(self, name)} is not a detector. Detectors: {detectors} "
                    "(pipelines/configs/detection.flags)."
                )
        for name in ("teacher_weights", "student_weights"):
            value, detector = getattr(self, name), getattr(self, name.removesuffix("_weights"))
            pretrained = tfkd.tasks.detection.backbones.with_imagenet_weights()
            if value == tfkd.models.pretrained.IMAGENET and detector not in pretrained:
                raise ValueError(
                    f"--{name}=imagenet: {detector} has no ImageNet weights. Detectors with "
                    f"them: {pretrained}; or give an .h5 weights file."
                )
        self._check_weight_files()
        stride = max(tfkd.tasks.detection.models.STRIDES)
        size = tuple(self.image_size)
        if len(size) != 2 or size[0] != size[1] or size[0] % stride:
            raise ValueError(
                f"--image_size={_flag_text(size) or '(unset)'}: a detector takes a square "
                f"input whose side is a multiple of {stride}, e.g. --image_size=320,320."
            )
        modes = tfkd.tasks.detection.export.MODES
        other = [m for m in self.modes if m not in modes]
        if other or not self.modes:
            raise ValueError(
                f"--modes={_flag_text(self.modes)}: detectors export to {list(modes)} "
                f"(what MediaPipe's ObjectDetector runs). Fix: --modes={','.join(modes)}."
            )
        if self.jit_compile == "on":
            raise ValueError("--jit_compile=on: detection trains without XLA. Drop --jit_compile.")
        if not self.temperature > 0:
            raise ValueError(f"--temperature must be > 0. Received: {self.temperature}")

    def _validate_teacher_and_student(self) -> None:
        if self.teacher_is_file:
            if not os.path.exists(self.teacher):
                raise ValueError(
                    f"--teacher={self.teacher} does not exist. Give a .keras/.h5 "
                    "file, a SavedModel directory or a registered model name."
                )
            if self.teacher.endswith(".tflite"):
                raise ValueError(
                    f"--teacher={self.teacher}: a .tflite teacher can only teach through the "
                    "teacher cache of the library (tfkd.distill.teacher_cache with teacher=None); "
                    "the "
                    "pipeline also evaluates and exports its teacher, which needs a model. Give "
                    "the .keras/.h5/SavedModel it was converted from."
                )
            if self.teacher_weights:
                raise ValueError(
                    f"--teacher_weights applies to a teacher built by name; "
                    f"--teacher={self.teacher} is a trained model already. Drop "
                    "--teacher_weights."
                )
        elif self.teacher_input not in (
            tfkd.distill.teacher_input.AUTO,
            tfkd.distill.teacher_input.STUDENT,
        ):
            raise ValueError(
                f"--teacher_input={self.teacher_input} applies to a teacher file; "
                f"--teacher={self.teacher} is built and trained by tfkd on its own "
                "normalisation. Drop --teacher_input."
            )
        elif tfkd.models.pretrained.is_application(self.teacher):
            try:
                tfkd.models.pretrained.application_name(self.teacher)
            except ValueError as error:
                raise ValueError(f"--teacher={self.teacher}: {error}") from error
        elif self.teacher not in tfkd.models.available():
            raise ValueError(
                f"--teacher={self.teacher} is not a registered model nor a .keras "
                f"file. Available models: {tfkd.models.available()}, or "
                "keras_applications:NAME."
            )
        elif self.teacher_weights == tfkd.models.pretrained.IMAGENET:
            raise ValueError(
                f"--teacher_weights=imagenet: --teacher={self.teacher} has no "
                "ImageNet weights. Use a keras_applications:NAME teacher, or give "
                "an .h5 weights file."
            )
        if self.student_is_file:
            if not os.path.exists(self.student):
                raise ValueError(
                    f"--student={self.student} does not exist. Give a .keras/.h5 "
                    "file, a Keras SavedModel directory or a registered model name."
                )
            if self.student_weights:
                raise ValueError(
                    f"--student_weights applies to a student built by name; "
                    f"--student={self.student} brings its own weights. Drop "
                    "--student_weights."
                )
        elif self.student not in tfkd.models.available():
            raise ValueError(
                f"--student={self.student} is not a registered model nor a model "
                f"file. Available: {tfkd.models.available()}"
            )
        if (
            self.student_weights == tfkd.models.pretrained.IMAGENET
            and self.student not in tfkd.models.with_imagenet_weights()
        ):
            raise ValueError(
                f"--student_weights=imagenet: --student={self.student} has no "
                "ImageNet weights. Students with them: "
                f"{tfkd.models.with_imagenet_weights()}; or give an .h5 file."
            )
        self._check_weight_files()

    def _check_weight_files(self) -> None:
        """--teacher_weights and --student_weights name imagenet or a file that exists."""
        for name in ("teacher_weights", "student_weights"):
            value = getattr(self, name)
            if value and value != tfkd.models.pretrained.IMAGENET and not os.path.isfile(value):
                raise ValueError(
                    f"--{name}={value} does not exist. Give imagenet or an .h5 "
                    "weights file (model.save_weights('....h5'))."
                )


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Config))

CLASSIFICATION, DETECTION = "classification", "detection"
DETECTION_PREFIXES = tuple(f"{kind}:" for kind in tfkd.tasks.detection.data.FORMATS)
# Settings a detection run refuses away from their defaults: the classification pipeline's
# features that detection does not have (yet), named in the error rather than ignored.
CLASSIFICATION_ONLY = frozenset(
    {
        "data_dir",
        "teacher_image_size",
        "resize",
        "label_fraction",
        "teacher_pool",
        "unlabeled",
        "teacher_input",
        "teacher_cache",
        "teacher_cache_views",
        "loss",
        "loss_params",
        "features",
        "distillation_warmup_epochs",
        "early_stopping_patience",
        "flip",
        "pad_crop",
        "augment",
        "export_output",
    }
)


def _flag_text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


def declared_reads(stages: set[str]) -> set[str]:
    """The settings a stage may read, given itself and its upstream stages (`stages`): those
    they declare, and those no result depends on (`read_by=()`: where and how a run happens)."""
    return {
        f.name
        for f in dataclasses.fields(Config)
        if not f.metadata["read_by"] or stages & set(f.metadata["read_by"])
    }


def _check_range(field: dataclasses.Field, value) -> None:
    meta = field.metadata
    name = field.name
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ValueError(f"--{name}={value} is unknown. Available: {list(meta['choices'])}")
    hint = f" ({meta['hint']})" if meta["hint"] else ""
    # Written as `not value >= bound` so that NaN fails too.
    if meta["at_least"] is not None and not value >= meta["at_least"]:
        raise ValueError(f"--{name} must be >= {meta['at_least']}{hint}. Received: {value}")
    if meta["above"] is not None and not value > meta["above"]:
        raise ValueError(f"--{name} must be > {meta['above']}{hint}. Received: {value}")


def element_type(field: dataclasses.Field):
    """The element type of a tuple field, or None for a scalar field."""
    if typing.get_origin(field.type) is tuple:
        return typing.get_args(field.type)[0]
    return None


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines one absl flag per `Config` field, with the field's default and help (once per
    `flag_values`: every pipeline program defines them, and one process may import several)."""
    for field in dataclasses.fields(Config):
        name, default, meta = field.name, field.default, field.metadata
        if name in flag_values:
            continue
        element = element_type(field)
        if element is not None:
            flags.DEFINE_list(
                name,
                [str(v) for v in typing.cast(tuple, default)],
                meta["help"],
                flag_values=flag_values,
            )
        elif meta["choices"] is not None:
            flags.DEFINE_enum(
                name, default, list(meta["choices"]), meta["help"], flag_values=flag_values
            )
        elif field.type is bool:
            flags.DEFINE_bool(name, default, meta["help"], flag_values=flag_values)
        elif field.type is int:
            flags.DEFINE_integer(name, default, meta["help"], flag_values=flag_values)
        elif field.type is float:
            flags.DEFINE_float(name, default, meta["help"], flag_values=flag_values)
        else:
            flags.DEFINE_string(name, default, meta["help"], flag_values=flag_values)


def to_flags(config: Config) -> list[str]:
    """`config` as flag lines: a --flagfile of them makes the same `Config`."""
    lines = []
    for field in dataclasses.fields(Config):
        value = getattr(config, field.name)
        if value is None:
            continue
        if field.type is bool:
            lines.append(f"--{'' if value else 'no'}{field.name}")
        elif element_type(field) is not None:
            lines.append(f"--{field.name}={','.join(str(v) for v in value)}")
        else:
            lines.append(f"--{field.name}={value}")
    return lines


def from_flags(flag_values: flags.FlagValues = flags.FLAGS, **overrides) -> Config:
    """The `Config` of parsed flags (with `overrides` for programs that fix some settings)."""
    values = {}
    for field in dataclasses.fields(Config):
        value = flag_values[field.name].value
        element = element_type(field)
        if element is not None:
            try:
                value = tuple(element(v) for v in value)
            except ValueError as error:
                raise ValueError(f"--{field.name}={','.join(value)}: {error}") from error
        values[field.name] = value
    values.update(overrides)
    return Config(**values)
