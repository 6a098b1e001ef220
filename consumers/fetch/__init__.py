"""Fetch stage: media.requests -> media.frames.

- :mod:`~consumers.fetch.stage`: :class:`FetchStage`, the pure transform the runner calls.
- :mod:`~consumers.fetch.video_fetch`: a video segment's frames, every one in the same transaction.
- :mod:`~consumers.fetch.dedup`: the table of media already processed (skipped duplicates).

Downloads, the address guard and image and video decoding are the media layer's (:mod:`media`).
"""
