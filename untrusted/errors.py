"""What the readers of untrusted input raise; every message is fit to show the client."""

from __future__ import annotations


class UntrustedInputError(Exception):
    """The input is refused; ``str(error)`` says why in plain language."""

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class DamagedArchiveError(UntrustedInputError):
    """Not a readable ZIP: a bad directory, a damaged entry, an unknown compression."""


class InvalidArchiveError(UntrustedInputError):
    """A readable ZIP whose layout cannot be unpacked as it is: duplicates, encrypted or nameless
    entries, names or depths no file system holds."""


class UnsafeArchiveError(UntrustedInputError):
    """An entry that would leave the archive's folder or is not a plain file (a link, a device)."""


class ArchiveTooLargeError(UntrustedInputError):
    """Too many entries, or more bytes unpacked than allowed (a zip bomb among them)."""


class XmlRefusedError(UntrustedInputError):
    """Not well-formed XML, or XML declaring a DOCTYPE (a DTD or entities) in any form."""
