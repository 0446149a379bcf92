"""Object detection, the second task (issue #29): its data (COCO and YOLO datasets, checked
before training), anchors and their targets, detectors and their training, distillation losses
on dense predictions, the export MediaPipe's ObjectDetector runs (float32, int8), and COCO mAP by
pycocotools. Distillation training, QAD and the pipeline stages are not built yet."""

from tfkd.tasks.detection import data, export, losses, metrics, models, targets

__all__ = ["data", "export", "losses", "metrics", "models", "targets"]
