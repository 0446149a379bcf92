import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import export
from tfkd.data import Augmentation, Preprocessing
from tfkd.distill import teacher_cache, teachers
from tfkd.keras import keras

SHAPE = (8, 8, 1)
CLASSES = 3
PREP = Preprocessing(image_size=(8, 8), channels=1, scale=1 / 255, mean=(0.5,), std=(0.25,))


def raw_data(n=40, seed=0):
    """Unbatched raw uint8 `(image, label)` examples in a fixed order, as `Splits.train`."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *SHAPE), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, size=n).astype(np.int64)
    return tf.data.Dataset.from_tensor_slices((images, labels)), images, labels


def tiny(seed=0):
    keras.utils.set_random_seed(seed)
    return tfkd.models.build("cnn_tiny", SHAPE, CLASSES)


def normalized(images):
    """The preprocessing written out in numpy, independent of tfkd."""
    return ((images.astype(np.float32) / 255) - 0.5) / 0.25


def test_cached_logits_are_the_teachers_logits_in_dataset_order():
    dataset, images, _ = raw_data()
    teacher = tiny()
    cache = teacher_cache.build(teacher, dataset, PREP)
    assert cache.logits.shape == (1, 40, CLASSES) and not cache.reused
    np.testing.assert_allclose(cache.logits[0], teacher(normalized(images)).numpy(), atol=1e-5)


def test_cached_and_uncached_distillation_agree_on_the_first_batch():
    dataset, _, _ = raw_data()
    teacher, initial = tiny(0), tiny(1).get_weights()
    cache = teacher_cache.build(teacher, dataset, PREP)

    def one_step(with_cache):
        student = tiny(1)
        student.set_weights(initial)
        distiller = tfkd.Distiller(
            student, None if with_cache else teacher, student_loss_weight=0.5
        )
        distiller.compile(keras.optimizers.SGD(0.1))
        data = (
            teacher_cache.batches(cache, dataset, PREP, 16)
            if with_cache
            else tfkd.data.batches(dataset, PREP, 16)
        )
        x, y = next(iter(data))
        logs = distiller.train_on_batch(x, y, return_dict=True)
        return logs, student.get_weights()

    (cached, cached_weights), (plain, plain_weights) = one_step(True), one_step(False)
    for name in ("loss", "student_loss", "distillation_loss"):
        assert cached[name] == pytest.approx(plain[name], rel=1e-5), name
    assert plain["distillation_loss"] > 0
    for a, b in zip(cached_weights, plain_weights):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_every_training_batch_carries_the_logits_of_the_image_it_shows():
    """With augmentation and shuffling: the cached logits are the teacher's for that very view."""
    dataset, _, _ = raw_data()
    teacher = tiny()
    cache = teacher_cache.build(
        teacher, dataset, PREP, augmentation=Augmentation(flip=True, pad_crop=2), views=3, seed=7
    )
    data = teacher_cache.batches(cache, dataset, PREP, 16, shuffle=True, seed=3)
    for _ in range(2):  # two epochs
        for x, _ in data:
            np.testing.assert_allclose(
                x["teacher_logits"].numpy(), teacher(x["image"]).numpy(), atol=1e-5
            )
    # The views really differ: augmentation is not silently switched off.
    assert not np.allclose(cache.logits[0], cache.logits[1])


def test_views_are_drawn_anew_each_epoch():
    dataset, _, _ = raw_data(n=64)
    cache = teacher_cache.build(
        tiny(), dataset, PREP, augmentation=Augmentation(pad_crop=2), views=2
    )
    data = teacher_cache.batches(cache, dataset, PREP, 64, seed=0)
    epochs = [next(iter(data))[0]["teacher_logits"].numpy() for _ in range(2)]
    used = [
        np.all(np.isclose(e[:, None, :], cache.logits.transpose(1, 0, 2)), axis=-1) for e in epochs
    ]
    # Every example shows one of its own views, and the choice changes between epochs.
    assert all(u.any(axis=-1).all() for u in used)
    assert not np.array_equal(used[0], used[1])


def test_disk_cache_is_reused_and_rebuilt_when_its_inputs_change(tmp_path):
    dataset, _, _ = raw_data()
    teacher = tiny()
    first = teacher_cache.build(teacher, dataset, PREP, directory=str(tmp_path))
    again = teacher_cache.build(teacher, dataset, PREP, directory=str(tmp_path))
    assert again.reused
    np.testing.assert_array_equal(again.logits, first.logits)

    changed = tiny()
    weights = changed.get_weights()
    weights[-1] = weights[-1] + 1.0
    changed.set_weights(weights)
    rebuilt = teacher_cache.build(changed, dataset, PREP, directory=str(tmp_path))
    assert not rebuilt.reused
    np.testing.assert_allclose(rebuilt.logits, first.logits + 1.0, atol=1e-5)

    other_data, _, _ = raw_data(seed=1)
    assert not teacher_cache.build(changed, other_data, PREP, directory=str(tmp_path)).reused
    other_prep = Preprocessing(
        image_size=(8, 8), channels=1, scale=1 / 255, mean=(0.0,), std=(1.0,)
    )
    assert not teacher_cache.build(changed, other_data, other_prep, directory=str(tmp_path)).reused
    assert not teacher_cache.build(
        changed,
        other_data,
        other_prep,
        directory=str(tmp_path),
        augmentation=Augmentation(pad_crop=1),
    ).reused
    assert teacher_cache.build(
        changed,
        other_data,
        other_prep,
        directory=str(tmp_path),
        augmentation=Augmentation(pad_crop=1),
    ).reused


def test_a_large_disk_cache_is_read_through_a_memory_map(tmp_path):
    dataset, _, _ = raw_data()
    teacher = tiny()
    teacher_cache.build(teacher, dataset, PREP, directory=str(tmp_path))
    cache = teacher_cache.build(teacher, dataset, PREP, directory=str(tmp_path), in_memory_limit=0)
    assert cache.reused and isinstance(cache.logits, np.memmap)
    for x, _ in teacher_cache.batches(cache, dataset, PREP, 16, shuffle=True):
        np.testing.assert_allclose(
            x["teacher_logits"].numpy(), teacher(x["image"]).numpy(), atol=1e-5
        )


def test_ensemble_cache_holds_the_mean_of_its_members():
    dataset, images, _ = raw_data()
    members = [tiny(0), tiny(1)]
    outputs = [m(normalized(images)).numpy() for m in members]
    cache = teacher_cache.build(members, dataset, PREP)
    np.testing.assert_allclose(cache.logits[0], (outputs[0] + outputs[1]) / 2, atol=1e-5)
    weighted = teacher_cache.build(members, dataset, PREP, teacher_weights=[1.0, 3.0])
    np.testing.assert_allclose(weighted.logits[0], 0.25 * outputs[0] + 0.75 * outputs[1], atol=1e-5)


def test_a_tflite_teacher_teaches_through_the_cache(tmp_path):
    dataset, images, labels = raw_data()
    model = tiny()
    path = str(tmp_path / "teacher.tflite")
    export.write_tflite(path, export.convert(model, "float32"))
    cache = teacher_cache.build(path, dataset, PREP)
    np.testing.assert_allclose(cache.logits[0], model(normalized(images)).numpy(), atol=1e-5)
    distiller = tfkd.Distiller(tiny(1), None, student_loss_weight=0.5)
    distiller.compile(keras.optimizers.SGD(0.1))
    history = distiller.fit(teacher_cache.batches(cache, dataset, PREP, 16), epochs=1, verbose=0)
    assert history.history["distillation_loss"][0] > 0


def test_clear_errors_before_training(tmp_path):
    dataset, _, _ = raw_data()
    with pytest.raises(ValueError, match="views=2 without augmentation"):
        teacher_cache.build(tiny(), dataset, PREP, views=2)
    two_class = tfkd.models.build("cnn_tiny", SHAPE, 2)
    with pytest.raises(ValueError, match="same classes"):
        teacher_cache.build(two_class, dataset, PREP)
    inputs = keras.Input(SHAPE)
    probabilities = keras.Model(inputs, keras.layers.Softmax()(tiny()(inputs)))
    with pytest.raises(ValueError, match="probabilities"):
        teacher_cache.build(probabilities, dataset, PREP)
    cache = teacher_cache.build(tiny(), dataset, PREP)
    with pytest.raises(ValueError, match="built from other data"):
        teacher_cache.batches(cache, dataset.take(10), PREP, 16)
    with pytest.raises(ValueError, match="no teacher model"):
        distiller = tfkd.Distiller(tiny(1), None)
        distiller.compile("sgd")
        distiller.fit(tfkd.data.batches(dataset, PREP, 16), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="Feature distillation needs"):
        pair = tfkd.distill.features.FeaturePair("block0_relu", "block0_relu", tfkd.losses.Hint())
        distiller = tfkd.Distiller(tiny(1), tiny(0), features=[pair])
        distiller.compile("sgd")
        distiller.fit(teacher_cache.batches(cache, dataset, PREP, 16), epochs=1, verbose=0)


def test_teacher_weights_without_a_teacher_are_refused():
    with pytest.raises(ValueError, match="teacher_cache.build"):
        tfkd.Distiller(tiny(1), None, teacher_weights=[1.0])
    assert teachers.num_classes(tiny()) == CLASSES


def test_an_interrupted_rebuild_leaves_no_cache_that_would_be_trusted(tmp_path, monkeypatch):
    dataset, images, _ = raw_data()
    old, new = tiny(0), tiny(1)
    teacher_cache.build(old, dataset, PREP, directory=str(tmp_path))

    def crash(batch):
        raise KeyboardInterrupt("killed while building")

    monkeypatch.setattr(teacher_cache, "_check_logits", crash)
    with pytest.raises(KeyboardInterrupt):
        teacher_cache.build(new, dataset, PREP, directory=str(tmp_path))
    monkeypatch.undo()
    # The old key was removed before anything was overwritten: nothing stale is reused.
    again = teacher_cache.build(old, dataset, PREP, directory=str(tmp_path))
    assert not again.reused
    np.testing.assert_allclose(again.logits[0], old(normalized(images)).numpy(), atol=1e-5)
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixed_views_carry_the_teachers_logits_for_the_mixture_they_show(kind):
    """Consistent teaching through the cache: over two epochs every batch's logits are the
    teacher's for that very (mixed) image; a mixed example is UNLABELED and made of itself and
    its view's partner, an unmixed one is an image of the set with its own label."""
    from tfkd.data.mixing import Mixing, partner_offset

    dataset, images, labels = raw_data()
    teacher = tiny()
    views, seed = 3, 7
    cache = teacher_cache.build(teacher, dataset, PREP, mixing=Mixing(kind), views=views, seed=seed)
    offsets = [partner_offset(seed, v, len(images)) for v in range(views)]
    pairs = [(i, (i + k) % len(images)) for i in range(len(images)) for k in offsets]
    data = teacher_cache.batches(cache, dataset, PREP, 16, shuffle=True, seed=3)
    raw = images.astype(np.float64)
    mixed_count = 0
    for _ in range(2):
        for x, y in data:
            np.testing.assert_allclose(
                x["teacher_logits"].numpy(), teacher(x["image"]).numpy(), atol=1e-5
            )
            shown = x["image"].numpy() * 0.25 + 0.5  # undo PREP, written out
            shown = np.round(shown * 255)
            for image, label in zip(shown, y.numpy()):
                same = np.all(np.abs(raw - image) < 0.5, axis=(1, 2, 3))
                if label == tfkd.data.UNLABELED:
                    mixed_count += 1
                    assert any(_made_of(image, raw[i], raw[j], kind) for i, j in pairs)
                else:
                    assert same.any() and labels[np.argmax(same)] == label
    assert 10 <= mixed_count <= 70  # about half of 80 shown


def _made_of(image, own, partner, kind):
    if kind == "cutmix":
        from_own = np.all(np.abs(image - own) < 0.5, axis=-1)
        from_partner = np.all(np.abs(image - partner) < 0.5, axis=-1)
        return bool(np.all(from_own | from_partner) and from_partner.any())
    diff = own - partner
    lam = np.sum((image - partner) * diff) / np.sum(diff * diff)
    return 0 <= lam <= 1 and np.allclose(image, lam * own + (1 - lam) * partner, atol=0.6)


def test_a_disk_cache_is_rebuilt_when_the_mixing_changes(tmp_path):
    from tfkd.data.mixing import Mixing

    dataset, _, _ = raw_data()
    teacher = tiny()

    def build(mixing):
        return teacher_cache.build(
            teacher, dataset, PREP, mixing=mixing, views=2, directory=str(tmp_path)
        )

    first = build(Mixing("mixup"))
    assert build(Mixing("mixup")).reused
    other = build(Mixing("cutmix"))
    assert not other.reused and not np.allclose(first.logits, other.logits)
    assert not build(Mixing("cutmix", fraction=0.25)).reused
    with pytest.raises(ValueError, match="without augmentation"):
        teacher_cache.build(teacher, dataset, PREP, views=2)


def test_an_ensemble_of_teachers_with_their_own_input_conventions_is_cached_member_by_member():
    """One member expects raw pixels, the other tfkd's normalisation: each behind its own
    adapter, the cache holds the mean of what each computes on the pixels it expects."""
    dataset, images, _ = raw_data()
    raw_member, own_member = tiny(0), tiny(1)
    members = [
        tfkd.distill.teacher_input.with_input(raw_member, "raw", PREP),
        tfkd.distill.teacher_input.with_input(own_member, "student", PREP),
    ]
    expected = (
        raw_member(images.astype(np.float32)).numpy() + own_member(normalized(images)).numpy()
    ) / 2
    cache = teacher_cache.build(members, dataset, PREP)
    np.testing.assert_allclose(cache.logits[0], expected, rtol=1e-4, atol=1e-3)
    distiller = tfkd.Distiller(tiny(2), members)
    np.testing.assert_allclose(
        np.mean([t(normalized(images)).numpy() for t in distiller.teachers], axis=0),
        expected,
        rtol=1e-4,
        atol=1e-3,
    )
