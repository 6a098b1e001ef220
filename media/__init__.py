"""Media I/O: guarded downloads, image decoding, video containers, sampling and decoding."""
