"""The commands on top of the services, one module (or package) per command group.

``services.cli`` composes them into the ``fedmedclip`` command. They import the services and
the library; nothing below imports them (an import-linter contract in ``pyproject.toml``).
Heavy modules (torch, open_clip, matplotlib) are imported inside the commands, so that
``fedmedclip --help`` stays quick.
"""
