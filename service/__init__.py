"""recserve's online half: the inference server over the versioned model repository."""
