"""Reading what users bring: image sources and files (``images``, through Pillow, with colour
modes and fit in ``pixels``, and pictures out in ``png``), text files, CSV and JSONL
(``texts``), and numpy arrays (``arrays``). Nothing here unpickles."""

__all__: list[str] = []  # import the modules themselves
