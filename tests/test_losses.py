import math

import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd.keras import keras


def numpy_kd(teacher, student, temperature):
    """Hinton et al. 2015, written independently: T^2 * KL(p_t || p_s), softened by T."""

    def softmax(z):
        z = z / temperature
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    p_t, p_s = softmax(teacher.astype(np.float64)), softmax(student.astype(np.float64))
    return temperature**2 * np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=-1)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("shape", [(1, 2), (4, 10), (16, 100)])
def test_kd_matches_numpy_reference(temperature, shape):
    rng = np.random.default_rng(int(temperature * 10) + shape[1])
    teacher = rng.normal(scale=3.0, size=shape).astype(np.float32)
    student = rng.normal(scale=3.0, size=shape).astype(np.float32)
    got = tfkd.losses.KD(temperature)(teacher, student)
    np.testing.assert_allclose(got, numpy_kd(teacher, student, temperature).mean(), rtol=1e-4)


def test_kd_default_temperature_on_published_example():
    # A published pitfall: T^2 * KL is 1.347 for these logits at T=3, where Keras 3.15's
    # LogitsDistillation() default gave 0.318.
    teacher = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    student = np.array([[2, 1, 4], [3, 6, 2]], np.float32)
    value = float(tfkd.losses.KD(temperature=3.0)(teacher, student))
    assert value == pytest.approx(1.347, abs=1e-3)
    default = tfkd.losses.KD()
    assert default.temperature == 4.0
    np.testing.assert_allclose(
        default(teacher, student), numpy_kd(teacher, student, 4.0).mean(), rtol=1e-5
    )


def test_kd_is_zero_only_when_student_equals_teacher():
    logits = np.random.default_rng(0).normal(size=(8, 10)).astype(np.float32)
    kd = tfkd.losses.KD(2.0)
    assert float(kd(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd(logits, logits[::-1])) > 0.01


def test_kd_sample_weight_is_weighted_sum_over_batch_size():
    rng = np.random.default_rng(1)
    teacher, student = rng.normal(size=(2, 5, 7)).astype(np.float32)
    weights = np.array([0.0, 1.0, 2.0, 0.5, 1.0], np.float32)
    expected = np.sum(weights * numpy_kd(teacher, student, 3.0)) / 5
    np.testing.assert_allclose(
        tfkd.losses.KD(3.0)(teacher, student, sample_weight=weights), expected, rtol=1e-5
    )


def test_kd_same_value_eagerly_and_in_tf_function_and_gradient_reaches_student():
    rng = np.random.default_rng(2)
    teacher = tf.constant(rng.normal(size=(4, 10)), tf.float32)
    student = tf.Variable(rng.normal(size=(4, 10)), dtype=tf.float32)
    kd = tfkd.losses.KD(4.0)
    eager = kd(teacher, student)
    graph = tf.function(kd)(teacher, student)
    np.testing.assert_allclose(eager, graph, rtol=1e-6)
    with tf.GradientTape() as tape:
        value = kd(teacher, student)
    gradient = tape.gradient(value, student)
    assert float(tf.reduce_max(tf.abs(gradient))) > 1e-4


def test_kd_computes_in_float32_for_float16_inputs():
    rng = np.random.default_rng(3)
    teacher, student = rng.normal(scale=5, size=(2, 4, 10))
    got = tfkd.losses.KD(4.0)(tf.constant(teacher, tf.float16), tf.constant(student, tf.float16))
    assert got.dtype == tf.float32
    expected = numpy_kd(teacher.astype(np.float16), student.astype(np.float16), 4.0).mean()
    np.testing.assert_allclose(got, expected, rtol=1e-3)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_kd_rejects_non_positive_or_non_finite_temperature(bad):
    with pytest.raises(ValueError, match="temperature"):
        tfkd.losses.KD(bad)


@pytest.mark.parametrize("bad", ["4", None, True])
def test_kd_rejects_non_number_temperature(bad):
    with pytest.raises(TypeError, match="temperature"):
        tfkd.losses.KD(bad)


def test_config_round_trip_through_keras_serialization():
    kd = tfkd.losses.KD(temperature=2.5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(kd))
    assert isinstance(restored, tfkd.losses.KD)
    assert restored.get_config() == {"temperature": 2.5, "standardize": False}
    assert tfkd.losses.KD.from_config(kd.get_config()).temperature == 2.5


def test_registry_builds_by_name_and_lists_choices_for_unknown_names():
    assert {"kd", "dkd", "dist", "logit_mse"} <= set(tfkd.losses.available())
    assert tfkd.losses.get("kd", temperature=3.0).temperature == 3.0
    with pytest.raises(ValueError, match=r"Unknown loss 'kld'. Available: \[.*'kd'"):
        tfkd.losses.get("kld")


def contract_inputs(loss, seed):
    """Logits `(6, 5)` for logit losses, feature maps `(6, 4, 4, 3)` for feature losses."""
    rng = np.random.default_rng(seed)
    shape = (6, 4, 4, 3) if isinstance(loss, tfkd.losses.FeatureLoss) else (6, 5)
    teacher, student = rng.normal(size=(2, *shape)).astype(np.float32)
    return teacher, student, rng.integers(0, 5, size=6)


@pytest.mark.parametrize("name", tfkd.losses.available())
def test_every_registered_loss_is_a_finite_scalar_and_zero_at_equality(name):
    loss = tfkd.losses.get(name)
    teacher, student, labels = contract_inputs(loss, 4)
    value = loss(teacher, student, labels)
    assert value.shape == () and math.isfinite(float(value)) and float(value) > 0
    assert float(loss(teacher, teacher, labels)) == pytest.approx(0.0, abs=1e-5)
    assert type(loss).from_config(loss.get_config()).get_config() == loss.get_config()


def numpy_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_dkd(teacher, student, labels, alpha, beta, temperature):
    """Zhao et al. 2022, written from the paper: TCKD on [p_gt, 1 - p_gt], NCKD on the
    renormalised non-target probabilities."""
    p_t, p_s = numpy_softmax(teacher / temperature), numpy_softmax(student / temperature)
    rows = np.arange(len(labels))
    b_t = np.stack([p_t[rows, labels], 1 - p_t[rows, labels]], -1)
    b_s = np.stack([p_s[rows, labels], 1 - p_s[rows, labels]], -1)
    tckd = np.sum(b_t * np.log(b_t / b_s), -1)
    mask = np.ones_like(p_t, bool)
    mask[rows, labels] = False
    q_t = p_t[mask].reshape(len(labels), -1)
    q_s = p_s[mask].reshape(len(labels), -1)
    q_t, q_s = q_t / q_t.sum(-1, keepdims=True), q_s / q_s.sum(-1, keepdims=True)
    nckd = np.sum(q_t * np.log(q_t / q_s), -1)
    return temperature**2 * (alpha * tckd + beta * nckd)


def numpy_dist(teacher, student, beta, gamma, temperature):
    y_t, y_s = numpy_softmax(teacher / temperature), numpy_softmax(student / temperature)
    inter = np.mean([1 - np.corrcoef(y_s[i], y_t[i])[0, 1] for i in range(len(y_s))])
    intra = np.mean([1 - np.corrcoef(y_s[:, c], y_t[:, c])[0, 1] for c in range(y_s.shape[1])])
    return temperature**2 * (beta * inter + gamma * intra)


@pytest.mark.parametrize(
    "alpha, beta, temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (2.0, 0.0, 2.0)]
)
@pytest.mark.parametrize("shape", [(3, 4), (16, 10), (8, 100)])
def test_dkd_matches_numpy_reference(alpha, beta, temperature, shape):
    rng = np.random.default_rng(shape[1])
    teacher, student = rng.normal(scale=2.0, size=(2, *shape))
    labels = rng.integers(0, shape[1], size=shape[0])
    got = tfkd.losses.DKD(alpha, beta, temperature)(
        teacher.astype(np.float32), student.astype(np.float32), labels
    )
    expected = numpy_dkd(teacher, student, labels, alpha, beta, temperature).mean()
    np.testing.assert_allclose(got, expected, rtol=2e-4)


def test_dkd_with_equal_weights_and_one_temperature_relates_to_kd():
    # With alpha = beta = 1 DKD is not KD: KD = TCKD + (1 - p_gt^t) * NCKD (paper, Eq. 2).
    rng = np.random.default_rng(7)
    teacher, student = rng.normal(size=(2, 6, 5))
    labels = rng.integers(0, 5, size=6)
    tckd = numpy_dkd(teacher, student, labels, 1.0, 0.0, 1.0)
    nckd = numpy_dkd(teacher, student, labels, 0.0, 1.0, 1.0)
    p_gt = numpy_softmax(teacher)[np.arange(6), labels]
    kd = tfkd.losses.KD(1.0).per_example(
        tf.constant(teacher, tf.float32), tf.constant(student, tf.float32)
    )
    np.testing.assert_allclose(kd, tckd + (1 - p_gt) * nckd, rtol=1e-4)


def test_dkd_needs_labels_and_checks_weights():
    with pytest.raises(ValueError, match="needs the labels"):
        tfkd.losses.DKD()(np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="beta"):
        tfkd.losses.DKD(beta=-1)


@pytest.mark.parametrize("beta, gamma, temperature", [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0)])
def test_dist_matches_numpy_reference(beta, gamma, temperature):
    rng = np.random.default_rng(int(temperature))
    teacher, student = rng.normal(scale=2.0, size=(2, 12, 7))
    got = tfkd.losses.DIST(beta, gamma, temperature)(
        teacher.astype(np.float32), student.astype(np.float32)
    )
    np.testing.assert_allclose(
        got, numpy_dist(teacher, student, beta, gamma, temperature), rtol=1e-4
    )


def test_dist_refuses_sample_weights():
    with pytest.raises(ValueError, match="no sample weights"):
        tfkd.losses.DIST()(
            np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32), sample_weight=np.ones(2)
        )


def test_logit_mse_matches_numpy():
    rng = np.random.default_rng(9)
    teacher, student = rng.normal(size=(2, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(
        tfkd.losses.LogitMSE()(teacher, student),
        np.mean((student - teacher) ** 2),
        rtol=1e-6,
    )


@pytest.mark.parametrize("name", tfkd.losses.available())
def test_every_registered_loss_is_the_same_in_tf_function_and_trains_the_student(name):
    loss = tfkd.losses.get(name)
    teacher, student, labels = contract_inputs(loss, 5)
    teacher, student = tf.constant(teacher), tf.Variable(student)
    labels = tf.constant(labels)
    np.testing.assert_allclose(
        loss(teacher, student, labels),
        tf.function(loss.__call__)(teacher, student, labels),
        rtol=1e-5,
    )
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(teacher)
        value = loss(teacher, student, labels)
    assert float(tf.reduce_max(tf.abs(tape.gradient(value, student)))) > 1e-5


def test_hint_is_the_mean_squared_feature_difference():
    rng = np.random.default_rng(11)
    teacher, student = rng.normal(size=(2, 3, 4, 4, 2)).astype(np.float32)
    np.testing.assert_allclose(
        tfkd.losses.Hint()(teacher, student), np.mean((student - teacher) ** 2), rtol=1e-6
    )


def numpy_attention(features, p=2.0):
    a = np.mean(np.abs(features) ** p, axis=-1).reshape(len(features), -1)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_attention_transfer_matches_the_authors_formula(p):
    rng = np.random.default_rng(12)
    teacher = rng.normal(size=(4, 5, 5, 8)).astype(np.float32)
    student = rng.normal(size=(4, 5, 5, 3)).astype(np.float32)  # channels may differ
    expected = np.mean((numpy_attention(student, p) - numpy_attention(teacher, p)) ** 2)
    np.testing.assert_allclose(
        tfkd.losses.AttentionTransfer(p)(teacher, student), expected, rtol=1e-5
    )


def numpy_rkd(teacher, student, distance_weight, angle_weight):
    def distances(e):
        d = np.linalg.norm(e[:, None] - e[None], axis=-1)
        return d / d[d > 0].mean()

    def angles(e):
        diff = e[None] - e[:, None]
        norm = np.linalg.norm(diff, axis=-1, keepdims=True)
        diff = diff / np.maximum(norm, 1e-12)
        return np.einsum("ijd,ikd->ijk", diff, diff)

    def huber(a, b):
        d = np.abs(a - b)
        return np.mean(np.where(d < 1, 0.5 * d**2, d - 0.5))

    t, s = teacher.reshape(len(teacher), -1), student.reshape(len(student), -1)
    return distance_weight * huber(distances(s), distances(t)) + angle_weight * huber(
        angles(s), angles(t)
    )


def test_rkd_matches_numpy_reference():
    rng = np.random.default_rng(13)
    teacher = rng.normal(size=(7, 6)).astype(np.float32)
    student = rng.normal(size=(7, 3)).astype(np.float32)  # embedding sizes may differ
    np.testing.assert_allclose(
        tfkd.losses.RKD(25.0, 50.0)(teacher, student),
        numpy_rkd(teacher.astype(np.float64), student.astype(np.float64), 25.0, 50.0),
        rtol=1e-4,
    )
    with pytest.raises(ValueError, match="no sample"):
        tfkd.losses.RKD()(teacher, student, sample_weight=np.ones(7))


def numpy_standardized(z):
    """z-score per row with the sample (n - 1) standard deviation, as Sun et al.'s code."""
    return (z - z.mean(-1, keepdims=True)) / (z.std(-1, ddof=1, keepdims=True) + 1e-7)


@pytest.mark.parametrize(
    "name, kwargs, reference",
    [
        ("kd", {"temperature": 2.0}, lambda t, s, y: numpy_kd(t, s, 2.0)),
        (
            "dkd",
            {"alpha": 1.0, "beta": 8.0, "temperature": 4.0},
            lambda t, s, y: numpy_dkd(t, s, y, 1.0, 8.0, 4.0),
        ),
        (
            "dist",
            {"beta": 1.0, "gamma": 2.0, "temperature": 1.0},
            lambda t, s, y: numpy_dist(t, s, 1.0, 2.0, 1.0),
        ),
        ("logit_mse", {}, lambda t, s, y: np.mean((s - t) ** 2)),
    ],
)
def test_logit_standardization_matches_numpy_reference(name, kwargs, reference):
    rng = np.random.default_rng(3)
    teacher = rng.normal(0, 6, (8, 10)).astype(np.float32) + 3.0
    student = rng.normal(0, 1, (8, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    loss = tfkd.losses.get(name, standardize=True, **kwargs)
    expected = reference(
        numpy_standardized(teacher.astype(np.float64)),
        numpy_standardized(student.astype(np.float64)),
        labels,
    )
    value = float(loss(tf.constant(teacher), tf.constant(student), tf.constant(labels)))
    np.testing.assert_allclose(value, np.mean(expected), rtol=1e-4, atol=1e-6)
    plain = float(
        tfkd.losses.get(name, **kwargs)(
            tf.constant(teacher), tf.constant(student), tf.constant(labels)
        )
    )
    assert abs(plain - value) > 1e-3  # the option changes the loss


def test_standardized_kd_ignores_the_scale_and_shift_of_either_logits():
    """The paper's point: a student need not match the teacher's logit magnitude."""
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(0, 1, (2, 16, 10)).astype(np.float32)
    loss = tfkd.losses.KD(temperature=4.0, standardize=True)
    base = float(loss(teacher, student))
    assert float(loss(5.0 * teacher + 2.0, student)) == pytest.approx(base, rel=1e-4)
    assert float(loss(teacher, 0.1 * student - 7.0)) == pytest.approx(base, rel=1e-4)
    # Without it, the teacher's scale changes the target.
    plain = tfkd.losses.KD(temperature=4.0)
    assert float(plain(5.0 * teacher, student)) != pytest.approx(
        float(plain(teacher, student)), rel=1e-2
    )


def test_standardize_comes_from_loss_params_and_survives_serialization():
    loss = tfkd.losses.from_spec("dkd", ["beta=2", "standardize=true"], temperature=4.0)
    assert loss.standardize and loss.beta == 2.0
    assert not tfkd.losses.from_spec("kd", ["standardize=false"]).standardize
    with pytest.raises(ValueError, match="standardize takes true or false"):
        tfkd.losses.from_spec("kd", ["standardize=maybe"])
    with pytest.raises(TypeError, match="standardize"):
        tfkd.losses.KD(standardize="yes")
    restored = type(loss).from_config(loss.get_config())
    assert restored.standardize and restored.get_config() == loss.get_config()
