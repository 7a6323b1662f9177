"""What latentsearch shows about a collection: the claim measured (``evaluate``), the
pictures of ``query --grid`` and ``evaluate --plot`` (``pictures``), and ``demo``."""

__all__: list[str] = []  # import the modules themselves
