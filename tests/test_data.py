import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import tfkd
from tests.conftest import CIFAR_SAMPLE
from tfkd.keras import keras

CIFAR_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def as_arrays(ds):
    images, labels = zip(*ds.as_numpy_iterator())
    return np.stack(images), np.array(labels)


def test_digits_split_is_complete_stratified_and_deterministic():
    splits = tfkd.data.load("digits")
    assert splits.num_classes == 10
    assert sum(splits.sizes.values()) == 1797
    train_x, train_y = as_arrays(splits.train)
    test_x, test_y = as_arrays(splits.test)
    assert train_x.shape[1:] == (8, 8, 1) and train_x.dtype == np.uint8 and train_x.max() <= 16
    assert len(test_y) == splits.sizes["test"]
    # Stratified: every class keeps about a fifth of its images in test.
    for label in range(10):
        share = np.sum(test_y == label) / (np.sum(test_y == label) + np.sum(train_y == label))
        assert 0.15 < share < 0.27
    again_x, _ = as_arrays(tfkd.data.load("digits").test)
    np.testing.assert_array_equal(again_x, test_x)
    other_x, _ = as_arrays(tfkd.data.load("digits", seed=1).test)
    assert not np.array_equal(other_x, test_x)


def test_stratified_split_holds_out_the_fraction_of_each_class_disjointly():
    labels = np.array([0] * 10 + [1] * 20 + [2] * 30)
    kept, held = tfkd.data.stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([kept, held])) == list(range(60))
    assert [np.sum(labels[held] == c) for c in range(3)] == [2, 4, 6]


def test_preprocessing_normalizes_with_the_recorded_formula():
    prep = tfkd.data.Preprocessing((2, 2), 3, 1 / 255, (0.4, 0.5, 0.6), (0.2, 0.25, 0.5))
    raw = np.random.default_rng(0).integers(0, 256, (2, 2, 2, 3)).astype(np.uint8)
    expected = (raw / 255.0 - np.array([0.4, 0.5, 0.6])) / np.array([0.2, 0.25, 0.5])
    np.testing.assert_allclose(prep.normalize(raw), expected, rtol=1e-5, atol=1e-6)
    assert tfkd.data.Preprocessing.from_dict(prep.to_dict()) == prep
    assert prep.input_shape == (2, 2, 3)


def test_batches_are_normalized_shuffled_reproducibly_and_differently_each_epoch():
    splits = tfkd.data.load("digits")
    ds = tfkd.data.batches(splits.train, splits.preprocessing, 32, shuffle=True, seed=5)
    first_epoch = [y.numpy() for _, y in ds]
    second_epoch = [y.numpy() for _, y in ds]
    rebuilt = tfkd.data.batches(splits.train, splits.preprocessing, 32, shuffle=True, seed=5)
    rebuilt_labels = [y for _, y in rebuilt.as_numpy_iterator()]
    np.testing.assert_array_equal(np.concatenate(first_epoch), np.concatenate(rebuilt_labels))
    assert not np.array_equal(np.concatenate(first_epoch), np.concatenate(second_epoch))
    x, _ = next(iter(ds))
    assert x.dtype == tf.float32 and x.shape[1:] == (8, 8, 1)
    assert float(tf.reduce_min(x)) >= -1.0 and float(tf.reduce_max(x)) <= 1.0
    assert sum(len(y) for y in first_epoch) == splits.sizes["train"]


def test_flip_gives_the_image_or_its_mirror():
    images = np.random.default_rng(0).integers(0, 256, (64, 5, 5, 3)).astype(np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(64, np.int64)))
    prep = tfkd.data.Preprocessing((5, 5), 3, 1.0, (0.0,) * 3, (1.0,) * 3)
    augmented = tfkd.data.batches(
        ds, prep, 64, augmentation=tfkd.data.Augmentation(flip=True, pad_crop=0), seed=1
    )
    out = next(iter(augmented))[0].numpy()
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_pad_crop_gives_a_window_of_the_zero_padded_image():
    images = np.random.default_rng(1).integers(1, 256, (16, 6, 6, 1)).astype(np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(16, np.int64)))
    prep = tfkd.data.Preprocessing((6, 6), 1, 1.0, (0.0,), (1.0,))
    augmentation = tfkd.data.Augmentation(flip=False, pad_crop=2)
    out = next(iter(tfkd.data.batches(ds, prep, 16, augmentation=augmentation, seed=2)))[0]
    shifted = 0
    for o, i in zip(out.numpy(), images):
        padded = np.pad(i, ((2, 2), (2, 2), (0, 0)))
        windows = [padded[r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        assert any(np.array_equal(o, w) for w in windows)
        shifted += not np.array_equal(o, i)
    assert shifted > 8
    with pytest.raises(ValueError, match="pad_crop"):
        tfkd.data.Augmentation(pad_crop=-1)


def test_folder_loader_reads_a_real_cifar10_sample():
    splits = tfkd.data.load(f"folder:{CIFAR_SAMPLE}", seed=0)
    assert splits.class_names == CIFAR_CLASSES
    # 8 train images per class: 10% (one per class) held out for validation; test/ is given.
    assert splits.sizes == {"train": 70, "validation": 10, "test": 40}
    assert splits.preprocessing.input_shape == (32, 32, 3)
    images, labels = as_arrays(splits.test)
    assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [4] * 10
    _, val_labels = as_arrays(splits.validation)
    assert sorted(val_labels.tolist()) == list(range(10))


def test_folder_pixels_match_an_independent_decoder(tmp_path):
    for cls in CIFAR_CLASSES[:2]:
        source = os.path.join(CIFAR_SAMPLE, "train", cls)
        first, second = sorted(os.listdir(source))[:2]
        for split, name in (("train", first), ("train", second), ("test", first)):
            os.makedirs(tmp_path / split / cls, exist_ok=True)
            shutil.copy(os.path.join(source, name), tmp_path / split / cls / name)
    splits = tfkd.data.load(f"folder:{tmp_path}", validation_fraction=0.4)
    images, labels = as_arrays(splits.test)
    for image, label in zip(images, labels):
        directory = tmp_path / "test" / CIFAR_CLASSES[label]
        reference = np.asarray(Image.open(directory / os.listdir(directory)[0]).convert("RGB"))
        assert np.mean(np.abs(image.astype(int) - reference.astype(int))) < 1.5


def test_folder_without_test_split_carves_disjoint_stratified_splits(tmp_path):
    shutil.copytree(os.path.join(CIFAR_SAMPLE, "train"), tmp_path / "train")
    splits = tfkd.data.load(f"folder:{tmp_path}", validation_fraction=0.25, seed=1)
    # 2 of 8 per class go to test, then round(6 * 0.25) = 2 of the remaining 6 to validation.
    assert splits.sizes == {"test": 20, "validation": 20, "train": 40}
    seen = [
        as_arrays(getattr(splits, s))[0].reshape(-1, 32 * 32 * 3)
        for s in ("train", "validation", "test")
    ]
    rows = {row.tobytes() for part in seen for row in part}
    assert len(rows) == 80  # nothing appears in two splits


def test_missing_folder_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tfkd.data.load(f"folder:{tmp_path / 'nope'}")


def test_folder_without_train_explains_the_layout(tmp_path):
    os.makedirs(tmp_path / "cats")
    with pytest.raises(ValueError, match=r"no 'train' subfolder \(found: \['cats'\]\)"):
        tfkd.data.load(f"folder:{tmp_path}")


def test_empty_train_folder_is_rejected(tmp_path):
    os.makedirs(tmp_path / "train" / "cat")
    with pytest.raises(ValueError, match=r"holds no images \(.jpg"):
        tfkd.data.load(f"folder:{tmp_path}")


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "empty"])
def test_unreadable_image_is_named_before_training(tmp_path, corruption):
    shutil.copytree(CIFAR_SAMPLE, tmp_path / "data")
    good = tmp_path / "data" / "train" / "cat" / sorted(os.listdir(tmp_path / "data/train/cat"))[0]
    content = {
        "garbage": b"not an image at all",
        "truncated": good.read_bytes()[:200],
        "empty": b"",
    }[corruption]
    (tmp_path / "data" / "train" / "cat" / "broken.jpg").write_bytes(content)
    with pytest.raises(ValueError, match=r"1 image\(s\).*broken\.jpg"):
        tfkd.data.load(f"folder:{tmp_path / 'data'}")


def test_unknown_dataset_names_list_the_choices():
    for name in ("no_such_dataset_xyz", "ftp://x", "folderr:abc"):
        with pytest.raises(ValueError, match="Unknown dataset.*'digits', 'folder:PATH'"):
            tfkd.data.load(name)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"validation_fraction": 0},
        {"test_fraction": 1.0},
        {"image_size": (0, 4)},
        {"image_size": (16, 16)},
    ],
)
def test_bad_loader_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        tfkd.data.load("digits", **kwargs)


def test_tfds_without_local_copy_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build mnist --data_dir"):
        tfkd.data.load("tfds:mnist", data_dir=str(tmp_path), download=False)


def test_tfds_download_failure_is_explained(tmp_path, monkeypatch):
    def offline(self, *args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(RuntimeError, match="Could not download.*network is unreachable.*Offline"):
        tfkd.data.load("mnist", data_dir=str(tmp_path))


class TfkdTinyImages(tfds.core.GeneratorBasedBuilder):
    """A tfds dataset generated locally, so the real tfds path is tested offline."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(6, 6, 3)),
                    "label": tfds.features.ClassLabel(names=["left", "right"]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(20, 0), "test": self._generate_examples(6, 1)}

    def _generate_examples(self, n, seed):
        for i in range(n):
            yield i, {"image": np.full((6, 6, 3), 10 * i + seed, np.uint8), "label": i % 2}


def test_tfds_source_loads_a_prepared_dataset(tmp_path):
    splits = tfkd.data.load(
        "tfds:tfkd_tiny_images", data_dir=str(tmp_path), validation_fraction=0.1
    )
    assert splits.class_names == ("left", "right")
    assert splits.sizes == {"train": 18, "validation": 2, "test": 6}
    images, labels = as_arrays(splits.test)
    assert sorted(images[:, 0, 0, 0].tolist()) == [1, 11, 21, 31, 41, 51]
    assert all(label == (image[0, 0, 0] // 10) % 2 for image, label in zip(images, labels))


def test_check_model_rejects_class_count_and_shape_mismatches():
    splits = tfkd.data.load("digits")
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    splits.check_model(keras.Model(inputs, keras.layers.Dense(10)(flat)))
    with pytest.raises(ValueError, match="emits 100 logits but dataset 'digits' has 10 classes"):
        splits.check_model(keras.Model(inputs, keras.layers.Dense(100)(flat)), role="teacher")
    other = keras.Input((32, 32, 3))
    wrong = keras.Model(other, keras.layers.Dense(10)(keras.layers.Flatten()(other)))
    with pytest.raises(ValueError, match=r"inputs of shape \(32, 32, 3\).*\(8, 8, 1\)"):
        splits.check_model(wrong)


def _splits_at_two_sizes(count=12):
    """The same random 16x16 pictures, and the same pictures upscaled 2x (nearest) to 32x32."""
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)
    big = np.kron(small, np.ones((1, 2, 2, 1), np.uint8))
    labels = np.arange(count, dtype=np.int64) % 2
    prep = tfkd.data.photo_preprocessing((16, 16), 3)

    def splits(images, size):
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        return tfkd.data.Splits(
            "pairs",
            ("a", "b"),
            prep.at(size),
            ds,
            ds,
            ds,
            {"train": count, "validation": count, "test": count},
        )

    return splits(small, (16, 16)), splits(big, (32, 32))


def test_paired_batches_show_the_teacher_and_the_student_one_view():
    student, teacher = _splits_at_two_sizes()
    augmentation = tfkd.data.Augmentation(flip=True, pad_crop=3)
    batches = tfkd.data.paired_batches(
        student, teacher, "train", 4, shuffle=True, augmentation=augmentation, seed=5
    )
    differs_from_input = 0
    for _epoch in range(2):
        for inputs, _labels in batches:
            s, t = inputs["image"].numpy(), inputs[tfkd.data.TEACHER_IMAGE].numpy()
            assert s.shape[1:] == (16, 16, 3) and t.shape[1:] == (32, 32, 3)
            # Every other pixel of the teacher's view is the student's view, exactly: one flip
            # and one (scaled) shift.
            np.testing.assert_array_equal(t[:, ::2, ::2], s)
            differs_from_input += int(
                not np.array_equal(
                    s,
                    student.preprocessing.normalize(
                        np.stack([x for x, _ in student.train.as_numpy_iterator()])[: len(s)]
                    ).numpy(),
                )
            )
    assert differs_from_input > 0, "the augmentation did something"


def test_a_distiller_teaches_at_the_teachers_own_resolution():
    student_splits, teacher_splits = _splits_at_two_sizes(count=16)
    teacher = tfkd.models.build("cnn_tiny", (32, 32, 3), 2)
    student = tfkd.models.build("cnn_tiny", (16, 16, 3), 2)
    batches = tfkd.data.paired_batches(student_splits, teacher_splits, "train", 8)
    distiller = tfkd.Distiller(student, teacher)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(batches, validation_data=batches, epochs=2, verbose=0)
    assert np.isfinite(history.history["distillation_loss"]).all()
    # The KD term of a step is computed from the teacher on the big images and the student on
    # the small ones: recomputed with numpy.
    ((inputs, labels),) = batches.take(1)
    got = distiller.evaluate(batches.take(1), return_dict=True, verbose=0)
    t = teacher.predict(inputs[tfkd.data.TEACHER_IMAGE], verbose=0) / 4.0
    s = student.predict(inputs["image"], verbose=0) / 4.0
    p_t = np.exp(t - t.max(-1, keepdims=True))
    p_t /= p_t.sum(-1, keepdims=True)
    log_p_s = s - s.max(-1, keepdims=True)
    log_p_s -= np.log(np.exp(log_p_s).sum(-1, keepdims=True))
    kd = 16.0 * (p_t * (np.log(p_t) - log_p_s)).sum(-1).mean()
    assert got["distillation_loss"] == pytest.approx(kd, rel=1e-4)


def test_hidden_labels_keep_a_stratified_share_and_the_images():
    splits = tfkd.data.load("digits", seed=0)
    labels = tfkd.data.train_labels(splits)
    hidden = tfkd.data.hide_labels(splits, 0.1, seed=3)
    kept = tfkd.data.train_labels(hidden)
    labeled = kept != tfkd.data.UNLABELED
    assert hidden.sizes["labeled"] == int(labeled.sum()) and hidden.sizes["train"] == len(labels)
    # Kept labels are the true ones; about a tenth of every class keeps its label.
    np.testing.assert_array_equal(kept[labeled], labels[labeled])
    for c in range(10):
        members = labels == c
        assert labeled[members].sum() == max(1, round(members.sum() * 0.1))
    # The images are untouched, at every resolution, and validation/test keep their labels.
    before = np.stack([x for x, _ in splits.train.as_numpy_iterator()])
    after = np.stack([x for x, _ in hidden.at((8, 8)).train.as_numpy_iterator()])
    np.testing.assert_array_equal(before, after)
    assert all(label >= 0 for _, label in hidden.test.as_numpy_iterator())
    # Reproducible by seed.
    np.testing.assert_array_equal(
        kept, tfkd.data.train_labels(tfkd.data.hide_labels(splits, 0.1, seed=3))
    )


def test_set_aside_divides_the_training_split_by_class_and_keeps_the_rest():
    splits = tfkd.data.load("digits", seed=0)
    labels = tfkd.data.train_labels(splits)
    images = np.stack([x for x, _ in splits.train.as_numpy_iterator()])
    rest, aside = tfkd.data.set_aside(splits, 0.5, seed=4)
    parts = {}
    for name, part in (("rest", rest), ("aside", aside)):
        pairs = list(part.at((8, 8)).train.as_numpy_iterator())
        assert int(part.train.cardinality()) == part.sizes["train"] == len(pairs)
        parts[name] = pairs
    # Every training example is in exactly one part, with its own label, in the split's order.
    index = {img.tobytes(): i for i, img in enumerate(images)}
    positions = {n: [index[x.tobytes()] for x, _ in pairs] for n, pairs in parts.items()}
    assert sorted(positions["rest"] + positions["aside"]) == list(range(len(labels)))
    for name, pairs in parts.items():
        assert positions[name] == sorted(positions[name])
        np.testing.assert_array_equal([y for _, y in pairs], labels[positions[name]])
    # Half of every class aside (numpy's count of the same rule).
    for c in range(10):
        members = int((labels == c).sum())
        assert sum(labels[positions["aside"]] == c) == max(1, round(members * 0.5))
    # Validation and test are the splits' own in both parts; hiding labels afterwards counts
    # the rest only.
    assert rest.validation is splits.validation and aside.test is splits.test
    hidden = tfkd.data.hide_labels(rest, 0.1, seed=0)
    assert hidden.sizes["train"] == len(parts["rest"]) and hidden.sizes["labeled"] < 80
    with pytest.raises(ValueError, match="share"):
        tfkd.data.set_aside(splits, 1.0)


def test_labeled_train_repeats_the_labeled_images_to_a_full_epoch():
    hidden = tfkd.data.hide_labels(tfkd.data.load("digits", seed=0), 0.1, seed=0)
    labeled = tfkd.data.labeled_train(hidden)
    labels = np.fromiter((y for _, y in labeled.as_numpy_iterator()), np.int64)
    assert (labels >= 0).all()
    repeats = round(hidden.sizes["train"] / hidden.sizes["labeled"])
    assert len(labels) == int(labeled.cardinality()) == hidden.sizes["labeled"] * repeats
    # Without hidden labels the training split itself.
    plain = tfkd.data.load("digits", seed=0)
    assert tfkd.data.labeled_train(plain) is plain.train


def test_unlabeled_folder_joins_the_training_split_at_every_resolution(tmp_path):
    unlabeled = tmp_path / "unlabeled" / "any" / "depth"
    unlabeled.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40 + i, 60, 3), np.uint8)).save(
            unlabeled / f"u{i}.jpg"
        )
    labeled = tmp_path / "labeled"
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (labeled / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (30, 30, 3), np.uint8)).save(
                    labeled / split / name / f"{i}.png"
                )
    splits = tfkd.data.load(f"folder:{labeled}", image_size=(24, 24), extra_sizes=[(32, 32)])
    joined = tfkd.data.with_unlabeled(splits, str(tmp_path / "unlabeled"))
    assert joined.sizes["train"] == splits.sizes["train"] + 5
    assert joined.sizes["labeled"] == splits.sizes["train"]
    for size in ((24, 24), (32, 32)):
        examples = list(joined.at(size).train.as_numpy_iterator())
        assert len(examples) == joined.sizes["train"]
        assert all(x.shape == (*size, 3) for x, _ in examples)
        assert [y for _, y in examples[-5:]] == [tfkd.data.UNLABELED] * 5
    with pytest.raises(FileNotFoundError, match="Unlabeled image folder"):
        tfkd.data.with_unlabeled(splits, str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        tfkd.data.with_unlabeled(splits, str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="channel"):
        tfkd.data.with_unlabeled(tfkd.data.load("digits"), str(tmp_path / "unlabeled"))
