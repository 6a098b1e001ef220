"""The settings the stages read: every lower layer's sections plus the embed stage's."""

from __future__ import annotations

from consumers.embed.settings import EmbedSettings
from media.settings import MediaSettings
from models.settings import ModelsSettings
from stores.settings import StoresSettings


class ConsumerSettings(StoresSettings, ModelsSettings, MediaSettings):
    embed: EmbedSettings = EmbedSettings()
