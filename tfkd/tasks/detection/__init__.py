"""Object detection, the second task (issue #29): so far its data (COCO and YOLO datasets,
checked before training) and its metric (COCO mAP by pycocotools). Its models, losses, export
and pipeline stages are not built yet."""

from tfkd.tasks.detection import data, metrics

__all__ = ["data", "metrics"]
