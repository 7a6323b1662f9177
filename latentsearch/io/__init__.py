"""Reading what users bring: image sources and files (``images``, with the PNG codec and
image-file headers in ``png`` and pixel conversions in ``pixels``), text files, CSV and JSONL
(``texts``), and numpy arrays (``arrays``). Nothing here unpickles."""

__all__: list[str] = []  # import the modules themselves
