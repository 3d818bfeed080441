"""FashionMNIST with TensorBoard, as a reproducible DVC pipeline.

The modules, in pipeline order: fetch (download and verify the data), data (read it),
model (the network), training, evaluation, visualize (the pre-training TensorBoard views),
with figures, tensorboard_writer, params, determinism, fileio and errors beneath them.
"""
