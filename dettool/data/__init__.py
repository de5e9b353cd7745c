"""COCO-format data: datasets, transforms, batching and the synthetic dataset generator."""
