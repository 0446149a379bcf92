"""Object detection, the second task (issue #29): its data (COCO and YOLO datasets, checked
before training), anchors and their targets, backbones (tfkd's own CNNs or keras.applications
networks) and detectors, their training and distillation on dense predictions, the export
MediaPipe's ObjectDetector runs (float32, int8), and COCO mAP by pycocotools. The pipeline's
stages for it are pipelines/detection/."""

from tfkd.tasks.detection import backbones, data, export, losses, metrics, models, targets

__all__ = ["backbones", "data", "export", "losses", "metrics", "models", "targets"]
