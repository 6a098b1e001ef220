"""Every setting of every mediavec service: the sections of all layers, composed.

Each section is declared beside the code it configures (``streams/settings.py``,
``media/settings.py``, ``models/settings.py``, ``stores/*/settings.py``, ``consumers/embed/settings.py``);
one environment variable per field, ``MEDIAVEC_<SECTION>__<FIELD>``.
"""

from __future__ import annotations

from functools import cache

from consumers.settings import ConsumerSettings
from mediavec.service.settings import ServeSettings


class Settings(ConsumerSettings):
    """Every setting of every mediavec service."""

    serve: ServeSettings = ServeSettings()


@cache
def load_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
