"""A page of Debian's chromium (driven by Playwright) that records what a person would
miss: every console error and uncaught script error, and every screenshot taken, so a
test can fail on the first and copy the second where a person looks at them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


class RecordingPage:
    """The errors and screenshots of one browser page."""

    def __init__(self, page: Any, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.errors: list[str] = []
        self.shots: list[Path] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def screenshot(self, name: str) -> None:
        """A full-page screenshot named ``name``, kept for a person to look at."""
        shot = self.folder / f"{name}.png"
        self.page.screenshot(path=str(shot), full_page=True)
        self.shots.append(shot)

    def copy_screenshots(self, look: Path) -> None:
        look.mkdir(exist_ok=True)
        for shot in self.shots:
            shutil.copy(shot, look / shot.name)
