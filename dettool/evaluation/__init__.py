"""COCO evaluation."""
