"""FashionMNIST with TensorBoard, as a reproducible DVC pipeline.

The modules, in pipeline order: fetch (download and verify the data), data (read it),
visualize (the TensorBoard views before training), model (the network), training, evaluation,
with figures, tensorboard_writer, params, determinism, provenance, fileio, cli and errors beneath
them; experiments gathers the logs of DVC experiments, synthetic makes test data.
"""
