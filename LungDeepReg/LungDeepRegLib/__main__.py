"""``python -m LungDeepRegLib`` and ``PythonSlicer -m LungDeepRegLib``."""

from .cli import main

raise SystemExit(main())
