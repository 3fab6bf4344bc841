"""``python -m scaleinv_utils.models``: train the demo zoo or list the catalogue."""
from ..cli import models_main

if __name__ == "__main__":
    raise SystemExit(models_main())
