"""The pose stage's pure core: subject tracking, the per-video pipeline and its validation against ground truth."""
