"""Mixed views (tfkd.data.mixing) against numpy formulas, and live mixing in tfkd.data batches."""

import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd.data import UNLABELED, Preprocessing
from tfkd.data.mixing import Mixing, partner_offset

SEED = tf.constant([3, 11], tf.int64)


def images(n, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), np.uint8)


def test_mixup_blends_each_mixed_example_with_its_partner_by_its_ratio():
    a, b = images(64), images(64, seed=1)
    mixing = Mixing("mixup", fraction=1.0)
    out, mixed = mixing.apply(tf.constant(a), tf.constant(b), SEED)
    _, ratio, _ = mixing.draw(64, SEED)
    lam = ratio.numpy()[:, None, None, None]
    expected = np.round(lam * a.astype(np.float64) + (1 - lam) * b.astype(np.float64))
    assert mixed.numpy().all() and out.dtype == tf.uint8
    np.testing.assert_allclose(out.numpy(), expected, atol=1)
    # The ratios are spread over (0, 1), not stuck at one value.
    assert 0 < ratio.numpy().min() < 0.2 and 0.8 < ratio.numpy().max() < 1


def test_cutmix_pastes_the_partner_inside_a_box_of_the_drawn_size():
    n, size = 200, 32
    a, b = images(n, size), images(n, size, seed=1)
    mixing = Mixing("cutmix", fraction=1.0)
    out, _ = mixing.apply(tf.constant(a), tf.constant(b), SEED)
    _, ratio, centre = (t.numpy() for t in mixing.draw(n, SEED))
    centres = (np.arange(size) + 0.5) / size
    for i in range(n):
        side = np.sqrt(1 - ratio[i])
        low = np.clip(centre[i] - side / 2, 0, 1)
        high = np.clip(centre[i] + side / 2, 0, 1)
        rows = (centres >= low[0]) & (centres < high[0])
        cols = (centres >= low[1]) & (centres < high[1])
        box = rows[:, None] & cols[None, :]
        np.testing.assert_array_equal(out.numpy()[i], np.where(box[..., None], b[i], a[i]))
        unclipped = np.all(centre[i] - side / 2 >= 0) and np.all(centre[i] + side / 2 <= 1)
        if unclipped:  # the pasted share is 1 - λ, up to a pixel row and column
            assert abs(box.mean() - (1 - ratio[i])) <= 2 * side / size + 1 / size**2


def test_cutmix_covers_the_same_part_of_the_image_at_every_resolution():
    mixing = Mixing("cutmix", fraction=1.0)
    masks = []
    for size in (16, 64):
        ones = tf.ones([50, size, size, 1], tf.float32)
        out, _ = mixing.apply(ones, tf.zeros_like(ones), SEED)
        masks.append(1 - out.numpy()[..., 0])
    # The 64-pixel box, pooled to 16 pixels, differs from the 16-pixel box on its edges only.
    pooled = masks[1].reshape(50, 16, 4, 16, 4).mean(axis=(2, 4))
    assert np.abs(pooled - masks[0]).mean() < 0.05
    assert masks[0].mean() > 0.1


def test_fraction_mixes_that_share_and_leaves_the_others_untouched():
    a, b = images(4000, 4), images(4000, 4, seed=1)
    out, mixed = Mixing("mixup", fraction=0.3).apply(tf.constant(a), tf.constant(b), SEED)
    mixed = mixed.numpy()
    assert abs(mixed.mean() - 0.3) < 0.03
    np.testing.assert_array_equal(out.numpy()[~mixed], a[~mixed])


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_the_ratio_follows_a_symmetric_beta_distribution(alpha):
    _, ratio, _ = Mixing("mixup", alpha=alpha).draw(40000, SEED)
    ratio = ratio.numpy()
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)).
    assert ratio.mean() == pytest.approx(0.5, abs=0.01)
    assert ratio.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.05)


def test_partner_offsets_are_fixed_per_view_and_never_the_example_itself():
    offsets = [partner_offset(5, view, 40) for view in range(20)]
    assert all(1 <= k < 40 for k in offsets)
    assert offsets == [partner_offset(5, view, 40) for view in range(20)]
    assert len(set(offsets)) > 10
    with pytest.raises(ValueError, match="at least 2"):
        partner_offset(0, 0, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="mixin"), "mixup, cutmix"),
        (dict(fraction=0.0), "fraction"),
        (dict(fraction=1.5), "fraction"),
        (dict(alpha=0.0), "alpha"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Mixing(**kwargs)


PREP = Preprocessing(image_size=(8, 8), channels=3, scale=1.0, mean=(0.0,) * 3, std=(1.0,) * 3)


def test_live_batches_mix_each_example_with_its_neighbour_and_hide_its_label():
    """Without a teacher cache: the batch rolled by one gives the partners; mixed examples are
    marked UNLABELED, the others keep their label and their image."""
    x = images(48)
    y = np.arange(48) % 5
    dataset = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int64)))
    plain = list(tfkd.data.batches(dataset, PREP, 16, shuffle=True, seed=4))
    mixed = list(tfkd.data.batches(dataset, PREP, 16, shuffle=True, seed=4, mixing=Mixing("mixup")))
    count = 0
    for (raw, labels), (out, out_labels) in zip(plain, mixed):
        raw, out = raw.numpy().astype(np.float64), out.numpy().astype(np.float64)
        partner = np.roll(raw, 1, axis=0)
        for k in range(len(raw)):
            if out_labels[k] == UNLABELED:
                count += 1
                # Least-squares ratio of the blend; the residual is uint8 rounding only.
                diff = raw[k] - partner[k]
                lam = np.sum((out[k] - partner[k]) * diff) / np.sum(diff * diff)
                assert 0 <= lam <= 1
                np.testing.assert_allclose(out[k], lam * raw[k] + (1 - lam) * partner[k], atol=0.6)
            else:
                assert out_labels[k] == labels[k]
                np.testing.assert_array_equal(out[k], raw[k])
    assert 12 <= count <= 36  # about half of 48


def test_paired_batches_mix_both_resolutions_alike():
    from tests.conftest import CIFAR_SAMPLE

    splits = tfkd.data.load(f"folder:{CIFAR_SAMPLE}", image_size=(16, 16), extra_sizes=[(32, 32)])
    teacher_splits = splits.at((32, 32))
    batches = tfkd.data.paired_batches(
        splits, teacher_splits, "train", 32, shuffle=True, mixing=Mixing("cutmix")
    )
    x, labels = next(iter(batches))
    student, teacher = x["image"].numpy(), x[tfkd.data.TEACHER_IMAGE].numpy()
    assert (labels.numpy() == UNLABELED).any() and (labels.numpy() != UNLABELED).any()
    # The teacher's 32-pixel view, pooled to 16 pixels, is the student's view.
    pooled = teacher.reshape(32, 16, 2, 16, 2, -1).mean(axis=(2, 4))
    # (0.007 here; another example's view differs by about 0.5.)
    assert np.abs(pooled - student).mean() < 0.05
