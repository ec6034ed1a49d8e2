"""PlatformIO development platform for tinyml's boards: no packages, the toolchain comes from PATH.

PlatformIO derives the class name from platform.json's name with non-alphanumerics dropped:
"tinyml-arm" -> TinymlarmPlatform.
"""

from platformio.public import PlatformBase


class TinymlarmPlatform(PlatformBase):
    def is_embedded(self):
        return True
