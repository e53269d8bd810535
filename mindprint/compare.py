"""`python -m mindprint.compare PATH [PATH ...]`: the comparison report (mindprint.analysis.compare)."""

from mindprint.analysis.compare import main

if __name__ == "__main__":
    main()
