"""Object detection through the pipeline (`--dataset=coco:PATH` or `yolo:PATH`): the context
its stages share and their bodies, behind the stage table every task uses."""
