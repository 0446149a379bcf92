"""Object detection, the second task (issue #29): so far its data (COCO and YOLO datasets,
checked before training), its distillation losses on dense predictions, its float32 export that
MediaPipe's ObjectDetector runs, and its metric (COCO mAP by pycocotools). Its models, training,
quantized export and pipeline stages are not built yet."""

from tfkd.tasks.detection import data, export, losses, metrics

__all__ = ["data", "export", "losses", "metrics"]
