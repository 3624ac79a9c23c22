"""The emulators' shared machinery (``base``) and the Fullwhere emulator; each platform's emulator is in its
module of :mod:`sandbox.platforms`."""
