"""recserve's offline half: train MLP recommenders in NumPy, export to ONNX, publish versions."""
