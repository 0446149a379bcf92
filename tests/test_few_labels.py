"""Few labels, many images through the pipeline: --label_fraction and --unlabeled.

A file of its own so that pytest-xdist (--dist loadfile) can run it beside test_pipeline.py."""

import json

import numpy as np
import pytest

import tfkd
from pipelines import scheduler
from pipelines.config import Config
from pipelines.context import Context
from tests.test_pipeline import TINY


@pytest.mark.slow
def test_few_labels_and_an_unlabeled_folder_teach_the_student_on_every_image(tmp_path, capfd):
    """--label_fraction and --unlabeled: the teacher and the student alone learn from the
    labeled images; the teacher's logits cover every image, labeled or not (in cutmix views:
    --augment with the teacher cache)."""
    from PIL import Image

    from tests.conftest import CIFAR_SAMPLE

    unlabeled = tmp_path / "unlabeled"
    unlabeled.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), np.uint8)).save(unlabeled / f"{i}.png")
    config = Config(
        out_dir=str(tmp_path / "run"),
        dataset=f"folder:{CIFAR_SAMPLE}",
        image_size=(24, 24),
        teacher="cnn_small",
        student="cnn_tiny",
        label_fraction=0.5,
        unlabeled=f"folder:{unlabeled}",
        teacher_cache="disk",
        augment="cutmix",
        teacher_cache_views=2,
        representative_size=10,
        # A fixed loss: unlabeled images reach every candidate's loss through the same
        # distiller, and the race is tests/test_pipeline.py's.
        loss="kd",
        **dict(TINY, qat_epochs=0, modes=("float32",)),
    )
    results = scheduler.execute(config)
    context = Context(config)
    sizes = context.splits.sizes
    assert sizes["labeled"] < sizes["train"] - 6
    key = json.loads((tmp_path / "run" / "teacher_cache" / "teacher_logits.json").read_text())
    assert key["examples"] == sizes["train"] and key["views"] == 2
    assert key["mixing"]["kind"] == "cutmix"  # consistent teaching through the cache
    labels = tfkd.data.train_labels(context.splits)
    assert (labels == tfkd.data.UNLABELED).sum() == sizes["train"] - sizes["labeled"]
    assert results["student"]["accuracy"] is not None and "report" in results
    banners = capfd.readouterr().out
    assert "labeled training images" in banners and "50% in cutmix views" in banners
