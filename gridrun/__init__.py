"""gridrun: factorial segmentation-training grids on Ray."""
