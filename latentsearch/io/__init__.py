"""Reading what users bring: image files and folders (``images``), text files, CSV and
JSONL (``texts``), and numpy arrays (``arrays``). Nothing here unpickles."""
