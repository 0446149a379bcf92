"""Detection data (tfkd/tasks/detection): the generated set in both layouts, the checks that
refuse wrong labels, and COCO mAP by pycocotools against cases worked out by hand."""

import json
import os

import numpy as np
import pytest

from tests.conftest import CIFAR_SAMPLE
from tfkd.tasks.detection import data, metrics
from tools.make_detection_set import make_detection_set

CLASSES = ["cat", "dog", "bird"]
COUNTS = {"train": 12, "val": 4}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The same images in the COCO and the YOLO layout (same seed)."""
    roots = {}
    for layout in data.FORMATS:
        root = str(tmp_path_factory.mktemp(layout) / "set")
        make_detection_set(CIFAR_SAMPLE, root, CLASSES, COUNTS, 64, 3, layout, seed=1)
        roots[layout] = root
    return roots


def test_both_layouts_read_back_the_same_boxes_inside_their_images(generated):
    coco, yolo = (data.load(f"{layout}:{generated[layout]}") for layout in data.FORMATS)
    assert set(coco) == set(yolo) == {"train", "val"}
    for split, count in COUNTS.items():
        assert len(coco[split].images) == len(yolo[split].images) == count
        assert coco[split].class_names == yolo[split].class_names == tuple(CLASSES)
        for a, b in zip(coco[split].images, yolo[split].images):
            assert os.path.basename(a.path) == os.path.basename(b.path)
            assert (a.width, a.height) == (64, 64)
            assert 1 <= len(a.classes) <= 3
            np.testing.assert_array_equal(a.classes, b.classes)
            # YOLO's text keeps 6 decimals of a normalised coordinate.
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
            assert (a.boxes[:, :2] >= 0).all() and (a.boxes[:, 2:] <= 64).all()
            assert (a.boxes[:, 2:] > a.boxes[:, :2]).all()
    assert coco["train"].warnings == {}


def _coco(tmp_path, generated, edit):
    """A copy of the generated COCO train split with its annotations changed by `edit`."""
    import shutil

    root = tmp_path / "coco"
    shutil.copytree(generated["coco"], root)
    path = root / "train" / "annotations.json"
    document = json.loads(path.read_text())
    edit(document, root)
    path.write_text(json.dumps(document))
    return f"coco:{root}"


def _outside(document, root):
    document["annotations"][0]["bbox"] = [40, 40, 50, 10]


def _unknown_category(document, root):
    document["annotations"][0]["category_id"] = 9


def _empty_image(document, root):
    (root / "train" / "images" / document["images"][0]["file_name"]).write_bytes(b"")


def _other_size(document, root):
    document["images"][0]["width"] = 100


@pytest.mark.parametrize(
    "edit, message",
    [
        (_outside, r"1 box\(es\) lie outside the 64x64 image, e.g. \[40.0, 40.0, 90.0, 50.0\]"),
        (_unknown_category, r"has category id 9, not among the categories \[1, 2, 3\]"),
        (_empty_image, r"00000.jpg is empty \(0 bytes\)"),
        (_other_size, r"00000.jpg is 64x64 but annotations.json says 100x64"),
    ],
)
def test_wrong_coco_labels_are_refused_naming_the_file(tmp_path, generated, edit, message):
    with pytest.raises(ValueError, match=message):
        data.load(_coco(tmp_path, generated, edit))


def test_an_image_without_boxes_is_kept_as_background_and_counted(tmp_path, generated):
    def unlabel(document, root):
        first = document["images"][0]["id"]
        document["annotations"] = [a for a in document["annotations"] if a["image_id"] != first]

    split = data.load(_coco(tmp_path, generated, unlabel))["train"]
    assert len(split.images) == COUNTS["train"] and len(split.images[0].classes) == 0
    assert split.warnings == {"images without boxes (kept as background)": 1}


def _yolo(tmp_path, generated, line=None, names=True):
    import shutil

    root = tmp_path / "yolo"
    shutil.copytree(generated["yolo"], root)
    if line is not None:
        (root / "train" / "labels" / "00000.txt").write_text(line + "\n")
    if not names:
        (root / "names.txt").unlink()
    return f"yolo:{root}"


@pytest.mark.parametrize(
    "line, message",
    [
        ("7 0.5 0.5 0.2 0.2", r"00000.txt:1: class 7 is not one of the 3 names"),
        ("0 0.5 0.5 0.2", r"00000.txt:1: expected `class cx cy w h`, got '0 0.5 0.5 0.2'"),
        ("0 0.95 0.5 0.3 0.2", r"00000.txt: 1 box\(es\) lie outside the 64x64 image"),
        ("1 0.5 0.5 0 0.2", r"00000.txt: a box has no area"),
    ],
)
def test_wrong_yolo_labels_are_refused_naming_the_file_and_line(tmp_path, generated, line, message):
    with pytest.raises(ValueError, match=message):
        data.load(_yolo(tmp_path, generated, line))


def test_a_yolo_set_needs_its_class_names_and_a_spec_needs_its_format(tmp_path, generated):
    with pytest.raises(ValueError, match=r"no class names file \(names.txt or classes.txt"):
        data.load(_yolo(tmp_path, generated, names=False))
    with pytest.raises(ValueError, match="Give coco:PATH"):
        data.load(f"voc:{tmp_path}")


def _one_image(boxes, classes):
    image = data.AnnotatedImage(
        "a.jpg", 100, 100, np.array(boxes, np.float32), np.array(classes, np.int64)
    )
    return data.DetectionSplit((image,), ("cat", "dog"))


def _found(boxes, classes, scores):
    return metrics.Detections(np.array(boxes, np.float32), np.array(classes), np.array(scores))


def test_map_is_computed_by_cocoeval_as_worked_out_by_hand():
    truth = _one_image([[0, 0, 10, 10], [50, 50, 70, 80]], [0, 1])
    perfect = _found([[0, 0, 10, 10], [50, 50, 70, 80]], [0, 1], [0.9, 0.8])
    assert metrics.coco_map(truth, [perfect]) == pytest.approx({"map": 1.0, "map50": 1.0})
    # IoU 0.62 for the cat: a hit at the thresholds .50, .55 and .60 of the ten; the dog is exact.
    shifted = _found([[0, 0, 10, 6.2], [50, 50, 70, 80]], [0, 1], [0.9, 0.8])
    result = metrics.coco_map(truth, [shifted])
    assert result["map50"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx((0.3 + 1.0) / 2)
    # The right boxes with the classes swapped find nothing.
    swapped = _found([[0, 0, 10, 10], [50, 50, 70, 80]], [1, 0], [0.9, 0.8])
    assert metrics.coco_map(truth, [swapped]) == pytest.approx({"map": 0.0, "map50": 0.0})
    assert metrics.coco_map(truth, [_found(np.zeros((0, 4)), [], [])]) == {
        "map": 0.0,
        "map50": 0.0,
    }
    with pytest.raises(ValueError, match="one Detections per image"):
        metrics.coco_map(truth, [])


@pytest.mark.slow
def test_the_tool_writes_a_set_the_reader_takes_and_never_overwrites(tmp_path):
    """(In the slow suite: two program runs; make_detection_set itself is tested above.)"""
    from tests.helpers import programs

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    flags = [
        f"--source={CIFAR_SAMPLE}",
        f"--out={tmp_path / 'set'}",
        "--format=yolo",
        "--train_images=3",
        "--val_images=0",
        "--image_size=48",
    ]
    made = programs.run("tools.make_detection_set", flags, cwd=root)
    assert made.returncode == 0, made.stderr[-2000:]
    assert made.stdout.startswith(f"yolo:{tmp_path / 'set'} ")
    assert len(data.load(f"yolo:{tmp_path / 'set'}")["train"].images) == 3
    again = programs.run("tools.make_detection_set", flags, cwd=root)
    assert again.returncode == 2 and "exists; give a new folder" in again.stderr


def test_the_paired_bootstrap_equals_coco_map_on_each_resampled_split(generated):
    """The bootstrap reuses one per-image evaluation for every resampling: each resampled mAP
    must be COCOeval's on that resampled split, repeats included."""
    split = data.load(f"coco:{generated['coco']}")["train"]
    rng = np.random.default_rng(0)
    # Detections near the truth, with noise, a swapped class and a miss.
    found = []
    for image in split.images:
        boxes = image.boxes + rng.normal(0, 2, image.boxes.shape)
        classes = np.array(image.classes)
        if len(classes) and rng.random() < 0.3:
            classes[0] = (classes[0] + 1) % len(split.class_names)
        keep = rng.random(len(classes)) > 0.2
        found.append(_found(boxes[keep], classes[keep], rng.random(int(keep.sum()))))
    evaluation = metrics._evaluated(split, found)
    for _ in range(3):
        pick = rng.integers(0, len(split.images), len(split.images))
        sample = data.DetectionSplit(tuple(split.images[i] for i in pick), split.class_names)
        assert metrics._resampled_map(evaluation, pick) == pytest.approx(
            metrics.coco_map(sample, [found[i] for i in pick])["map"], abs=1e-12
        )
    nothing = [_found(np.zeros((0, 4)), [], []) for _ in split.images]
    result = metrics.paired_map_difference(split, found, nothing, resamples=20)
    assert result["verdict"] == "better" and result["interval"][0] > 0
    assert result["difference"] == pytest.approx(metrics.coco_map(split, found)["map"])


def test_a_detectors_images_are_upright_at_its_input_size_and_a_broken_file_is_named(tmp_path):
    """A phone photo stored sideways with an EXIF orientation is fed upright (as its boxes are
    given), at the detector's square input; a file that does not decode is named."""
    from PIL import Image

    from tfkd.tasks.detection import models

    stored = np.zeros((48, 64, 3), np.uint8)
    stored[:, :32] = (250, 0, 0)  # left half red, right half blue, as stored
    stored[:, 32:] = (0, 0, 250)
    exif = Image.Exif()
    exif[0x0112] = 6  # display turned 90 degrees clockwise: the left half ends on top
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    photo = data.AnnotatedImage(
        str(tmp_path / "phone.jpg"), 48, 64, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    )
    decoded = models.images(data.DetectionSplit((photo,), ("thing",)), 32)
    assert decoded.shape == (1, 32, 32, 3) and decoded.dtype == np.uint8
    top, bottom = decoded[0, :14].mean(axis=(0, 1)), decoded[0, 18:].mean(axis=(0, 1))
    assert top[0] > 200 > 50 > top[2] and bottom[2] > 200 > 50 > bottom[0]

    (tmp_path / "broken.jpg").write_bytes((tmp_path / "phone.jpg").read_bytes()[:200])
    broken = data.AnnotatedImage(str(tmp_path / "broken.jpg"), 48, 64, photo.boxes, photo.classes)
    with pytest.raises(
        ValueError, match=r"1 image\(s\) cannot be decoded, e\.g\. \['.*broken.jpg'\]"
    ):
        models.images(data.DetectionSplit((photo, broken), ("thing",)), 32)
