"""`python -m avokit ...` (also what `accelerate launch -m avokit ...` runs)."""

from avokit.cli.main import main

if __name__ == "__main__":
    main()
