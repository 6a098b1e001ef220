"""mediavec: images and video to searchable vectors, continuously, over Apache Kafka."""

__version__ = "0.1.0"
