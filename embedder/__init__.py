"""The network and how it sees an image: decoding, preprocessing, backbones, checkpoints, embedding."""
