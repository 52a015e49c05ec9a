"""Where the workbook's folders are: lessons/ and benchmarks/results/ live in a checkout, beside the package.

The package can be imported from anywhere, but the lessons and the recorded figures exist only in a checkout
of the repository (`pip install -e .` from it). These helpers look in exactly one place, the folder that holds
`reference_impl/`, and say what they looked for when it is not there, instead of walking up the tree.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CHECKOUT", "NotACheckoutError", "checkout_folder"]

#: The folder that holds `reference_impl/` (and, in a checkout, `lessons/`, `benchmarks/` and
#: `pyproject.toml`).
CHECKOUT = Path(__file__).resolve().parents[2]


class NotACheckoutError(FileNotFoundError):
    """The package was imported from an installation without the workbook's lessons and records beside it."""


def checkout_folder(*parts: str, root: Path | None = None) -> Path:
    """`root / parts...`, after checking that `root` is a checkout of the workbook and the folder exists.

    Raises:
        NotACheckoutError: naming the folder looked for and where, when `root` has no `pyproject.toml` or no
            such folder (for example, the package was installed from a wheel rather than from a checkout).
    """
    # Read CHECKOUT at call time (not as a default argument), so a test can point it elsewhere.
    root = CHECKOUT if root is None else root
    folder = root.joinpath(*parts)
    if not (root / "pyproject.toml").is_file() or not folder.is_dir():
        raise NotACheckoutError(
            f"{'/'.join(parts)}/ not found: looked for {folder} beside the installed reference_impl package. "
            f"The lessons and recorded figures come with a checkout of the workbook: clone it and "
            f"`pip install -e .` from its root"
        )
    return folder
