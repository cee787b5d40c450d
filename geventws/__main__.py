"""``python -m geventws serve MODULE:APP``: the same as the ``geventws`` command."""

from .cli import main

if __name__ == "__main__":
    main()
