"""Training retrievers with AGREE: data format, trainable encoders, batches, evaluation."""
