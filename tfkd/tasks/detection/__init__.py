"""Object detection, the second task (issue #29): so far its data (COCO and YOLO datasets,
checked before training), its distillation losses on dense predictions and its metric (COCO mAP
by pycocotools). Its models, export and pipeline stages are not built yet."""

from tfkd.tasks.detection import data, losses, metrics

__all__ = ["data", "losses", "metrics"]
