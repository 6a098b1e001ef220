"""One module per pipeline stage: a pure transform (no Kafka import) plus a thin runner.

``consumers.fetch`` downloads and decodes media requests into frames; later stages embed the
frames and sink the vectors. Each transform implements :class:`streams.stage.Stage`.
"""
