"""``python -m sentinel`` runs the same entry point as the ``sentinel`` script."""

from sentinel.entry import main

raise SystemExit(main())
