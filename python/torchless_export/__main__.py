"""python3 -m torchless_export {train,package,report,compress,decompress} ..."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
