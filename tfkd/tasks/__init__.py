"""Tasks: what differs between image classification and a later task such as detection (the
metric, the head an exported model ends in, the client that checks it). Everything else in tfkd
is shared; docs/architecture.md describes the seam."""

from tfkd.tasks import classification, detection

__all__ = ["classification", "detection"]
