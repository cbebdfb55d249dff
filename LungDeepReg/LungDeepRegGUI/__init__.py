"""Qt-side helpers of the LungDeepReg module widget (one panel per file).

They live in this package, not beside ``LungDeepReg.py``: Slicer loads every top-level
``.py`` of a module folder as a module of its own."""
